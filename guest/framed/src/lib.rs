//! Half-close carried in frames, for the Berth VM's vsock transport.
//!
//! vhost-device-vsock (the userspace vsock device the host agent uses where the kernel's
//! vhost-vsock is missing) turns a host-side write shutdown into a full close of the guest's
//! socket, so the docker CLI's CloseWrite (stdin ended, or at once when there is no stdin) would
//! cut berthd's answer short, and a published port's client that half-closes would lose the
//! reply. On such links each direction is a sequence of `[u32 big-endian length][bytes]` frames
//! and a zero-length frame means "this direction is done": reading it is EOF, and shutting down
//! the write side sends it (the socket itself stays open until both sides are done).
//!
//! One crate for the three users: berthd serves the Engine API framed itself
//! (`--host vsock+framed://:2380`, in process: a relay hop costs milliseconds under TCG), init's
//! forward service speaks it for published ports (`tcp+framed ADDR`), and the host agent
//! splices the user's raw sockets onto it. Written here, not taken from a crate: the wire format
//! is ours (both ends are Berth), and tokio-util's length-delimited codec has no end-of-stream
//! frame that keeps the socket open for the other direction.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest frame accepted; a peer that announces more is broken or hostile.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest frame written (one write call of the caller at most).
const WRITE_CHUNK: usize = 256 * 1024;
const READ_BUF: usize = 64 * 1024;

/// A stream whose both directions are framed (see the module docs).
pub struct Framed<S> {
    inner: S,
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    /// Payload bytes of the current incoming frame not yet handed out.
    in_frame: usize,
    read_eof: bool,
    /// A frame (header + payload) accepted from the caller and not yet fully written.
    wbuf: Vec<u8>,
    wpos: usize,
    write_closed: bool,
}

impl<S> Framed<S> {
    pub fn new(inner: S) -> Framed<S> {
        Framed {
            inner,
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            in_frame: 0,
            read_eof: false,
            wbuf: Vec::new(),
            wpos: 0,
            write_closed: false,
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if me.read_eof || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let avail = me.rlen - me.rpos;
            if me.in_frame > 0 && avail > 0 {
                let n = avail.min(me.in_frame).min(out.remaining());
                out.put_slice(&me.rbuf[me.rpos..me.rpos + n]);
                me.rpos += n;
                me.in_frame -= n;
                return Poll::Ready(Ok(()));
            }
            if me.in_frame == 0 && avail >= 4 {
                let len = u32::from_be_bytes(me.rbuf[me.rpos..me.rpos + 4].try_into().expect("4 bytes")) as usize;
                me.rpos += 4;
                if len == 0 {
                    me.read_eof = true;
                    continue;
                }
                if len > MAX_FRAME {
                    return Poll::Ready(Err(invalid(format!("frame of {len} bytes is over the limit"))));
                }
                me.in_frame = len;
                continue;
            }
            // Need more bytes: keep a partial header at the start of the buffer.
            if me.rpos > 0 {
                me.rbuf.copy_within(me.rpos..me.rlen, 0);
                me.rlen -= me.rpos;
                me.rpos = 0;
            }
            let mut rb = ReadBuf::new(&mut me.rbuf[me.rlen..]);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                // The peer went away without its end-of-stream frame: EOF at a frame boundary,
                // an error inside one.
                if me.in_frame > 0 || me.rlen > 0 {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame")));
                }
                me.read_eof = true;
                continue;
            }
            me.rlen += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Write out whatever frame is pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(me.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Header and payload in one write: one vsock packet, one wake-up on the other side.
        let n = buf.len().min(WRITE_CHUNK);
        me.wbuf.extend_from_slice(&(n as u32).to_be_bytes());
        me.wbuf.extend_from_slice(&buf[..n]);
        // The bytes are ours now; what the socket does not take at once goes out on the next
        // write or flush (hyper and tokio's copy flush after writing).
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    /// Sends the end-of-stream frame; the socket stays open for the other direction.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        ready!(me.poll_drain(cx))?;
        if !me.write_closed {
            me.write_closed = true;
            me.wbuf.extend_from_slice(&0u32.to_be_bytes());
            ready!(me.poll_drain(cx))?;
        }
        Pin::new(&mut me.inner).poll_flush(cx)
    }
}

/// Send one datagram as one frame (published UDP ports: one frame per datagram keeps the
/// message boundaries a byte stream would lose). An empty datagram cannot be sent: its frame
/// would read as the end of the stream, so it is dropped.
pub async fn write_datagram<W: AsyncWrite + Unpin>(w: &mut W, d: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if d.is_empty() {
        return Ok(());
    }
    if d.len() > MAX_FRAME {
        return Err(invalid(format!("datagram of {} bytes is over the limit", d.len())));
    }
    let mut buf = Vec::with_capacity(4 + d.len());
    buf.extend_from_slice(&(d.len() as u32).to_be_bytes());
    buf.extend_from_slice(d);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Receive one datagram into `buf`; false at the end-of-stream frame or a clean EOF.
pub async fn read_datagram<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 {
        return Ok(false);
    }
    if n > MAX_FRAME {
        return Err(invalid(format!("frame of {n} bytes is over the limit")));
    }
    buf.resize(n, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Buffer of each direction of [`splice_framed`]: a frame per read, large enough that a bulk
/// copy (`docker cp`, a published port's download) is not cut into many small vsock packets.
const SPLICE_BUF: usize = 256 * 1024;

/// Relay a raw stream and a framed one both ways until both directions are done: the raw side's
/// EOF becomes the end-of-stream frame, and the far side's end-of-stream frame becomes a write
/// shutdown of the raw side.
pub async fn splice_framed<A, B>(mut raw: A, framed: B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(framed);
    tokio::io::copy_bidirectional_with_sizes(&mut raw, &mut framed, SPLICE_BUF, SPLICE_BUF).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    #[tokio::test]
    async fn reads_frames_and_eof_frame_writes_one_frame_per_write() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut f = Framed::new(ours);
        // Two frames split at awkward places, then the end-of-stream frame.
        let mut wire = frame(b"GET /_ping");
        wire.extend(frame(b" HTTP/1.1\r\n\r\n"));
        wire.extend(0u32.to_be_bytes());
        for chunk in wire.chunks(3) {
            peer.write_all(chunk).await.unwrap();
        }
        let mut got = Vec::new();
        f.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET /_ping HTTP/1.1\r\n\r\n");
        // The socket is still open: our answer goes out, then our own end-of-stream frame.
        f.write_all(b"OK").await.unwrap();
        f.shutdown().await.unwrap();
        drop(f);
        let mut back = Vec::new();
        peer.read_to_end(&mut back).await.unwrap();
        let mut want = frame(b"OK");
        want.extend(0u32.to_be_bytes());
        assert_eq!(back, want);
    }

    #[tokio::test]
    async fn large_writes_are_chunked_and_read_back() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = Framed::new(a);
        let mut r = Framed::new(b);
        let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d2).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
        let _ = writer.await.unwrap();
    }

