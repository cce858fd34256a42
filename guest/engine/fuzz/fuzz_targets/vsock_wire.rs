//! The VM's vsock wire, which the guest (possibly hostile) and the host agent both parse:
//! berth-framed's half-close frames (the Engine API, published ports, UDP datagrams), and the
//! agent's readers of guest output (console stage lines, the vsock daemon's `OK <port>`).
//! Truncated, oversized and garbage input must end in a clean error, never a panic or hang,
//! and what decodes must be exactly what a plain reading of the format gives (checked against
//! the small reference decoder below). Input: one byte that seeds how reads and writes are cut
//! (1 byte at a time up to whole buffers, with spurious `Pending`s), then the stream.
#![no_main]

use std::io;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use berth_framed::{read_datagram, Framed, MAX_FRAME};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Cut sizes from a seed: small xorshift, so a crash reproduces from its input alone.
struct Cuts(u32);

impl Cuts {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    /// Some calls return `Pending` (after waking), the rest move 1..=cap bytes.
    fn step(&mut self, cap: usize) -> Option<usize> {
        let r = self.next();
        if r % 7 == 0 {
            return None;
        }
        let n = match r % 3 {
            0 => 1 + (r as usize >> 8) % 4,
            1 => 1 + (r as usize >> 8) % 300,
            _ => cap,
        };
        Some(n.clamp(1, cap.max(1)))
    }
}

/// A peer that hands out its bytes in uneven pieces and then EOF.
struct Peer {
    data: Vec<u8>,
    pos: usize,
    cuts: Cuts,
}

impl AsyncRead for Peer {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let left = self.data.len() - self.pos;
        let Some(n) = self.cuts.step(left.min(out.remaining())) else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let n = n.min(left);
        let start = self.pos;
        out.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// A sink that takes uneven pieces of each write (shared, to read it after the Framed is done).
struct Sink {
    out: Rc<RefCell<Vec<u8>>>,
    cuts: Cuts,
}

impl AsyncWrite for Sink {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Some(n) = self.cuts.step(buf.len()) else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let n = n.min(buf.len());
        self.out.borrow_mut().extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The format read plainly: frames until the zero-length one or EOF at a boundary.
/// Ok(payload frames, whether the end frame was seen) or the error kind Framed must give.
fn reference(mut s: &[u8]) -> Result<(Vec<Vec<u8>>, bool), io::ErrorKind> {
    let mut frames = Vec::new();
    loop {
        if s.is_empty() {
            return Ok((frames, false));
        }
        if s.len() < 4 {
            return Err(io::ErrorKind::UnexpectedEof);
        }
        let len = u32::from_be_bytes(s[..4].try_into().unwrap()) as usize;
        s = &s[4..];
        if len == 0 {
            return Ok((frames, true));
        }
        if len > MAX_FRAME {
            return Err(io::ErrorKind::InvalidData);
        }
        if s.len() < len {
            return Err(io::ErrorKind::UnexpectedEof);
        }
        frames.push(s[..len].to_vec());
        s = &s[len..];
    }
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fn seeded(b: u8) -> Cuts {
    Cuts(0x9e37_79b9 ^ (u32::from(b) << 8 | 1))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let expect = reference(stream);
    rt().block_on(async {
        // A stream of frames read through Framed.
        let mut f = Framed::new(Peer { data: stream.to_vec(), pos: 0, cuts: seeded(seed) });
        let mut got = Vec::new();
        match (f.read_to_end(&mut got).await, &expect) {
            (Ok(_), Ok((frames, _))) => assert_eq!(got, frames.concat()),
            (Err(e), Err(kind)) => assert_eq!(e.kind(), *kind, "{e}"),
            (r, e) => panic!("Framed gave {r:?}, the format says {e:?}"),
        }

        // The same bytes as datagrams: one per frame, boundaries kept.
        let mut peer = Peer { data: stream.to_vec(), pos: 0, cuts: seeded(seed.wrapping_add(1)) };
        let mut buf = Vec::new();
        let mut dgrams = Vec::new();
        let r = loop {
            match read_datagram(&mut peer, &mut buf).await {
                Ok(true) => dgrams.push(buf.clone()),
                Ok(false) => break Ok(()),
                Err(e) => break Err(e.kind()),
            }
        };
        match (&r, &expect) {
            (Ok(()), Ok((frames, _))) => assert_eq!(&dgrams, frames),
            // A datagram reader sees a cut header as a clean end (the peer went away).
            (Ok(()), Err(io::ErrorKind::UnexpectedEof)) => {}
            (Err(k), Err(kind)) => assert_eq!(k, kind),
            (r, e) => panic!("read_datagram gave {r:?}, the format says {e:?}"),
        }

        // Writing the stream's bytes (cut into uneven writes) and shutting down gives frames
        // that read back to the same bytes, then the end frame, each frame within the limit.
        let out = Rc::new(RefCell::new(Vec::new()));
        let mut w = Framed::new(Sink { out: out.clone(), cuts: seeded(seed.wrapping_add(2)) });
        let mut cuts = seeded(seed.wrapping_add(3));
        let mut rest = stream;
        while !rest.is_empty() {
            let n = cuts.step(rest.len()).unwrap_or(rest.len()).min(rest.len());
            w.write_all(&rest[..n]).await.expect("write to a sink");
            rest = &rest[n..];
        }
        w.shutdown().await.expect("shutdown");
        drop(w);
        let wire = out.take();
        let (frames, ended) = reference(&wire).expect("what Framed writes must decode");
        assert!(ended, "no end frame after shutdown");
        assert_eq!(frames.concat(), stream);
        assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= MAX_FRAME));
    });

    // The agent's readers of guest output: total on any line, and exact on well-formed ones.
    let text = String::from_utf8_lossy(stream);
    for line in text.lines() {
        let stage = berth_agent::protocol::parse_stage_line(line);
        assert_eq!(stage.is_some(), line.contains(berth_agent::protocol::STAGE_PREFIX), "{line:?}");
        if let Ok(port) = berth_agent::transport::hybrid::parse_ok(line) {
            assert!(line.starts_with("OK "), "{line:?} gave {port}");
        }
    }
    if let Some(w) = stream.get(..4) {
        let n = u32::from_be_bytes(w.try_into().unwrap());
        assert_eq!(berth_agent::transport::hybrid::parse_ok(&format!("OK {n}")), Ok(n));
        let line = format!("\r[ 1.0] berth-init: stage=s{n} uptime={}.5 x", n % 100);
        let s = berth_agent::protocol::parse_stage_line(&line).expect("a stage line");
        assert_eq!((s.name, s.uptime_s, s.detail.as_str()), (format!("s{n}"), Some(f64::from(n % 100) + 0.5), "x"));
    }
});
