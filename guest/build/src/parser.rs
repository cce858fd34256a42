//! Dockerfile text to nodes, following moby/buildkit's parser: parser directives (`syntax`,
//! `escape`, `check`) at the top, comment lines dropped (also inside continuations), lines
//! joined at a trailing escape token, builder flags (`--from=x`) split off, then each
//! instruction's arguments parsed by its own rule (JSON array or shell form, key=value pairs,
//! whitespace lists). Heredocs (`<<EOF`) are read for RUN, COPY and ADD.
//!
//! Every error names the Dockerfile line it comes from; nothing here panics on any input
//! (the fuzz target in `guest/build/fuzz` checks that).

use crate::error::BuildError;

/// A Dockerfile larger than this is refused before parsing (Docker's are kilobytes).
pub const MAX_DOCKERFILE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { escape: '\\', syntax: None, check: None }
    }
}

/// A heredoc attached to an instruction (`RUN <<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// `<<-`: leading tabs were stripped.
    pub chomp: bool,
    /// False when the delimiter was quoted (`<<'EOF'`): no variable expansion.
    pub expand: bool,
}

/// An instruction's arguments as its parse rule produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    None,
    /// RUN, CMD, ENTRYPOINT, SHELL: a JSON array, or the raw shell-form string.
    Command { json: bool, args: Vec<String> },
    /// COPY, ADD, VOLUME (JSON array or whitespace list), EXPOSE, FROM (whitespace list).
    List { json: bool, items: Vec<String> },
    /// ENV, LABEL: key/value pairs, still quoted (expansion happens at dispatch).
    Pairs(Vec<(String, String)>),
    /// ARG: names with optional defaults.
    Args(Vec<(String, Option<String>)>),
    /// HEALTHCHECK: `NONE`, or `CMD` plus a command.
    Health { kind: String, json: bool, args: Vec<String> },
    /// MAINTAINER, USER, WORKDIR, STOPSIGNAL: the rest of the line.
    Text(String),
    /// ONBUILD: the trigger instruction.
    OnBuild(Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Lower-cased instruction keyword ("run", "copy", ...).
    pub keyword: String,
    /// The instruction as written, continuation lines joined.
    pub original: String,
    /// Builder flags (`--from=build`), escapes and quotes removed.
    pub flags: Vec<String>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    pub start_line: usize,
    pub end_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<String>,
}

/// Instructions Docker knows (anything else is an error when instructions are built).
pub const KEYWORDS: &[&str] = &[
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer",
    "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
];

struct DirectiveState {
    done: bool,
    seen: Vec<String>,
}

fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start();
    let name_len = rest.char_indices().take_while(|(i, c)| if *i == 0 { c.is_ascii_alphabetic() } else { c.is_ascii_alphanumeric() }).count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start().strip_prefix('=')?;
    let value = rest.trim();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

impl DirectiveState {
    /// Look at one (left-trimmed) line while directives are still allowed.
    fn line(&mut self, d: &mut Directives, line: &str, lineno: usize) -> Result<(), BuildError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = parse_directive(line) else {
            self.done = true;
            return Ok(());
        };
        match name.as_str() {
            "escape" | "syntax" | "check" => {
                if self.seen.contains(&name) {
                    return Err(BuildError::parse(lineno, format!("only one {name} parser directive can be used")));
                }
                self.seen.push(name.clone());
                match name.as_str() {
                    "escape" => {
                        d.escape = match value.as_str() {
                            "\\" => '\\',
                            "`" => '`',
                            _ => {
                                return Err(BuildError::parse(
                                    lineno,
                                    format!("invalid escape token '{value}' does not match ` or \\"),
                                ))
                            }
                        }
                    }
                    "syntax" => d.syntax = Some(value),
                    _ => d.check = Some(value),
                }
            }
            // Unknown directives are comments, and end the directive section.
            _ => self.done = true,
        }
        Ok(())
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Strip a trailing escape token (plus spaces/tabs after it): the line continues.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(s) = t.strip_suffix(escape) {
        (s.to_string(), false)
    } else {
        (line.to_string(), true)
    }
}

