//! The default seccomp profile, matching Docker's behaviour: everything not
//! listed fails with EPERM; ordinary syscalls are allowed; syscalls whose only
//! use is something a capability already guards are allowed only when the
//! container has that capability (otherwise they would be a pure kernel attack
//! surface with no legitimate use).
//!
//! Written as our own tables from the documented behaviour (syscall names are
//! facts of the Linux ABI). runc resolves names through libseccomp and skips
//! names the running kernel/library does not know, so listing newer syscalls
//! is harmless on older hosts.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: the clone flags
/// that create namespaces, which need CAP_SYS_ADMIN to be safe. (CLONE_NEWTIME
/// shares its bit with clone's exit-signal byte, so clone cannot pass it.)
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;

/// Allowed for every container. Nothing in here can escalate past what the
/// kernel's own permission checks (uid, capabilities) already guard.
pub const BASE_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // io_uring is allowed by Docker's default profile up to v24 and removed
    // later; we follow the newer, stricter choice and leave it out.
];

/// Extra syscalls per architecture: their ABI-specific helpers.
const X86_SYSCALLS: &[&str] = &["arch_prctl", "modify_ldt"];
const ARM_SYSCALLS: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// A group of syscalls allowed only when the container holds any of `caps`.
pub struct Gated {
    pub caps: &'static [&'static str],
    pub names: &'static [&'static str],
    /// Why the group is gated; kept next to the data on purpose.
    pub why: &'static str,
}

pub const GATED: &[Gated] = &[
    Gated {
        caps: &["CAP_SYS_ADMIN"],
        names: &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "umount",
            "umount2",
            "unshare",
            "clone",
            "clone3",
        ],
        why: "mounts and namespaces reconfigure the container's view of the system; \
              without CAP_SYS_ADMIN they would only expose the kernel's namespace code",
    },
    Gated {
        caps: &["CAP_SYS_BOOT"],
        names: &["reboot"],
        why: "reboot in a pid namespace only signals init, but is useless without the cap",
    },
    Gated {
        caps: &["CAP_SYS_CHROOT"],
        names: &["chroot"],
        why: "chroot is the capability's whole purpose (CAP_SYS_CHROOT is a default cap)",
    },
    Gated {
        caps: &["CAP_SYS_MODULE"],
        names: &["delete_module", "init_module", "finit_module"],
        why: "loading kernel modules is host-wide; only for explicitly trusted containers",
    },
    Gated {
        caps: &["CAP_SYS_PACCT"],
        names: &["acct"],
        why: "process accounting writes host-wide records",
    },
    Gated {
        caps: &["CAP_SYS_PTRACE"],
        names: &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        why:
            "cross-process memory access; historically a source of seccomp bypasses on old kernels",
    },
    Gated {
        caps: &["CAP_SYS_RAWIO"],
        names: &["iopl", "ioperm"],
        why: "raw port I/O reaches hardware directly",
    },
    Gated {
        caps: &["CAP_SYS_TIME"],
        names: &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        why: "the clock is not namespaced: setting it changes the host's time",
    },
    Gated {
        caps: &["CAP_SYS_TTY_CONFIG"],
        names: &["vhangup"],
        why: "hangs up the controlling terminal",
    },
    Gated {
        caps: &["CAP_SYS_NICE"],
        names: &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        why: "NUMA placement affects other tenants' memory locality",
    },
    Gated {
        caps: &["CAP_SYSLOG", "CAP_SYS_ADMIN"],
        names: &["syslog"],
        why: "the kernel log is host-wide and may leak addresses",
    },
    Gated {
        caps: &["CAP_BPF", "CAP_SYS_ADMIN"],
        names: &["bpf"],
        why: "eBPF loading is a large kernel attack surface",
    },
    Gated {
        caps: &["CAP_PERFMON", "CAP_SYS_ADMIN"],
        names: &["perf_event_open"],
        why: "perf events can observe other processes and the kernel",
    },
    Gated {
        caps: &["CAP_DAC_READ_SEARCH"],
        names: &["open_by_handle_at"],
        why: "file handles bypass path lookup and once allowed escaping to the host filesystem",
    },
];

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v2) = value_two {
        b = b.value_two(v2);
    }
    b.build().expect("all fields have defaults")
}

fn has_any(caps: &[String], wanted: &[&str]) -> bool {
    wanted.iter().any(|w| caps.iter().any(|c| c == w))
}

