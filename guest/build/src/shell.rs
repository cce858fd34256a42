//! Docker's Dockerfile word lexer (the rules of moby/buildkit's `shell.Lex`): single quotes are
//! literal, double quotes allow `$` expansion and escaping of `"`, `$` and the escape token,
//! the escape token (`\` or `` ` ``) escapes any character outside quotes, and variables
//! expand as `$name`, `${name}`, `${name:-word}`, `${name:+word}`, `${name-word}`,
//! `${name+word}`, `${name:?message}` and `${name?message}`.
//!
//! Hand-written: the rules are Docker's own dialect (not POSIX sh), and no crate implements it.

/// Expansion environment: `KEY=value` strings; the first entry for a key wins (the stage's ENV
/// comes before build args, as Docker orders them).
pub type Env<'a> = &'a [String];

fn lookup(env: Env, name: &str) -> Option<String> {
    env.iter().find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v.to_string()),
        None if kv == name => Some(String::new()),
        _ => None,
    })
}

/// The lexer, parameterised by the Dockerfile's escape token.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

struct Scan<'s> {
    chars: &'s [char],
    pos: usize,
    escape: char,
    env: Env<'s>,
    /// Words split on unquoted whitespace (for `process_words`).
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.cur.is_empty() {
                self.words.push(std::mem::take(&mut self.cur));
            }
            self.in_word = false;
        } else {
            self.add_raw(c);
        }
    }
    fn add_raw(&mut self, c: char) {
        self.cur.push(c);
        self.in_word = true;
    }
    fn add_str(&mut self, s: &str) {
        for c in s.chars() {
            self.add_raw(c);
        }
        // An empty quoted string still makes a word ("" is an argument).
        self.in_word = true;
    }

    /// Process until `stop` (consumed) or the end. Returns (text, found stop).
    fn process_until(&mut self, stop: Option<char>) -> Result<(String, bool), String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((out, true));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    out.push_str(&s);
                    self.add_str(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    out.push_str(&s);
                    self.add_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    out.push_str(&s);
                    for ch in s.chars() {
                        self.add_char(ch);
                    }
                }
                _ => {
                    self.next();
                    if c == self.escape {
                        match self.next() {
                            None => break,
                            Some(n) => {
                                out.push(n);
                                self.add_raw(n);
                            }
                        }
                    } else {
                        out.push(c);
                        self.add_char(c);
                    }
                }
            }
        }
        Ok((out, false))
    }

    fn single_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                out.push(n);
                            }
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && "*#@?-$!0".contains(c) {
                self.next();
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }

    /// The word after a `${name:` modifier, up to the closing brace (nested `$` expands).
    fn brace_word(&mut self) -> Result<String, String> {
        // Words inside ${...} must not leak into the outer word list.
        let saved = (std::mem::take(&mut self.words), std::mem::take(&mut self.cur), self.in_word);
        let r = self.process_until(Some('}'));
        self.words = saved.0;
        self.cur = saved.1;
        self.in_word = saved.2;
        match r? {
            (w, true) => Ok(w),
            (_, false) => Err("syntax error: missing '}'".into()),
        }
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(lookup(self.env, &name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let value = lookup(self.env, &name);
        match self.next() {
            Some('}') => Ok(value.unwrap_or_default()),
            Some('?') => {
                let word = self.brace_word()?;
                value.ok_or_else(|| unset_error(&name, &word, "is not allowed to be unset"))
            }
            Some('-') => {
                let word = self.brace_word()?;
                Ok(value.unwrap_or(word))
            }
            Some('+') => {
                let word = self.brace_word()?;
                Ok(if value.is_some() { word } else { String::new() })
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.brace_word()?;
                let v = value.clone().unwrap_or_default();
                match modifier {
                    Some('-') => Ok(if v.is_empty() { word } else { v }),
                    Some('+') => Ok(if v.is_empty() { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(unset_error(&name, &word, "is not allowed to be unset")),
                        Some(v) if v.is_empty() => Err(unset_error(&name, &word, "is not allowed to be empty")),
                        Some(v) => Ok(v),
                    },
                    Some(m) => Err(format!("unsupported modifier ({m}) in substitution")),
                    None => Err("syntax error: missing '}'".into()),
                }
            }
            None => Err("syntax error: missing '}'".into()),
            Some(c) => Err(format!("unsupported modifier ({c}) in substitution")),
        }
    }
}

fn unset_error(name: &str, word: &str, default: &str) -> String {
    format!("{name}: {}", if word.is_empty() { default } else { word })
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    fn scan<'s>(&self, chars: &'s [char], env: Env<'s>) -> Scan<'s> {
        Scan { chars, pos: 0, escape: self.escape, env, words: Vec::new(), cur: String::new(), in_word: false }
    }

    /// Expand variables and remove quotes, keeping the result one word (whitespace kept).
    pub fn process_word(&self, word: &str, env: Env) -> Result<String, String> {
        let chars: Vec<char> = word.chars().collect();
        let mut s = self.scan(&chars, env);
        Ok(s.process_until(None)?.0)
    }

    /// Like [`Lexer::process_word`] but split into words on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: Env) -> Result<Vec<String>, String> {
        let chars: Vec<char> = word.chars().collect();
        let mut s = self.scan(&chars, env);
        s.process_until(None)?;
        if s.in_word {
            let last = std::mem::take(&mut s.cur);
            s.words.push(last);
        }
        Ok(s.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<String> {
        vec!["A=apple".into(), "EMPTY=".into(), "SP=a b".into(), "A=shadowed".into()]
    }

    fn w(s: &str) -> Result<String, String> {
        Lexer::default().process_word(s, &env())
    }

    #[test]
    fn plain_and_vars() {
        assert_eq!(w("hello").unwrap(), "hello");
        assert_eq!(w("$A").unwrap(), "apple");
        assert_eq!(w("${A}x").unwrap(), "applex");
        assert_eq!(w("$Ax").unwrap(), "");
        assert_eq!(w("$NOPE-z").unwrap(), "-z");
        assert_eq!(w("a$").unwrap(), "a$");
        assert_eq!(w("$1x").unwrap(), "x");
    }

    #[test]
    fn modifiers_follow_docker() {
        assert_eq!(w("${NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(w("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(w("${EMPTY-dflt}").unwrap(), "");
        assert_eq!(w("${NOPE-dflt}").unwrap(), "dflt");
        assert_eq!(w("${A:-dflt}").unwrap(), "apple");
        assert_eq!(w("${A:+alt}").unwrap(), "alt");
        assert_eq!(w("${EMPTY:+alt}").unwrap(), "");
        assert_eq!(w("${EMPTY+alt}").unwrap(), "alt");
        assert_eq!(w("${NOPE+alt}").unwrap(), "");
        assert_eq!(w("${NOPE:-$A}").unwrap(), "apple");
        assert_eq!(w("${NOPE:-${A:+x}y}").unwrap(), "xy");
        assert_eq!(w("${NOPE:?}").unwrap_err(), "NOPE: is not allowed to be unset");
        assert_eq!(w("${EMPTY:?must set}").unwrap_err(), "EMPTY: must set");
        assert_eq!(w("${EMPTY?x}").unwrap(), "");
        assert!(w("${A").unwrap_err().contains("missing '}'"));
        assert!(w("${}").unwrap_err().contains("bad substitution"));
        assert!(w("${A:*x}").unwrap_err().contains("unsupported modifier"));
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w("'$A'").unwrap(), "$A");
        assert_eq!(w("\"$A b\"").unwrap(), "apple b");
        assert_eq!(w(r#""a\"b""#).unwrap(), "a\"b");
        assert_eq!(w(r#""a\nb""#).unwrap(), "a\\nb");
        assert_eq!(w(r"\$A").unwrap(), "$A");
        assert_eq!(w(r"a\ b").unwrap(), "a b");
        assert!(w("'open").is_err());
        assert!(w("\"open").is_err());
        let bt = Lexer::new('`');
        assert_eq!(bt.process_word("`$A", &env()).unwrap(), "$A");
        assert_eq!(bt.process_word(r"c:\dir", &env()).unwrap(), r"c:\dir");
    }

    #[test]
    fn words_split_on_unquoted_space() {
        let l = Lexer::default();
        assert_eq!(l.process_words("a  b 'c d' \"\" $SP", &env()).unwrap(), vec!["a", "b", "c d", "a", "b"]);
        assert_eq!(l.process_words("", &env()).unwrap(), Vec::<String>::new());
    }
}