/// Parse a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, BuildError> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(BuildError::parse(1, format!("the Dockerfile is larger than {MAX_DOCKERFILE_BYTES} bytes")));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    // A final newline does not start another line.
    let n = if text.ends_with('\n') { lines.len() - 1 } else { lines.len() };
    let mut df = Dockerfile::default();
    let mut ds = DirectiveState { done: false, seen: Vec::new() };
    let mut i = 0usize;
    while i < n {
        let raw = lines[i];
        let lineno = i + 1;
        i += 1;
        let trimmed = raw.trim_start();
        ds.line(&mut df.directives, trimmed, lineno)?;
        if is_comment(trimmed) || trimmed.trim().is_empty() {
            continue;
        }
        let escape = df.directives.escape;
        let start = lineno;
        let (mut line, mut end_of_line) = trim_continuation(trimmed, escape);
        let mut empty_continuation = false;
        while !end_of_line && i < n {
            let raw = lines[i];
            i += 1;
            ds.line(&mut df.directives, raw.trim_start(), i)?;
            if is_comment(raw) {
                continue;
            }
            if raw.trim().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (l, eol) = trim_continuation(raw, escape);
            line.push_str(&l);
            end_of_line = eol;
        }
        let end = i;
        if line.trim().is_empty() {
            continue;
        }
        if empty_continuation {
            df.warnings.push(format!("Empty continuation line found in: {line}"));
        }
        let mut node = node_from_line(&line, escape).map_err(|m| BuildError::parse(start, m))?;
        node.start_line = start;
        node.end_line = end;
        if matches!(node.keyword.as_str(), "run" | "copy" | "add") && line.contains("<<") {
            for (name, chomp, expand) in heredocs_in(&line) {
                let mut content = String::new();
                let mut terminated = false;
                while i < n {
                    let l = lines[i];
                    i += 1;
                    let candidate = if chomp { l.trim_start_matches('\t') } else { l };
                    if candidate == name {
                        terminated = true;
                        break;
                    }
                    content.push_str(if chomp { l.trim_start_matches('\t') } else { l });
                    content.push('\n');
                }
                if !terminated {
                    return Err(BuildError::parse(start, format!("unterminated heredoc {name:?}")));
                }
                node.heredocs.push(Heredoc { name, content, chomp, expand });
            }
            node.end_line = i;
        }
        df.nodes.push(node);
    }
    if df.nodes.is_empty() {
        return Err(BuildError::parse(n.max(1), "file with no instructions"));
    }
    Ok(df)
}

/// Heredoc markers in an instruction line: `<<EOF`, `<<-EOF`, `<<"EOF"` (no expansion).
fn heredocs_in(line: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        // An optional fd number before << (`3<<EOF`).
        let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = w.strip_prefix("<<") else { continue };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let (name, expand) = match (rest.chars().next(), rest.chars().last()) {
            (Some(q @ ('\'' | '"')), Some(l)) if l == q && rest.len() >= 2 => (rest[1..rest.len() - 1].to_string(), false),
            _ => (rest.to_string(), true),
        };
        if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.') {
            out.push((name, chomp, expand));
        }
    }
    out
}

/// Split "CMD --flag=x args" into keyword, flags and the rest, then parse the rest.
fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let line_t = line.trim();
    let (cmd, rest) = match line_t.find(char::is_whitespace) {
        Some(p) => (&line_t[..p], line_t[p..].trim_start()),
        None => (line_t, ""),
    };
    let (rest, flags) = extract_flags(rest, escape);
    let rest = rest.trim();
    let keyword = cmd.to_ascii_lowercase();
    let args = match keyword.as_str() {
        "run" | "cmd" | "entrypoint" | "shell" => parse_maybe_json(rest)?,
        "add" | "copy" | "volume" => parse_maybe_json_list(rest)?,
        "expose" | "from" => Args::List { json: false, items: split_ws(rest) },
        "env" => Args::Pairs(parse_name_val(rest, "ENV", escape)?),
        "label" => Args::Pairs(parse_name_val(rest, "LABEL", escape)?),
        "arg" => parse_arg(rest, escape)?,
        "healthcheck" => parse_health(rest)?,
        "onbuild" => {
            if rest.is_empty() {
                Args::None
            } else {
                Args::OnBuild(Box::new(node_from_line(rest, escape)?))
            }
        }
        _ => {
            if rest.is_empty() {
                Args::None
            } else {
                Args::Text(rest.to_string())
            }
        }
    };
    Ok(Node { keyword, original: line.to_string(), flags, args, heredocs: Vec::new(), start_line: 0, end_line: 0 })
}