    #[tokio::test]
    async fn half_close_survives_two_splices() {
        // client <-> [splice_framed] <-framed-> [splice_framed] <-> server
        let (client, a_raw) = tokio::io::duplex(1 << 16);
        let (a_framed, b_framed) = tokio::io::duplex(1 << 16);
        let (b_raw, server) = tokio::io::duplex(1 << 16);
        let a = tokio::spawn(splice_framed(a_raw, a_framed));
        let b = tokio::spawn(splice_framed(b_raw, b_framed));
        let srv = tokio::spawn(async move {
            let mut server = server;
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap(); // ends only on the client's half-close
            server.write_all(format!("got {} bytes", got.len()).as_bytes()).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut client = client;
        client.write_all(&vec![1u8; 600_000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = String::new();
        client.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "got 600000 bytes");
        srv.await.unwrap();
        drop(client);
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn datagrams_keep_their_boundaries() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            for d in [&b"one"[..], b"", b"two two", &[7u8; 70_000][..]] {
                write_datagram(&mut a, d).await.unwrap();
            }
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while read_datagram(&mut b, &mut buf).await.unwrap() {
            got.push(buf.clone());
        }
        assert_eq!(got, vec![b"one".to_vec(), b"two two".to_vec(), vec![7u8; 70_000]], "the empty one is dropped");
        writer.await.unwrap();
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).await.unwrap();
        assert!(read_datagram(&mut b, &mut buf).await.is_err());
    }

    #[tokio::test]
    async fn hostile_frames_fail_cleanly() {
        let (mut peer, ours) = tokio::io::duplex(64);
        peer.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).await.unwrap();
        let mut f = Framed::new(ours);
        let mut b = [0u8; 8];
        assert_eq!(f.read(&mut b).await.unwrap_err().kind(), io::ErrorKind::InvalidData);

        let (mut peer, ours) = tokio::io::duplex(64);
        peer.write_all(&10u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        drop(peer);
        let mut f = Framed::new(ours);
        let mut got = Vec::new();
        assert_eq!(f.read_to_end(&mut got).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);

        // A peer that closes at a frame boundary without the end frame: plain EOF.
        let (mut peer, ours) = tokio::io::duplex(64);
        peer.write_all(&frame(b"hi")).await.unwrap();
        drop(peer);
        let mut f = Framed::new(ours);
        let mut got = Vec::new();
        f.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
    }
}
