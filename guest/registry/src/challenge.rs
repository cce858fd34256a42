//! `WWW-Authenticate` parsing (RFC 7235 challenges).
//!
//! Hand-written: the few crates for this are unmaintained or tied to old hyper versions, and the
//! grammar we need (scheme + comma-separated params with quoted strings) is small.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: "bearer", "basic", ...
    pub scheme: String,
    /// Parameter names lowercased; values unquoted and unescaped.
    pub params: BTreeMap<String, String>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b',') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn token(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i] as char) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// Unquoted value: lenient (real servers send unquoted URLs), runs to the next comma/space.
    fn bare_value(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b' ' | b'\t') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        // assumes current char is '"'
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.s.len() {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'\\' if self.i < self.s.len() => {
                    out.push(self.s[self.i]);
                    self.i += 1;
                }
                b'"' => break,
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Parses every challenge in one header value. Garbage is skipped rather than fatal, since a
/// partially understood challenge is still usable.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        c.skip_ws_commas();
        if c.peek().is_none() {
            break;
        }
        let tok = c.token();
        if tok.is_empty() {
            c.i += 1; // unexpected char; skip it
            continue;
        }
        let save = c.i;
        c.skip_ws();
        if c.peek() == Some(b'=') && !out.is_empty() && c.s.get(c.i + 1) != Some(&b'=') {
            // auth-param of the current challenge
            c.i += 1;
            c.skip_ws();
            let val = if c.peek() == Some(b'"') {
                c.quoted()
            } else {
                c.bare_value()
            };
            out.last_mut()
                .unwrap()
                .params
                .insert(tok.to_ascii_lowercase(), val);
            continue;
        }
        c.i = save;
        // New challenge. A token68 (e.g. "Negotiate abc==") directly after the scheme is skipped.
        out.push(Challenge {
            scheme: tok.to_ascii_lowercase(),
            params: BTreeMap::new(),
        });
        c.skip_ws();
        let look = c.i;
        let t = c.token();
        c.skip_ws();
        let is_token68 = !t.is_empty()
            && (c.peek().is_none()
                || c.peek() == Some(b',')
                || (c.peek() == Some(b'=') && c.s.get(c.i + 1) == Some(&b'='))
                || (c.peek() == Some(b'=') && matches!(c.s.get(c.i + 1), None | Some(b','))));
        if is_token68 {
            while c.peek() == Some(b'=') {
                c.i += 1;
            }
        } else {
            c.i = look;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_commas() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:library/busybox:pull,push""#;
        let c = parse_www_authenticate(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example.com/token");
        assert_eq!(c[0].params["service"], "registry.example.com");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull,push");
    }

    #[test]
    fn basic_and_escapes_and_multiple() {
        let c = parse_www_authenticate(
            r#"Basic realm="Registry \"x\"", Bearer realm=http://a/b , error=invalid_token"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry \"x\"");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "http://a/b");
        assert_eq!(c[1].params["error"], "invalid_token");
    }

    #[test]
    fn token68_and_bare_scheme() {
        let c = parse_www_authenticate("Negotiate abc==, Basic");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "negotiate");
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].scheme, "basic");
        assert!(parse_www_authenticate("").is_empty());
    }
}
