//! Control-socket protocol: one JSON request line, one JSON response line;
//! after a successful `attach` the connection carries raw stream data.

use serde::{Deserialize, Serialize};

use crate::state::ExitStatus;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Stream output (framed with [`frame`] unless TTY) and, with `stdin`,
    /// forward the client's bytes to the container; client EOF closes the
    /// container's stdin (non-TTY). With `logs`, what the container printed so far comes
    /// first, taken atomically with the subscription (no output lost or repeated between them).
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        #[serde(default)]
        logs: bool,
    },
    Resize { h: u16, w: u16 },
    /// Reply when the container has exited.
    Wait,
    Kill { signal: i32 },
    State,
    /// Run an extra process in the container (`docker exec`) from an OCI
    /// process document; after the ok reply the connection streams like
    /// `Attach` and closes once the process has exited.
    Exec { exec_id: String, process: serde_json::Value, tty: bool, stdin: bool },
    /// Reply with the exit of an exec once it has exited.
    ExecWait { exec_id: String },
    ExecResize { exec_id: String, h: u16, w: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimStatus {
    pub id: String,
    pub shim_pid: i32,
    pub init_pid: i32,
    pub tty: bool,
    pub running: bool,
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ShimStatus>,
    /// Host pid of a started exec process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl Response {
    pub fn ok() -> Self {
        Response { ok: true, ..Default::default() }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response { ok: false, error: Some(msg.into()), ..Default::default() }
    }
}

/// Docker's multiplexed stream framing for non-TTY attach/logs: a header of
/// stream type (0 stdin, 1 stdout, 2 stderr), three zero bytes and the
/// payload length as u32 big-endian, followed by the payload.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header() {
        let f = frame(STDERR, b"hello");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"hello");
        let big = frame(STDOUT, &vec![b'x'; 0x01_02_03]);
        assert_eq!(&big[..8], &[1, 0, 0, 0, 0, 1, 2, 3]);
    }

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(r#"{"op":"resize","h":24,"w":80}"#).unwrap();
        assert_eq!(r, Request::Resize { h: 24, w: 80 });
        assert_eq!(serde_json::to_string(&Request::Kill { signal: 9 }).unwrap(), r#"{"op":"kill","signal":9}"#);
    }
}
