use std::path::PathBuf;

/// `./berth up`'s socket: on Linux berthd runs natively, no VM.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/berth/docker.sock")
}
