//! Kernel modules, loaded in parallel in dependency order.
//!
//! The image build lists every module as `CLASS PATH [DEPENDENCY ...]` (see vm-images/build):
//! `boot` ones (disk, ext4, vsock, overlay: what berthd needs before it starts) first, `share`
//! (9p), then `network` ones (bridges, veth, nftables: loaded while berthd already serves, which
//! sets up its networks once init reports them in), then `late` ones. One loader thread per CPU
//! takes the first listed module whose dependencies are in, so the boot set lands early and a
//! large module (ext4, nf_tables) does not hold up the rest. Under TCG this halves the time
//! spent in `finit_module` compared with one module after the other. Callers wait only for the
//! modules they need ([`Loader::wait_for`]).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

use crate::InitError;

/// When a module is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Boot,
    /// 9p: only when the host shares folders.
    Share,
    /// What berthd's networks need; berthd starts before these are in.
    Network,
    Late,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub class: Class,
    /// `ext4`, `nf_tables`: the file name without `.ko`, dashes as underscores (as the kernel
    /// and `depends=` spell it).
    pub name: String,
    pub path: String,
    pub deps: Vec<String>,
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file).replace('-', "_")
}

/// Parse the list. An old-style line (a bare path) is a `boot` module that depends on the line
/// before it, which keeps the one-after-the-other order such lists were written in.
pub fn parse(text: &str) -> Result<Vec<Module>, String> {
    let mut out: Vec<Module> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.split_whitespace();
        let first = w.next().expect("non-empty");
        let (class, path) = match first {
            "boot" | "share" | "network" | "late" => {
                let class = match first {
                    "boot" => Class::Boot,
                    "share" => Class::Share,
                    "network" => Class::Network,
                    _ => Class::Late,
                };
                (class, w.next().ok_or_else(|| format!("line {}: no module path", i + 1))?)
            }
            p if p.starts_with('/') => (Class::Boot, p),
            other => return Err(format!("line {}: unknown class {other:?}", i + 1)),
        };
        let mut deps: Vec<String> = w.map(|d| d.replace('-', "_")).collect();
        if first.starts_with('/') {
            deps.extend(out.last().map(|m| m.name.clone()));
        }
        out.push(Module { class, name: module_name(path), path: path.to_string(), deps });
    }
    Ok(out)
}

#[derive(Default)]
struct State {
    /// Modules of this class and later ones wait for [`Loader::release`] (None: none wait).
    held_from: Option<Class>,
    started: HashSet<usize>,
    loaded: HashSet<String>,
    failed: HashMap<String, String>,
}

/// The module list being loaded by background threads.
#[derive(Clone)]
pub struct Loader {
    mods: Arc<Vec<Module>>,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Loader {
    /// Read the list and start `threads` loaders (`share` modules only `with_shares`). A
    /// missing list means nothing to load.
    pub fn start(list: &str, threads: usize, with_shares: bool) -> Result<Loader, InitError> {
        let text = match std::fs::read_to_string(list) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(InitError::Io(format!("read {list}"), e)),
        };
        let mut mods = parse(&text).map_err(|e| InitError::Other(format!("{list}: {e}")))?;
        mods.retain(|m| with_shares || m.class != Class::Share);
        Ok(Self::spawn(mods, threads, Some(Class::Network), finit_module))
    }

    /// `held_from`: that class and later ones load only after [`Loader::release`], so that
    /// under emulation they do not take CPU from what comes first (the disk, berthd's start).
    fn spawn(mods: Vec<Module>, threads: usize, held_from: Option<Class>, load: fn(&str) -> Result<(), String>) -> Loader {
        let st = State { held_from, ..State::default() };
        let l = Loader { mods: Arc::new(mods), state: Arc::new((Mutex::new(st), Condvar::new())) };
        for _ in 0..threads.max(1) {
            let me = l.clone();
            std::thread::spawn(move || me.work(load));
        }
        l
    }

    /// Names that are not in the list (built into the kernel) count as loaded.
    fn listed(&self, name: &str) -> bool {
        self.mods.iter().any(|m| m.name == name)
    }

    fn work(&self, load: fn(&str) -> Result<(), String>) {
        let (lock, cv) = &*self.state;
        loop {
            let next = {
                let mut st = lock.lock().expect("modules lock");
                loop {
                    if st.started.len() == self.mods.len() {
                        return;
                    }
                    let held = st.held_from;
                    let ready = self.mods.iter().enumerate().find(|(i, m)| {
                        !st.started.contains(i)
                            && held.map_or(true, |h| m.class < h)
                            && m.deps.iter().all(|d| st.loaded.contains(d) || !self.listed(d))
                    });
                    // A module whose dependency failed fails too (and unblocks its waiters).
                    let doomed = self.mods.iter().enumerate().find(|(i, m)| {
                        !st.started.contains(i) && m.deps.iter().any(|d| st.failed.contains_key(d))
                    });
                    if let Some((i, m)) = ready {
                        st.started.insert(i);
                        break m.clone();
                    }
                    if let Some((i, m)) = doomed {
                        st.started.insert(i);
                        let dep = m.deps.iter().find(|d| st.failed.contains_key(*d)).cloned().unwrap_or_default();
                        st.failed.insert(m.name.clone(), format!("needs {dep}, which failed"));
                        cv.notify_all();
                        continue;
                    }
                    st = cv.wait(st).expect("modules lock");
                }
            };
            let r = load(&next.path);
            let mut st = lock.lock().expect("modules lock");
            match r {
                Ok(()) => {
                    st.loaded.insert(next.name.clone());
                }
                Err(e) => {
                    if next.class == Class::Late {
                        crate::console::line(&format!("module {}: {e}", next.name));
                    }
                    st.failed.insert(next.name.clone(), e);
                }
            }
            cv.notify_all();
        }
    }

