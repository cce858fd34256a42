//! Half-close over transports that cannot carry it, for the forward service (published ports,
//! `tcp+framed ADDR`). vhost-device-vsock turns an EOF on the host's side of a stream into a
//! full shutdown of the guest's socket, so a client's half-close would cut the answer short:
//! each direction is a sequence of `[u32 big-endian length][bytes]` frames, and a zero-length
//! frame means "this direction is done" (a real `shutdown(SHUT_WR)` on the far side). berthd
//! speaks the same codec itself on `vsock+framed://:2380` (guest/engine/src/framed.rs); the host
//! side is src-tauri/agent/src/framed.rs.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted; a peer that announces more is broken or hostile.
pub const MAX_FRAME: usize = 1 << 20;
const CHUNK: usize = 256 * 1024;

/// Read raw bytes and send them as frames, ending with the zero-length frame.
pub async fn raw_to_framed<R, W>(mut raw: R, mut framed: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Header and payload leave in one write: one vsock packet, one wake-up on the far side.
    let mut buf = vec![0u8; 4 + CHUNK];
    loop {
        let n = raw.read(&mut buf[4..]).await?;
        buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        framed.write_all(&buf[..4 + n]).await?;
        if n == 0 {
            framed.flush().await?;
            return Ok(());
        }
    }
}

/// Read frames and write their bytes raw; the zero-length frame (or EOF) shuts the raw write
/// side down.
pub async fn framed_to_raw<R, W>(framed: R, mut raw: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Buffered: a header and its payload usually arrive together, read them with one call.
    let mut framed = tokio::io::BufReader::with_capacity(64 * 1024, framed);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut len = [0u8; 4];
        match framed.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let mut left = u32::from_be_bytes(len) as usize;
        if left == 0 {
            break;
        }
        if left > MAX_FRAME {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {left} bytes is over the limit")));
        }
        while left > 0 {
            let want = left.min(buf.len());
            framed.read_exact(&mut buf[..want]).await?;
            raw.write_all(&buf[..want]).await?;
            left -= want;
        }
        raw.flush().await?;
    }
    raw.shutdown().await
}

/// Relay a raw stream and a framed one both ways until both directions are done.
pub async fn splice_framed<A, B>(raw: A, framed: B) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (rr, rw) = tokio::io::split(raw);
    let (fr, fw) = tokio::io::split(framed);
    let (a, b) = tokio::join!(raw_to_framed(rr, fw), framed_to_raw(fr, rw));
    a.and(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn half_close_survives_the_framing_both_ways() {
        // client <-> [splice_framed] <-framed-> [splice_framed] <-> server
        let (client, a_raw) = tokio::io::duplex(1 << 16);
        let (a_framed, b_framed) = tokio::io::duplex(1 << 16);
        let (b_raw, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(splice_framed(a_raw, a_framed));
        tokio::spawn(splice_framed(b_raw, b_framed));
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
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_refused() {
        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).await.unwrap();
        let (sink, _keep) = tokio::io::duplex(64);
        assert!(framed_to_raw(r, sink).await.is_err());

        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(&10u32.to_be_bytes()).await.unwrap();
        w.write_all(b"abc").await.unwrap();
        drop(w);
        let (sink, _keep) = tokio::io::duplex(64);
        assert!(framed_to_raw(r, sink).await.is_err(), "a frame cut short is an error");
    }
}
