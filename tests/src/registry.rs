//! Debian's real `docker-registry` (distribution 2.8) as a test server inside a namespace.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::{http, Error, IoContext, Result};

static PORT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Basic-auth credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The value of an `Authorization` header for these credentials.
    pub fn basic_header(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A running registry. Drop kills the process and removes its storage.
#[derive(Debug)]
pub struct Registry {
    addr: String,
    netns_path: PathBuf,
    ns_name: String,
    auth: Option<Credentials>,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start an open registry (no auth, deletes enabled) on 127.0.0.1:<free port> in `ns`.
    pub fn start(ns: &NetNs) -> Result<Registry> {
        Self::start_with(ns, None)
    }

    /// Start a registry that requires htpasswd basic auth with `creds`.
    pub fn start_with_auth(ns: &NetNs, creds: Credentials) -> Result<Registry> {
        Self::start_with(ns, Some(creds))
    }

    fn start_with(ns: &NetNs, auth: Option<Credentials>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .ctx(|| "tempdir".into())?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).ctx(|| "mkdir storage".into())?;
        let mut auth_yaml = String::new();
        if let Some(c) = &auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", &c.user, &c.password])
                .output()
                .ctx(|| "spawn htpasswd".into())?;
            if !out.status.success() {
                return Err(Error::Command {
                    command: "htpasswd -Bbn".into(),
                    detail: String::from_utf8_lossy(&out.stderr).into(),
                });
            }
            std::fs::write(&htpasswd, &out.stdout).ctx(|| "write htpasswd".into())?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        // Held until the registry listens, so two registries starting at once in one namespace
        // cannot be handed the same released port.
        let _port_guard = PORT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let port = ns.free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n{auth_yaml}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).ctx(|| "write registry config".into())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).ctx(|| "create log".into())?;
        let child = ns
            .command("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().ctx(|| "dup log".into())?)
            .stderr(log)
            .spawn()
            .ctx(|| "spawn docker-registry".into())?;
        let mut reg = Registry {
            addr,
            netns_path: ns.path(),
            ns_name: ns.name().to_string(),
            auth,
            child,
            dir,
        };
        reg.wait_ready(ns)?;
        Ok(reg)
    }

    fn wait_ready(&mut self, ns: &NetNs) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = http::request(ns, "GET", &self.addr, "/v2/", &[], b"") {
                // 401 means up but protected: fine for the auth registry.
                if r.status == 200 || (r.status == 401 && self.auth.is_some()) {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Command {
                    command: "docker-registry serve".into(),
                    detail: format!("exited {status}: {}", self.log()),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "registry on {}: {}",
                    self.addr,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Credentials when this registry requires auth.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    /// The registry's storage root (blobs live under docker/registry/v2/blobs).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Name of the namespace the registry runs in.
    pub fn netns_name(&self) -> &str {
        &self.ns_name
    }

    /// Path of the namespace file the registry runs in.
    pub fn netns_path(&self) -> &std::path::Path {
        &self.netns_path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_auth_registries_answer() {
        crate::require_root!();
        let ns = NetNs::new().unwrap();
        let plain = Registry::start(&ns).unwrap();
        let r = http::request(&ns, "GET", plain.addr(), "/v2/", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        let creds = Credentials::new("berth", "s3cret");
        let auth = Registry::start_with_auth(&ns, creds.clone()).unwrap();
        assert_ne!(plain.addr(), auth.addr());
        let r = http::request(&ns, "GET", auth.addr(), "/v2/", &[], b"").unwrap();
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap_or("").contains("Basic"));
        let h = creds.basic_header();
        let r = http::request(
            &ns,
            "GET",
            auth.addr(),
            "/v2/",
            &[("Authorization", &h)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let bad = Credentials::new("berth", "wrong").basic_header();
        let r = http::request(
            &ns,
            "GET",
            auth.addr(),
            "/v2/",
            &[("Authorization", &bad)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 401);
    }
}
