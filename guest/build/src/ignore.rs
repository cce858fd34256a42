//! `.dockerignore` with Docker's semantics (moby/patternmatcher): one pattern per line, `#`
//! comments, `!` exceptions, patterns cleaned and made relative (`/a` = `a`), `*` and `?` not
//! crossing `/`, `**` any number of directories, and a path excluded when it or one of its
//! parent directories matches; the last matching pattern wins.

use regex::Regex;

use crate::error::BuildError;

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    text: String,
    re: Regex,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Go's filepath.Clean for a relative path (no leading `/` result unless it was absolute).
fn clean(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let s = parts.join("/");
    match (abs, s.is_empty()) {
        (true, _) => format!("/{s}"),
        (false, true) => ".".into(),
        (false, false) => s,
    }
}

fn compile(p: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if in_class {
            // Inside [...] characters keep their class meaning (ranges, ^).
            match c {
                ']' => in_class = false,
                '\\' if i < chars.len() => {
                    re.push('\\');
                    re.push(chars[i]);
                    i += 1;
                    continue;
                }
                '[' | '&' | '~' => {
                    re.push('\\');
                }
                _ => {}
            }
            re.push(c);
            continue;
        }
        match c {
            '*' => {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        re.push_str(".*");
                    } else {
                        re.push_str("(.*/)?");
                    }
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '\\' => match chars.get(i) {
                Some(n) => {
                    re.push_str(&regex::escape(&n.to_string()));
                    i += 1;
                }
                None => re.push_str("\\\\"),
            },
            '[' => {
                in_class = true;
                re.push(c);
            }
            ']' => re.push_str("\\]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

impl Matcher {
    /// Parse `.dockerignore` content.
    pub fn parse(content: &str) -> Result<Matcher, BuildError> {
        let mut patterns = Vec::new();
        for line in content.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, rest) = match line.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                if exclusion {
                    return Err(BuildError::Pattern { pattern: line.into(), reason: "illegal exclusion pattern: \"!\"".into() });
                }
                continue;
            }
            let mut text = clean(rest);
            if text.len() > 1 && text.starts_with('/') {
                text = text[1..].to_string();
            }
            let re = compile(&text).map_err(|reason| BuildError::Pattern { pattern: line.into(), reason })?;
            patterns.push(Pattern { exclusion, text, re });
        }
        Ok(Matcher { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Does any exception pattern exist (a directory cannot then be skipped wholesale)?
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Is `path` (relative to the context root, `/`-separated) excluded?
    pub fn excluded(&self, path: &str) -> bool {
        let file = clean(path.trim_start_matches('/'));
        let parents: Vec<&str> = file.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            let mut m = p.re.is_match(&file);
            if !m && parents.len() > 1 {
                for i in 1..parents.len() {
                    if p.re.is_match(&parents[..i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        let _ = self.patterns.iter().map(|p| &p.text);
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Matcher {
        Matcher::parse(s).unwrap()
    }

    #[test]
    fn basics() {
        let x = m("# comment\n*.log\n/build\ntmp/\n");
        assert!(x.excluded("a.log"));
        assert!(!x.excluded("dir/a.log"), "* does not cross /");
        assert!(x.excluded("build"));
        assert!(x.excluded("build/out/x"), "parents match");
        assert!(x.excluded("tmp/x"));
        assert!(!x.excluded("src/main.rs"));
    }

    #[test]
    fn double_star_and_exceptions() {
        let x = m("**/*.o\n!keep/**/*.o\nnode_modules\n!node_modules/keep.js\n");
        assert!(x.excluded("a.o"));
        assert!(x.excluded("deep/er/b.o"));
        assert!(!x.excluded("keep/x/c.o"));
        assert!(!x.excluded("keep/c.o"));
        assert!(x.excluded("node_modules/lib/x.js"));
        assert!(!x.excluded("node_modules/keep.js"));
        let all = m("**\n!Dockerfile\n");
        assert!(all.excluded("anything/at/all"));
        assert!(!all.excluded("Dockerfile"));
    }

    #[test]
    fn last_match_wins_and_cleaning() {
        let x = m("a\n!a\n");
        assert!(!x.excluded("a"));
        let x = m("!a\na\n");
        assert!(x.excluded("a"));
        let x = m("./dir/../secret\n");
        assert!(x.excluded("secret"));
        let x = m("f?le\n[ab]c\nlit\\*\n");
        assert!(x.excluded("file") && !x.excluded("fiile"));
        assert!(x.excluded("ac") && x.excluded("bc") && !x.excluded("cc"));
        assert!(x.excluded("lit*") && !x.excluded("litx"));
        assert!(Matcher::parse("!\n").is_err());
        assert!(Matcher::parse("[z-a]\n").is_err());
    }
}