fn split_ws(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Leading `--name[=value]` words; returns the rest of the line and the flags.
fn extract_flags(line: &str, escape: char) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && chars[pos].is_whitespace() {
            pos += 1;
        }
        if pos + 1 >= chars.len() || chars[pos] != '-' || chars[pos + 1] != '-' {
            return (chars[pos.min(chars.len())..].iter().collect(), flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        while pos < chars.len() {
            let c = chars[pos];
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                } else if c == escape && pos + 1 < chars.len() {
                    pos += 1;
                    word.push(chars[pos]);
                } else if c != escape {
                    word.push(c);
                }
                pos += 1;
                continue;
            }
            if c.is_whitespace() {
                break;
            }
            if c == '\'' || c == '"' {
                quote = Some(c);
                blank_ok = true;
            } else if c == escape {
                if pos + 1 < chars.len() {
                    pos += 1;
                    word.push(chars[pos]);
                }
            } else {
                word.push(c);
            }
            pos += 1;
        }
        if word == "--" {
            return (chars[pos.min(chars.len())..].iter().collect(), flags);
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
        }
    }
}

fn parse_json_array(rest: &str) -> Option<Result<Vec<String>, String>> {
    let r = rest.trim_start();
    if !r.starts_with('[') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(r).ok()?;
    let arr = v.as_array()?;
    Some(
        arr.iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "when using JSON array syntax, arrays must be comprised of strings only".to_string()),
    )
}

fn parse_maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::None);
    }
    match parse_json_array(rest) {
        Some(Ok(args)) => Ok(Args::Command { json: true, args }),
        Some(Err(e)) => Err(e),
        None => Ok(Args::Command { json: false, args: vec![rest.to_string()] }),
    }
}

fn parse_maybe_json_list(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::None);
    }
    match parse_json_array(rest) {
        Some(Ok(items)) => Ok(Args::List { json: true, items }),
        Some(Err(e)) => Err(e),
        None => Ok(Args::List { json: false, items: split_ws(rest) }),
    }
}

/// Split on whitespace outside quotes, keeping quotes and escapes (buildkit's parseWords).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == escape && q != '\'' {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
                word.push(chars[i]);
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                words.push(std::mem::take(&mut word));
            }
            in_word = false;
            blank_ok = false;
            i += 1;
            continue;
        }
        in_word = true;
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            if i + 1 == chars.len() {
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
        }
        word.push(chars[i]);
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Err(format!("{key} requires at least one argument"));
    }
    if !words[0].contains('=') {
        // Old form: KEY name value...
        let mut parts = rest.trim().splitn(2, char::is_whitespace);
        let name = parts.next().unwrap_or("").to_string();
        let value = parts.next().map(str::trim_start).unwrap_or("");
        if value.is_empty() {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![(name, value.to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value")),
        })
        .collect()
}

fn parse_arg(rest: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    Ok(Args::Args(
        words
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w, None),
            })
            .collect(),
    ))
}