    /// Let the held classes load (init calls it once berthd answers).
    pub fn release(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().expect("modules lock").held_from = None;
        cv.notify_all();
    }

    /// Block until every listed module among `names` (and its dependencies) is loaded.
    pub fn wait_for(&self, names: &[&str]) -> Result<(), InitError> {
        let wanted: Vec<&str> = names.iter().copied().filter(|n| self.listed(n)).collect();
        self.wait(|m| wanted.contains(&m.name.as_str()))
    }

    /// Block until every module of `class` or an earlier class is loaded.
    pub fn wait_class(&self, class: Class) -> Result<(), InitError> {
        self.wait(|m| m.class <= class)
    }

    fn wait(&self, pick: impl Fn(&Module) -> bool) -> Result<(), InitError> {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().expect("modules lock");
        loop {
            let mut pending = false;
            for m in self.mods.iter().filter(|m| pick(m)) {
                if let Some(e) = st.failed.get(&m.name) {
                    return Err(InitError::Other(format!("insmod {}: {e}", m.name)));
                }
                pending |= !st.loaded.contains(&m.name);
            }
            if !pending {
                return Ok(());
            }
            st = cv.wait(st).expect("modules lock");
        }
    }
}

/// Load one module file. Already loaded (or built in) is fine.
fn finit_module(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let empty = CString::new("").expect("no NUL");
    // SAFETY: finit_module with a valid fd and a NUL-terminated, empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), empty.as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIST: &str = "# comment\n\
        boot /lib/modules/k/virtio_ring.ko\n\
        boot /lib/modules/k/virtio.ko virtio_ring\n\
        boot /lib/modules/k/ext4.ko jbd2 mbcache\n\
        boot /lib/modules/k/jbd2.ko\n\
        boot /lib/modules/k/mbcache.ko\n\
        network /lib/modules/k/nf_tables.ko nfnetlink libcrc32c\n\
        network /lib/modules/k/nfnetlink.ko\n\
        late /lib/modules/k/xt_MASQUERADE.ko nf_tables\n";

    #[test]
    fn parses_classes_and_dependencies() {
        let m = parse(LIST).unwrap();
        assert_eq!(m.len(), 8);
        assert_eq!(m[2], Module { class: Class::Boot, name: "ext4".into(), path: "/lib/modules/k/ext4.ko".into(), deps: vec!["jbd2".into(), "mbcache".into()] });
        assert_eq!(m[7].class, Class::Late);
        assert!(parse("sometimes /x.ko").is_err());
        assert!(parse("boot").is_err());
        let old = parse("/a/x-y.ko\n/a/z.ko\n").unwrap();
        assert_eq!(old[0].name, "x_y");
        assert_eq!(old[1].deps, vec!["x_y".to_string()], "a bare-path list keeps its order");
    }

    static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn record(path: &str) -> Result<(), String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let name = module_name(path);
        ORDER.lock().unwrap().push(name.clone());
        if name == "nfnetlink" {
            return Err("Exec format error".into());
        }
        Ok(())
    }

    #[test]
    fn loads_dependencies_first_and_reports_failures() {
        let l = Loader::spawn(parse(LIST).unwrap(), 2, Some(Class::Network), record);
        l.wait_class(Class::Boot).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(CALLS.load(Ordering::SeqCst), 5, "held classes wait for release()");
        l.release();
        {
            let order = ORDER.lock().unwrap();
            let pos = |n: &str| order.iter().position(|o| o == n);
            assert!(pos("jbd2").unwrap() < pos("ext4").unwrap());
            assert!(pos("mbcache").unwrap() < pos("ext4").unwrap());
            assert!(pos("virtio_ring").unwrap() < pos("virtio").unwrap());
        }
        // nfnetlink fails: nf_tables (libcrc32c is not listed, so built in) and then
        // xt_MASQUERADE fail with it instead of hanging their waiters.
        let e = l.wait_class(Class::Network).unwrap_err().to_string();
        assert!(e.contains("nf_tables") || e.contains("nfnetlink"), "{e}");
        let e = l.wait_for(&["xt_MASQUERADE"]).unwrap_err().to_string();
        assert!(e.contains("xt_MASQUERADE"), "{e}");
        l.wait_for(&["ext4", "not_listed"]).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 6, "nf_tables and xt_MASQUERADE were never tried");
    }
}
