//! A tiny blocking HTTP/1.1 client for talking to servers inside a test namespace.
//!
//! Hand-written on purpose: the connection must be opened from a thread that joined the
//! namespace (see [`NetNs::connect_tcp`]), which no ready-made blocking client lets us do, and
//! the needs are small (one request per connection, `Connection: close`).

use std::io::{Read, Write};

use crate::netns::NetNs;
use crate::{Error, IoContext, Result};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header value with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request to `http://<addr><path>` made from inside `ns`.
pub fn request(
    ns: &NetNs,
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let mut stream = ns.connect_tcp(addr)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ctx(|| "set timeout".into())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: berth-tests\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .ctx(|| format!("send {method} {path}"))?;
    stream
        .write_all(body)
        .ctx(|| format!("send body {method} {path}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .ctx(|| format!("read response {method} {path}"))?;
    parse_response(&raw, method == "HEAD")
}

/// Parse a full `Connection: close` response (Content-Length, chunked, or read-to-EOF).
pub fn parse_response(raw: &[u8], head_only: bool) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Http(format!("no header end in {} bytes", raw.len())))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| Error::Http(e.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Http(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(rest)?;
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(Error::Http(format!(
                "short body: {} of {len} bytes",
                rest.len()
            )));
        }
        resp.body = rest[..len].to_vec();
    } else {
        resp.body = rest.to_vec();
    }
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| Error::Http("truncated chunk size".into()))?;
        let size_str =
            std::str::from_utf8(&data[..line_end]).map_err(|e| Error::Http(e.to_string()))?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| Error::Http(format!("bad chunk size {size_str:?}: {e}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(Error::Http("truncated chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcdef",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abc");
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", false).is_err());
        assert!(parse_response(b"garbage", false).is_err());
    }
}
