//! Timed commands.
//!
//! The clock wraps exactly spawn .. exit of the measured process (the docker CLI, a runtime),
//! the same way for every subject: the harness blocks in wait(2) rather than polling, so no
//! poll interval is added to the sample, and output is drained by threads started before the
//! clock so a full pipe never stalls the child.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// Where the child's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Into memory (returned in [`Timed::stdout`]).
    Capture,
    /// To /dev/null: for large outputs (e.g. `docker logs` of 100k lines) whose size would
    /// otherwise bill the harness's reading to the sample.
    Null,
}

#[derive(Debug)]
pub struct Timed {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Timed {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Short printable form of a command for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run `cmd` (stdin /dev/null, stderr captured) and time it from spawn to exit. A child still
/// running after `timeout` is killed and reported as [`Error::Timeout`]. A non-zero exit is
/// not an error here: see [`checked`].
pub fn run_timed(mut cmd: Command, out: Out, timeout: Duration) -> Result<Timed> {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    cmd.stdout(match out {
        Out::Capture => Stdio::piped(),
        Out::Null => Stdio::null(),
    });
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let fired = Arc::new(AtomicBool::new(false));
    let (pid_tx, pid_rx) = mpsc::channel::<i32>();
    let watchdog = {
        let fired = fired.clone();
        std::thread::spawn(move || {
            let Ok(pid) = pid_rx.recv() else { return };
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                fired.store(true, Ordering::SeqCst);
                // The child is not reaped until the main thread's wait() returns, so the pid
                // still names it here.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        })
    };
    let start = Instant::now();
    let mut child: Child = cmd.spawn().ctx(|| format!("spawn {what}"))?;
    let _ = pid_tx.send(child.id() as i32);
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = child.wait().ctx(|| format!("wait {what}"));
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let status = status?;
    let stdout = stdout
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    if fired.load(Ordering::SeqCst) {
        return Err(Error::Timeout {
            command: what,
            secs: timeout.as_secs(),
        });
    }
    Ok(Timed {
        elapsed,
        status,
        stdout,
        stderr,
    })
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// [`run_timed`], and a non-zero exit becomes [`Error::Command`] with stderr.
pub fn checked(cmd: Command, out: Out, timeout: Duration) -> Result<Timed> {
    let what = describe(&cmd);
    let t = run_timed(cmd, out, timeout)?;
    if !t.status.success() {
        return Err(Error::Command {
            command: what,
            status: t.status,
            stderr: String::from_utf8_lossy(&t.stderr).trim().to_string(),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_times_and_kills() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let t = run_timed(c, Out::Capture, Duration::from_secs(10)).unwrap();
        assert_eq!(t.status.code(), Some(3));
        assert_eq!(t.stdout, b"out\n");
        assert_eq!(t.stderr, b"err\n");
        let mut c = Command::new("sh");
        c.args(["-c", "exit 3"]);
        assert!(matches!(
            checked(c, Out::Null, Duration::from_secs(10)),
            Err(Error::Command { .. })
        ));

        let mut c = Command::new("sleep");
        c.arg("0.2");
        let t = checked(c, Out::Null, Duration::from_secs(10)).unwrap();
        assert!(t.elapsed >= Duration::from_millis(200));

        let mut c = Command::new("sleep");
        c.arg("30");
        let start = Instant::now();
        assert!(matches!(
            run_timed(c, Out::Null, Duration::from_millis(200)),
            Err(Error::Timeout { .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn large_output_does_not_block() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "head -c 1000000 /dev/zero; head -c 300000 /dev/zero >&2",
        ]);
        let t = checked(c, Out::Capture, Duration::from_secs(10)).unwrap();
        assert_eq!((t.stdout.len(), t.stderr.len()), (1_000_000, 300_000));
        assert_eq!(describe(&Command::new("a")), "a");
    }
}
