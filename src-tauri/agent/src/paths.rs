//! Where the agent keeps its files: `~/.berth` (or `$BERTH_HOME`).
//!
//! ```text
//! ~/.berth/settings.json
//! ~/.berth/run/            0700: agent.sock, docker.sock (0600), agent.pid, engine.json
//! ~/.berth/vm/             disk.qcow2, console.log, qemu.log, qmp.sock, vsock sockets,
//!                          qemu.pid, vhost-vsock.pid
//! ~/.berth/native/         berthd's data and exec roots when it runs natively
//! ~/.berth/logs/agent.log
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$BERTH_HOME`, else `$HOME/.berth`.
    pub fn from_env() -> Home {
        if let Some(h) = std::env::var_os("BERTH_HOME") {
            return Home::new(PathBuf::from(h));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        Home::new(home.join(".berth"))
    }

    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }
    pub fn docker_socket(&self) -> PathBuf {
        self.run_dir().join("docker.sock")
    }
    pub fn agent_pidfile(&self) -> PathBuf {
        self.run_dir().join("agent.pid")
    }
    /// The running engine's boot record (stages, accelerator, pid), for the next agent.
    pub fn engine_record(&self) -> PathBuf {
        self.run_dir().join("engine.json")
    }
    pub fn vm_dir(&self) -> PathBuf {
        self.root.join("vm")
    }
    pub fn native_dir(&self) -> PathBuf {
        self.root.join("native")
    }
    pub fn settings_file(&self) -> PathBuf {
        self.root.join("settings.json")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.root.join("logs").join("agent.log")
    }

    /// Create the directories; `run/` is private (0700): the docker socket in it is
    /// root-equivalent inside the VM.
    pub fn ensure(&self) -> std::io::Result<()> {
        for d in [self.root.clone(), self.run_dir(), self.vm_dir(), self.root.join("logs")] {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(self.run_dir(), std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_is_private() {
        let t = tempfile::tempdir().unwrap();
        let h = Home::new(t.path().join("b"));
        h.ensure().unwrap();
        let mode = std::fs::metadata(h.run_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(h.docker_socket().starts_with(h.run_dir()));
    }
}
