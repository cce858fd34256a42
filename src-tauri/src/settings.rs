//! Where the engine socket comes from, and the app's small settings file.
//!
//! Order: `DOCKER_HOST` (what the docker CLI uses), then the setting saved from the Engine
//! screen, then the host agent's socket (when the agent lands), then the platform default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// `unix:///path/to/docker.sock`; empty means "not set".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0:?} is not a unix socket address: Berth's app speaks to unix:///path/to/docker.sock")]
    NotUnix(String),
    #[error("cannot write settings to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Settings {
    /// Read the settings file; a missing or unreadable file gives the defaults.
    pub fn load(path: &Path) -> Settings {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Write atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let err = |source| SettingsError::Write { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializes")).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// `unix:///x` or a bare absolute path -> the socket path.
pub fn parse_host(host: &str) -> Result<PathBuf, SettingsError> {
    let h = host.trim();
    if let Some(p) = h.strip_prefix("unix://") {
        if p.starts_with('/') {
            return Ok(PathBuf::from(p));
        }
    } else if h.starts_with('/') {
        return Ok(PathBuf::from(h));
    }
    Err(SettingsError::NotUnix(h.to_string()))
}

/// The socket to use and a word for where it came from (shown on the Engine screen).
pub fn resolve(docker_host_env: Option<&str>, settings: &Settings, agent_socket: Option<PathBuf>) -> (PathBuf, &'static str, Option<String>) {
    if let Some(h) = docker_host_env.filter(|h| !h.trim().is_empty()) {
        match parse_host(h) {
            Ok(p) => return (p, "DOCKER_HOST", None),
            Err(e) => {
                // Fall through to the next source, and say why.
                let (p, src, _) = resolve(None, settings, agent_socket);
                return (p, src, Some(format!("DOCKER_HOST ignored: {e}")));
            }
        }
    }
    if let Some(h) = settings.docker_host.as_deref().filter(|h| !h.trim().is_empty()) {
        if let Ok(p) = parse_host(h) {
            return (p, "settings", None);
        }
    }
    if let Some(p) = agent_socket {
        return (p, "host agent", None);
    }
    (crate::platform::default_socket(), "default", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_parsing() {
        let s = Settings { docker_host: Some("unix:///tmp/set.sock".into()) };
        assert_eq!(resolve(Some("unix:///tmp/env.sock"), &s, None).0, PathBuf::from("/tmp/env.sock"));
        assert_eq!(resolve(None, &s, None), (PathBuf::from("/tmp/set.sock"), "settings", None));
        let (p, src, warn) = resolve(Some("tcp://1.2.3.4:2375"), &s, None);
        assert_eq!((p, src), (PathBuf::from("/tmp/set.sock"), "settings"));
        assert!(warn.unwrap().contains("not a unix socket"));
        let none = Settings::default();
        assert_eq!(resolve(None, &none, Some("/a/agent.sock".into())).1, "host agent");
        assert_eq!(resolve(None, &none, None).1, "default");
        assert!(parse_host("unix://relative").is_err());
        assert_eq!(parse_host("/x.sock").unwrap(), PathBuf::from("/x.sock"));
    }

    #[test]
    fn settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/settings.json");
        assert_eq!(Settings::load(&p), Settings::default());
        let s = Settings { docker_host: Some("unix:///x.sock".into()) };
        s.save(&p).unwrap();
        assert_eq!(Settings::load(&p), s);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(Settings::load(&p), Settings::default());
    }
}