fn parse_health(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::None);
    }
    let (kind, cmd) = match rest.find(char::is_whitespace) {
        Some(p) => (&rest[..p], rest[p..].trim_start()),
        None => (rest, ""),
    };
    let (json, args) = match parse_maybe_json(cmd)? {
        Args::Command { json, args } => (json, args),
        _ => (false, Vec::new()),
    };
    Ok(Args::Health { kind: kind.to_string(), json, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Node {
        let mut d = parse(s).unwrap();
        assert_eq!(d.nodes.len(), 1, "{d:?}");
        d.nodes.remove(0)
    }

    #[test]
    fn lines_comments_continuations() {
        let d = parse("# syntax=docker/dockerfile:1\n\nFROM busybox\n# c\nRUN echo a \\\n  # inner comment\n  && echo b\n\nrun x\n").unwrap();
        assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.nodes.len(), 3);
        assert_eq!(d.nodes[1].args, Args::Command { json: false, args: vec!["echo a   && echo b".into()] });
        assert_eq!((d.nodes[1].start_line, d.nodes[1].end_line), (5, 7));
        assert_eq!(d.nodes[2].keyword, "run");
        assert_eq!(d.nodes[2].start_line, 9);
    }

    #[test]
    fn escape_directive() {
        let d = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  more\n").unwrap();
        assert_eq!(d.directives.escape, '`');
        assert_eq!(d.nodes[1].args, Args::Command { json: false, args: vec!["dir c:\\   more".into()] });
        // Not at the top: just a comment.
        let d = parse("FROM x\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(d.directives.escape, '\\');
        assert!(parse("# escape=x\nFROM a").unwrap_err().to_string().contains("invalid escape token"));
        assert!(parse("# escape=`\n# escape=\\\nFROM a").unwrap_err().to_string().contains("only one escape"));
    }

    #[test]
    fn json_and_shell_forms() {
        assert_eq!(one(r#"CMD ["a", "b c"]"#).args, Args::Command { json: true, args: vec!["a".into(), "b c".into()] });
        assert_eq!(one("CMD [broken").args, Args::Command { json: false, args: vec!["[broken".into()] });
        let e = parse("CMD [1, 2]").unwrap_err();
        assert_eq!(e, BuildError::parse(1, "when using JSON array syntax, arrays must be comprised of strings only"));
        assert_eq!(one("COPY a b /c/").args, Args::List { json: false, items: vec!["a".into(), "b".into(), "/c/".into()] });
        assert_eq!(one(r#"VOLUME ["/a", "/b"]"#).args, Args::List { json: true, items: vec!["/a".into(), "/b".into()] });
    }

    #[test]
    fn flags_are_split_off() {
        let n = one(r#"COPY --from=build --chown="app user" src /dst"#);
        assert_eq!(n.flags, vec!["--from=build", "--chown=app user"]);
        assert_eq!(n.args, Args::List { json: false, items: vec!["src".into(), "/dst".into()] });
        let n = one("RUN -- --not-a-flag");
        assert!(n.flags.is_empty());
        assert_eq!(n.args, Args::Command { json: false, args: vec!["--not-a-flag".into()] });
    }

    #[test]
    fn env_label_arg_forms() {
        assert_eq!(one("ENV A=1 B=\"two words\"").args, Args::Pairs(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())]));
        assert_eq!(one("ENV A hello  world").args, Args::Pairs(vec![("A".into(), "hello  world".into())]));
        assert!(parse("ENV A=1 B").unwrap_err().to_string().contains("can't find ="));
        assert!(parse("ENV").unwrap_err().to_string().contains("at least one argument"));
        assert!(parse("ENV A").unwrap_err().to_string().contains("two arguments"));
        assert_eq!(one("ARG a b=2").args, Args::Args(vec![("a".into(), None), ("b".into(), Some("2".into()))]));
        assert_eq!(one(r"LABEL a=b\ c").args, Args::Pairs(vec![("a".into(), r"b\ c".into())]));
    }

    #[test]
    fn healthcheck_and_onbuild() {
        assert_eq!(
            one("HEALTHCHECK --interval=5s CMD wget -q localhost").args,
            Args::Health { kind: "CMD".into(), json: false, args: vec!["wget -q localhost".into()] }
        );
        match one("ONBUILD RUN echo hi").args {
            Args::OnBuild(n) => {
                assert_eq!(n.keyword, "run");
                assert_eq!(n.args, Args::Command { json: false, args: vec!["echo hi".into()] });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heredocs() {
        let d = parse("FROM a\nRUN <<EOF\necho one\n  echo two\nEOF\nCOPY <<-'X' /f\n\tliteral $A\n\tX\nRUN after\n").unwrap();
        assert_eq!(d.nodes.len(), 4);
        assert_eq!(d.nodes[1].heredocs, vec![Heredoc { name: "EOF".into(), content: "echo one\n  echo two\n".into(), chomp: false, expand: true }]);
        assert_eq!(d.nodes[2].heredocs[0].content, "literal $A\n");
        assert!(!d.nodes[2].heredocs[0].expand);
        assert_eq!(d.nodes[3].start_line, 9);
        assert!(parse("FROM a\nRUN <<EOF\nnever ends\n").unwrap_err().to_string().contains("on line 2: unterminated heredoc"));
    }

    #[test]
    fn empty_and_crlf() {
        assert_eq!(parse("").unwrap_err(), BuildError::parse(1, "file with no instructions"));
        assert!(parse("# only\n\n").is_err());
        let d = parse("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n").unwrap();
        assert_eq!(d.nodes[1].args, Args::Command { json: false, args: vec!["b  c".into()] });
    }

    #[test]
    fn words() {
        assert_eq!(parse_words(r#"a "b c" 'd\' e"#, '\\'), vec!["a", "\"b c\"", "'d\\'", "e"]);
        assert_eq!(parse_words(r"x\ y", '\\'), vec![r"x\ y"]);
    }
}
