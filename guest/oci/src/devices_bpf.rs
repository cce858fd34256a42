//! The cgroup v2 device controller: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to
//! the container's cgroup, generated from the OCI device rules. v2 has no devices.allow file;
//! without this program a container with CAP_MKNOD could create and open any host device.
//!
//! Hand-assembled (a dozen instruction kinds) rather than through an eBPF toolchain crate: the
//! program is a straight list of compare-and-return blocks. Rules are emitted last first, so
//! the last matching rule decides, which is the OCI meaning of an ordered rule list; nothing
//! matching means deny.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// bpf_cgroup_dev_ctx: access_type (access << 16 | type), major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn access_bits(a: &str) -> i32 {
    a.chars().map(|c| match c {
        'm' => 1,
        'r' => 2,
        'w' => 4,
        _ => 0,
    }).sum()
}

/// The program for `rules`.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        ins(LDX_MEM_W, 2, 1, 0, 0),   // r2 = access_type
        ins(ALU64_AND_K, 2, 0, 0, 0xffff), // r2 = type
        ins(LDX_MEM_W, 3, 1, 0, 0),   // r3 = access_type
        ins(ALU64_RSH_K, 3, 0, 0, 16), // r3 = access
        ins(LDX_MEM_W, 4, 1, 4, 0),   // r4 = major
        ins(LDX_MEM_W, 5, 1, 8, 0),   // r5 = minor
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Jumps to "next rule" get their offsets once the block length is known (marked -1).
        let ty = match r.typ() {
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            _ => None,
        };
        if let Some(t) = ty {
            block.push(ins(JMP_JNE_K, 2, 0, -1, t));
        }
        let acc = access_bits(r.access().as_deref().unwrap_or("rwm"));
        if acc != 7 {
            block.push(ins(ALU64_MOV_X, 1, 3, 0, 0));
            block.push(ins(ALU64_AND_K, 1, 0, 0, !acc));
            block.push(ins(JMP_JNE_K, 1, 0, -1, 0));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            block.push(ins(JMP_JNE_K, 4, 0, -1, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            block.push(ins(JMP_JNE_K, 5, 0, -1, m as i32));
        }
        block.push(ins(ALU64_MOV_K, 0, 0, 0, r.allow() as i32));
        block.push(ins(EXIT, 0, 0, 0, 0));
        let n = block.len();
        let conditional = block.iter().any(|b| b.off == -1);
        for (i, b) in block.iter_mut().enumerate() {
            if b.off == -1 {
                b.off = (n - i - 1) as i16;
            }
        }
        p.extend(block);
        if !conditional {
            // Matches everything: earlier rules can never decide (the verifier refuses
            // unreachable code, so nothing follows).
            return p;
        }
    }
    p.push(ins(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(ins(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u32; 11],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads the program for `rules` and attaches it to the cgroup directory `dir`.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> io::Result<()> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..9].copy_from_slice(b"berth_dev");
    // SAFETY: attr and everything it points to outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &mut attr as *mut ProgLoad, std::mem::size_of::<ProgLoad>()) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let msg = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).trim().to_string();
        return Err(io::Error::new(e.kind(), format!("loading the device filter: {e} {msg}")));
    }
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = crate::sys::open_path(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut at = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &mut at as *mut ProgAttach, std::mem::size_of::<ProgAttach>()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("attaching the device filter to {}: {e}", dir.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"}
        ]))
        .unwrap()
    }

    /// A tiny interpreter for the instructions we emit, to check verdicts without the kernel.
    fn run(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (d, s) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[d] = ctx[i.off as usize / 4] as u64,
                ALU64_AND_K => r[d] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[d] >>= i.imm,
                ALU64_MOV_X => r[d] = r[s],
                ALU64_MOV_K => r[d] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn last_matching_rule_decides() {
        let p = program(&rules());
        assert_eq!(run(&p, 2, 2 | 4, 1, 3), 1, "rw on /dev/null");
        assert_eq!(run(&p, 2, 2, 1, 5), 0, "read of /dev/zero");
        assert_eq!(run(&p, 2, 1, 8, 0), 1, "mknod of any char device");
        assert_eq!(run(&p, 1, 1, 8, 0), 0, "mknod of a block device");
        assert_eq!(run(&p, 1, 2, 8, 0), 0);
        let all: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([{"allow": true, "access": "rwm"}])).unwrap();
        assert_eq!(run(&program(&all), 1, 7, 8, 0), 1, "privileged: everything");
    }

    /// The real kernel: this host's hybrid layout has a cgroup2 mount, where device programs
    /// attach. A child moved into the cgroup may open /dev/null but not /dev/zero.
    #[test]
    fn kernel_enforces_the_program() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { Path::new("/sys/fs/cgroup") } else { unified };
        if unsafe { libc::geteuid() } != 0 || !root.join("cgroup.procs").exists() {
            eprintln!("skipping: needs root and a cgroup2 mount");
            return;
        }
        let dir = root.join(format!("berth-oci-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}
        ]))
        .unwrap();
        let applied = apply(&dir, &rules);
        let (r, w) = {
            let mut fds = [0; 2];
            unsafe { libc::pipe(fds.as_mut_ptr()) };
            (fds[0], fds[1])
        };
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let f = libc::open(procs.as_ptr(), libc::O_WRONLY);
                libc::write(f, b"0".as_ptr().cast(), 1);
                libc::close(f);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY);
                let out = [(null >= 0) as u8, (zero >= 0) as u8];
                libc::write(w, out.as_ptr().cast(), 2);
                libc::_exit(0);
            }
        }
        unsafe { libc::close(w) };
        let mut out = [9u8; 2];
        unsafe {
            libc::read(r, out.as_mut_ptr().cast(), 2);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir(&dir);
        applied.unwrap();
        assert_eq!(out, [1, 0], "null must open, zero must be refused");
    }
}