/// The profile for a container holding `caps` (canonical `CAP_*` names).
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    let mut rules = vec![allow(BASE_SYSCALLS)];

    // personality: only the harmless personas Docker allows (Linux, 32-bit
    // Linux, UNAME26) and the query value; others change how the kernel
    // interprets the process (e.g. READ_IMPLIES_EXEC).
    for persona in [0x0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        let mut r = allow(&["personality"]);
        r.set_args(Some(vec![arg(
            0,
            persona,
            None,
            LinuxSeccompOperator::ScmpCmpEq,
        )]));
        rules.push(r);
    }

    // socket: every family but AF_VSOCK, which would reach the VM host.
    let mut sock = allow(&["socket"]);
    sock.set_args(Some(vec![arg(
        0,
        AF_VSOCK,
        None,
        LinuxSeccompOperator::ScmpCmpNe,
    )]));
    rules.push(sock);

    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        rules.push(allow(X86_SYSCALLS));
    }
    if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        rules.push(allow(ARM_SYSCALLS));
    }

    for g in GATED {
        if has_any(caps, g.caps) {
            rules.push(allow(g.names));
        }
    }

    if !has_any(caps, &["CAP_SYS_ADMIN"]) {
        // clone without namespace flags (threads, fork) stays allowed.
        let mut clone = allow(&["clone"]);
        // SCMP_CMP_MASKED_EQ: `value` is the mask, `valueTwo` the datum (as in Docker's
        // profile): (flags & NAMESPACE_FLAGS) == 0.
        clone.set_args(Some(vec![arg(
            0,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )]));
        rules.push(clone);
        // clone3 passes flags in memory, where seccomp cannot look: answer
        // ENOSYS so libcs fall back to clone, which the filter above checks.
        let mut clone3 = LinuxSyscall::default();
        clone3.set_names(vec!["clone3".into()]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(Some(architectures()));
    profile.set_syscalls(Some(rules));
    profile
}

/// Native arch plus the compat ABIs the same kernel also accepts, so a 32-bit
/// binary cannot dodge the filter by using the other syscall table.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "aarch64") || cfg!(target_arch = "arm") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{effective_caps, DEFAULT_CAPS};

    /// Names allowed without any argument filter.
    fn unconditional(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn defaults() -> Vec<String> {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn default_action_is_eperm() {
        let p = default_profile(&defaults());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert!(p.architectures().as_ref().unwrap().len() >= 2);
    }

    #[test]
    fn gated_groups_appear_only_with_their_cap() {
        let base = unconditional(&default_profile(&defaults()));
        for g in GATED {
            let with = effective_caps(&[g.caps[0].to_string()], &[], false).unwrap();
            let allowed = unconditional(&default_profile(&with));
            for name in g.names {
                assert!(
                    allowed.iter().any(|n| n == name),
                    "{name} missing with {:?}",
                    g.caps
                );
                // chroot is gated on a cap Docker grants by default.
                if !has_any(&defaults(), g.caps) {
                    assert!(
                        !base.iter().any(|n| n == name),
                        "{name} allowed without {:?}",
                        g.caps
                    );
                }
            }
        }
        assert!(base.iter().any(|n| n == "chroot"));
        assert!(!base
            .iter()
            .any(|n| n == "mount" || n == "ptrace" || n == "init_module"));
    }

    #[test]
    fn clone_is_filtered_without_sys_admin() {
        let p = default_profile(&defaults());
        let rules = p.syscalls().as_ref().unwrap();
        let clone = rules
            .iter()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let a = clone.args().as_ref().unwrap()[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.value(), CLONE_NAMESPACE_FLAGS, "the mask");
        assert_eq!(a.value_two(), Some(0), "the datum");
        let clone3 = rules
            .iter()
            .find(|s| s.names() == &vec!["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));

        let admin = effective_caps(&["SYS_ADMIN".into()], &[], false).unwrap();
        let p = default_profile(&admin);
        let rules = p.syscalls().as_ref().unwrap();
        assert!(rules
            .iter()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));
        assert!(unconditional(&p).iter().any(|n| n == "clone3"));
    }

    #[test]
    fn no_name_is_both_base_and_gated() {
        for g in GATED {
            for n in g.names {
                assert!(!BASE_SYSCALLS.contains(n), "{n} is in both lists");
            }
        }
    }
}
