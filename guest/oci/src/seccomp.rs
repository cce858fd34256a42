//! The OCI seccomp profile compiled to classic BPF with `seccompiler` (rust-vmm, pure Rust).
//!
//! seccompiler gives one filter one match action. OCI profiles mix actions (Docker's denies
//! `clone3` with ENOSYS, so libcs fall back to `clone`, whose flags the filter can check), so
//! the profile becomes one filter per action: one per non-default action, each matching only its
//! own syscalls and allowing everything else, then the filter with the default action, which
//! allows every allowed syscall and also those the other filters decide. The kernel runs every
//! filter and takes the most restrictive verdict, and ALLOW is the weakest, so each syscall gets
//! exactly its rule's action. (A conditional rule with a non-default action is the one case
//! this does not model exactly: its non-matching calls fall to the default action.)
//!
//! Names are resolved for the native architecture with the `syscalls` crate; names this
//! architecture lacks (`chown32`, `_llseek`...) are skipped, as libseccomp skips them for
//! runc. Differences from libseccomp: a syscall from another ABI (32-bit `int 0x80` on
//! x86_64) kills the process instead of being checked against a compat table.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use crate::OciError;

fn arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> Result<SeccompAction, OciError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(default_errno)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => SeccompAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        other => return Err(OciError::Seccomp(format!("unsupported seccomp action {other:?}"))),
    })
}

/// Syscall number for `name` on this architecture, None if it has no such syscall.
pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::Sysno::from_str(name).ok().map(|s| s.id() as i64)
}

/// A hashable key for an action (SeccompAction is not Ord).
fn key(a: &SeccompAction) -> String {
    format!("{a:?}")
}

/// Compiles `profile` into the programs to install, in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, OciError> {
    let default_errno = profile.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(profile.default_action(), profile.default_errno_ret(), default_errno)?;
    // action key -> (action, syscall -> rules); None = unconditional.
    type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;
    let mut groups: BTreeMap<String, (SeccompAction, Rules)> = BTreeMap::new();
    for sc in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(sc.action(), sc.errno_ret(), libc::EPERM as u32)?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for a in sc.args().as_deref().unwrap_or_default() {
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
                // libseccomp's SCMP_CMP_MASKED_EQ(mask, datum): OCI `value` is the mask,
                // `valueTwo` the datum.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(a.value()), a.value_two().unwrap_or(0)),
            };
            conds.push(SeccompCondition::new(a.index() as u8, SeccompCmpArgLen::Qword, op, value).map_err(|e| OciError::Seccomp(e.to_string()))?);
        }
        let entry = groups.entry(key(&act)).or_insert_with(|| (act.clone(), BTreeMap::new()));
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else { continue };
            let slot = entry.1.entry(nr).or_insert_with(|| Some(Vec::new()));
            match (slot.as_mut(), conds.is_empty()) {
                (_, true) => *slot = None,
                // Several rules for one syscall are ORed by seccompiler; conditions in one rule ANDed.
                (Some(rules), false) => rules.push(SeccompRule::new(conds.clone()).map_err(|e| OciError::Seccomp(e.to_string()))?),
                (None, false) => {}
            }
        }
    }
    let mut out = Vec::new();
    let mut allow = groups.remove(&key(&SeccompAction::Allow)).map(|g| g.1).unwrap_or_default();
    for (_, (act, rules)) in groups {
        // The main filter allows what another filter decides unconditionally: ALLOW is the
        // weakest verdict, so that filter's ERRNO/KILL wins whatever the install order.
        for (nr, r) in &rules {
            if r.is_none() {
                allow.insert(*nr, None);
            }
        }
        out.push(build(rules, SeccompAction::Allow, act)?);
    }
    // Last: the filter with the default action. Installed first it would have to allow
    // seccomp(2) itself for the others to load.
    out.push(build(allow, default.clone(), SeccompAction::Allow)?);
    Ok(out)
}

fn build(rules: BTreeMap<i64, Option<Vec<SeccompRule>>>, mismatch: SeccompAction, matched: SeccompAction) -> Result<BpfProgram, OciError> {
    // seccompiler wants an empty rule list for "match unconditionally".
    let rules = rules.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    let f = SeccompFilter::new(rules, mismatch, matched, arch()).map_err(|e| OciError::Seccomp(e.to_string()))?;
    f.try_into().map_err(|e: seccompiler::BackendError| OciError::Seccomp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> LinuxSeccomp {
        serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "chown32", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn names_resolve_for_this_arch() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read));
        assert_eq!(syscall_number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn one_filter_per_action_in_install_order() {
        let progs = compile(&profile()).unwrap();
        assert_eq!(progs.len(), 2, "the ENOSYS filter, then the one with the default action");
        assert!(progs.iter().all(|p| !p.is_empty()));
        let ret_errno = |p: &BpfProgram, e: u32| p.iter().any(|i| i.code == 0x06 && i.k == (libc::SECCOMP_RET_ERRNO | e));
        assert!(ret_errno(&progs[1], 1));
        assert!(ret_errno(&progs[0], 38));
        assert!(!ret_errno(&progs[1], 38));
    }

    /// Load the compiled filter in a forked child and check real verdicts: allowed syscalls
    /// work, an unlisted one gets EPERM, clone3 gets ENOSYS, and clone with namespace flags is
    /// refused while a plain fork-style clone is not.
    #[test]
    fn filters_behave_in_a_child() {
        let mut p = profile();
        let mut calls = p.syscalls().clone().unwrap();
        calls[0].set_names(vec!["read".into(), "write".into(), "exit_group".into(), "exit".into(), "getppid".into(), "wait4".into(), "rt_sigreturn".into(), "brk".into(), "mmap".into(), "munmap".into(), "rt_sigprocmask".into(), "futex".into()]);
        p.set_syscalls(Some(calls));
        let progs = compile(&p).unwrap();
        let (r, w) = {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let pid = unsafe { libc::fork() };
        if pid == 0 {
          unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            for prog in &progs {
                if let Err(e) = crate::sys::Syscall::seccomp(&crate::sys::Linux, prog) {
                    let b = [250u8, e.raw_os_error().unwrap_or(0) as u8, 0, 0];
                    libc::write(w, b.as_ptr().cast(), 4);
                    libc::_exit(3);
                }
            }
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u8;
            let mut out = [0u8; 4];
            // getpid is not listed: EPERM.
            out[0] = if libc::syscall(libc::SYS_getpid) < 0 { errno() } else { 0 };
            out[1] = if libc::syscall(libc::SYS_clone3, 0, 0) < 0 { errno() } else { 0 };
            out[2] = if libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0) < 0 { errno() } else { 0 };
            out[3] = if libc::syscall(libc::SYS_getppid) < 0 { errno() } else { 200 };
            libc::write(w, out.as_ptr().cast(), 4);
            libc::_exit(0);
          }
        }
        unsafe { libc::close(w) };
        let mut out = [0u8; 4];
        let n = unsafe { libc::read(r, out.as_mut_ptr().cast(), 4) };
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert_eq!(n, 4, "child died: status {st}");
        assert_eq!(out, [libc::EPERM as u8, libc::ENOSYS as u8, libc::EPERM as u8, 200]);
    }
}
