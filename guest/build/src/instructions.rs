//! Parsed nodes to typed instructions, grouped into build stages. Variable expansion is left
//! to dispatch time (the environment changes from step to step); what can be checked without
//! it is checked here, with the instruction's line.

use crate::error::BuildError;
use crate::parser::{self, Args, Dockerfile, Heredoc, Node};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// Sources as written (expanded at dispatch); empty when only heredocs are copied.
    pub srcs: Vec<String>,
    pub dest: String,
    /// `--from=<stage name|index|image>`.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// `HEALTHCHECK NONE`.
    pub none: bool,
    pub json: bool,
    pub args: Vec<String>,
    /// Nanoseconds, 0 = inherit Docker's default.
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From { image: String, name: Option<String>, platform: Option<String> },
    Run { json: bool, args: Vec<String>, heredocs: Vec<Heredoc> },
    Cmd { json: bool, args: Vec<String> },
    Entrypoint { json: bool, args: Vec<String> },
    Copy(CopySpec),
    Add(CopySpec),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Healthcheck(Health),
    Shell(Vec<String>),
    /// The trigger, as written after ONBUILD.
    OnBuild(String),
    Maintainer(String),
}

impl Instruction {
    /// The keyword as Docker prints it in "Step 1/5 : RUN ...".
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run { .. } => "RUN",
            Instruction::Cmd { .. } => "CMD",
            Instruction::Entrypoint { .. } => "ENTRYPOINT",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::OnBuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (continuations joined), for "Step N/M : ..." lines.
    pub original: String,
    pub inst: Instruction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `FROM ... AS name`, lower-cased.
    pub name: Option<String>,
    /// The FROM step itself.
    pub from: Step,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// ARGs before the first FROM (usable in FROM lines).
    pub meta_args: Vec<Step>,
    pub stages: Vec<Stage>,
    pub escape: char,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Total instructions, as Docker counts them for "Step N/M".
    pub fn total_steps(&self) -> usize {
        self.meta_args.len() + self.stages.iter().map(|s| 1 + s.steps.len()).sum::<usize>()
    }

    /// Index of the stage `--target` names (a stage name, case-insensitively).
    pub fn target_index(&self, target: &str) -> Result<usize, BuildError> {
        let t = target.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.as_str()))
            .ok_or_else(|| BuildError::invalid(format!("failed to reach build target {target} in Dockerfile")))
    }
}

/// Flags of one instruction: `--name=value` or `--name` (boolean).
struct Flags {
    line: usize,
    keyword: &'static str,
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn new(node: &Node, keyword: &'static str, allowed: &[&str], buildkit_only: &[&str]) -> Result<Flags, BuildError> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for f in &node.flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if buildkit_only.contains(&name.as_str()) {
                return Err(BuildError::parse(node.start_line, format!("the --{name} option requires BuildKit")));
            }
            if !allowed.contains(&name.as_str()) {
                return Err(BuildError::parse(node.start_line, format!("unknown flag: {name}")));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(BuildError::parse(node.start_line, format!("Duplicate flag specified: {name}")));
            }
            pairs.push((name, value));
        }
        Ok(Flags { line: node.start_line, keyword, pairs })
    }

    fn string(&self, name: &str) -> Result<Option<String>, BuildError> {
        match self.pairs.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v.clone())),
            Some((_, None)) => Err(BuildError::parse(self.line, format!("Missing a value on flag: {name}"))),
        }
    }

    fn duration(&self, name: &str) -> Result<i64, BuildError> {
        match self.string(name)? {
            None => Ok(0),
            Some(v) => parse_duration(&v).ok_or_else(|| {
                BuildError::parse(self.line, format!("{}: invalid duration {v:?} for --{name}", self.keyword))
            }),
        }
    }
}

/// Go's time.ParseDuration subset Docker uses for HEALTHCHECK: "30s", "1m30s", "500ms", "1h".
/// Returns nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    Some(total as i64)
}

fn err(node: &Node, msg: impl Into<String>) -> BuildError {
    BuildError::parse(node.start_line, msg)
}

fn exactly_one(node: &Node, kw: &str) -> Result<String, BuildError> {
    match &node.args {
        Args::Text(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(err(node, format!("{kw} requires exactly one argument"))),
    }
}

fn command(node: &Node) -> (bool, Vec<String>) {
    match &node.args {
        Args::Command { json, args } => (*json, args.clone()),
        _ => (false, Vec::new()),
    }
}

fn copy_spec(node: &Node, kw: &'static str, allowed: &[&str], buildkit: &[&str]) -> Result<CopySpec, BuildError> {
    let flags = Flags::new(node, kw, allowed, buildkit)?;
    let items = match &node.args {
        Args::List { items, .. } => items.clone(),
        _ => Vec::new(),
    };
    // With heredocs the destination may be the only argument.
    let heredoc_names: Vec<String> = node.heredocs.iter().map(|h| h.name.clone()).collect();
    let mut srcs: Vec<String> = Vec::new();
    let mut dest = None;
    let n = items.len();
    for (i, it) in items.into_iter().enumerate() {
        if i + 1 == n {
            dest = Some(it);
        } else if let Some(name) = it.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("<<") {
            let name = name.trim_start_matches('-').trim_matches(['\'', '"']);
            if !heredoc_names.iter().any(|h| h == name) {
                return Err(err(node, format!("{kw}: heredoc {name:?} has no content")));
            }
        } else {
            srcs.push(it);
        }
    }
    let dest = match dest {
        Some(d) if !srcs.is_empty() || !node.heredocs.is_empty() => d,
        _ => {
            return Err(err(
                node,
                format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined."),
            ))
        }
    };
    Ok(CopySpec {
        srcs,
        dest,
        from: flags.string("from")?,
        chown: flags.string("chown")?,
        chmod: flags.string("chmod")?,
        heredocs: node.heredocs.clone(),
    })
}

/// One node to one instruction (also used for ONBUILD triggers).
pub fn instruction(node: &Node) -> Result<Instruction, BuildError> {
    let kw = node.keyword.as_str();
    let no_flags = |k: &'static str| Flags::new(node, k, &[], &[]);
    Ok(match kw {
        "from" => {
            let flags = Flags::new(node, "FROM", &["platform"], &[])?;
            let items = match &node.args {
                Args::List { items, .. } => items.clone(),
                _ => Vec::new(),
            };
            let (image, name) = match items.as_slice() {
                [img] => (img.clone(), None),
                [img, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let lname = name.to_ascii_lowercase();
                    let ok = lname.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && lname.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                    if !ok {
                        return Err(err(
                            node,
                            format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    (img.clone(), Some(lname))
                }
                _ => return Err(err(node, "FROM requires either one or three arguments")),
            };
            Instruction::From { image, name, platform: flags.string("platform")? }
        }
        "run" => {
            Flags::new(node, "RUN", &[], &["mount", "network", "security"])?;
            let (json, args) = command(node);
            if args.is_empty() && node.heredocs.is_empty() {
                return Err(err(node, "RUN requires at least one argument"));
            }
            Instruction::Run { json, args, heredocs: node.heredocs.clone() }
        }
        "cmd" => {
            no_flags("CMD")?;
            let (json, args) = command(node);
            Instruction::Cmd { json, args }
        }
        "entrypoint" => {
            no_flags("ENTRYPOINT")?;
            let (json, args) = command(node);
            Instruction::Entrypoint { json, args }
        }
        "copy" => Instruction::Copy(copy_spec(node, "COPY", &["from", "chown", "chmod"], &["link", "parents", "exclude"])?),
        "add" => Instruction::Add(copy_spec(node, "ADD", &["chown", "chmod"], &["link", "checksum", "keep-git-dir", "exclude", "unpack"])?),
        "env" | "label" => {
            no_flags(if kw == "env" { "ENV" } else { "LABEL" })?;
            let pairs = match &node.args {
                Args::Pairs(p) => p.clone(),
                _ => Vec::new(),
            };
            if kw == "env" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "arg" => {
            no_flags("ARG")?;
            match &node.args {
                Args::Args(a) => {
                    for (name, _) in a {
                        if name.is_empty() {
                            return Err(err(node, "ARG names can not be blank"));
                        }
                    }
                    Instruction::Arg(a.clone())
                }
                _ => return Err(err(node, "ARG requires at least one argument")),
            }
        }
        "expose" => {
            no_flags("EXPOSE")?;
            match &node.args {
                Args::List { items, .. } if !items.is_empty() => Instruction::Expose(items.clone()),
                _ => return Err(err(node, "EXPOSE requires at least one argument")),
            }
        }
        "volume" => {
            no_flags("VOLUME")?;
            match &node.args {
                Args::List { items, .. } if !items.is_empty() => {
                    if items.iter().any(|v| v.trim().is_empty()) {
                        return Err(err(node, "VOLUME specified can not be an empty string"));
                    }
                    Instruction::Volume(items.clone())
                }
                _ => return Err(err(node, "VOLUME requires at least one argument")),
            }
        }
        "user" => {
            no_flags("USER")?;
            Instruction::User(exactly_one(node, "USER")?)
        }
        "workdir" => {
            no_flags("WORKDIR")?;
            Instruction::Workdir(exactly_one(node, "WORKDIR")?)
        }
        "stopsignal" => {
            no_flags("STOPSIGNAL")?;
            Instruction::StopSignal(exactly_one(node, "STOPSIGNAL")?)
        }
        "maintainer" => {
            no_flags("MAINTAINER")?;
            Instruction::Maintainer(exactly_one(node, "MAINTAINER")?)
        }
        "shell" => {
            no_flags("SHELL")?;
            match &node.args {
                Args::Command { json: true, args } if !args.is_empty() => Instruction::Shell(args.clone()),
                Args::Command { json: true, .. } => return Err(err(node, "SHELL requires at least one argument")),
                _ => return Err(err(node, "SHELL requires the arguments to be in JSON form")),
            }
        }
        "healthcheck" => {
            let flags = Flags::new(node, "HEALTHCHECK", &["interval", "timeout", "start-period", "start-interval", "retries"], &[])?;
            let (kind, json, args) = match &node.args {
                Args::Health { kind, json, args } => (kind.to_ascii_uppercase(), *json, args.clone()),
                _ => return Err(err(node, "HEALTHCHECK requires an argument")),
            };
            let mut h = Health::default();
            match kind.as_str() {
                "NONE" => {
                    if !args.is_empty() || !node.flags.is_empty() {
                        return Err(err(node, "HEALTHCHECK NONE takes no arguments"));
                    }
                    h.none = true;
                }
                "CMD" => {
                    if args.is_empty() || (args.len() == 1 && !json && args[0].trim().is_empty()) {
                        return Err(err(node, "Missing command after HEALTHCHECK CMD"));
                    }
                    h.json = json;
                    h.args = args;
                    for (name, field) in [("interval", &mut h.interval), ("timeout", &mut h.timeout), ("start-period", &mut h.start_period), ("start-interval", &mut h.start_interval)] {
                        let d = flags.duration(name)?;
                        if d != 0 && d < 1_000_000 {
                            return Err(err(node, format!("Interval {name:?} cannot be less than 1ms")));
                        }
                        *field = d;
                    }
                    h.retries = match flags.string("retries")? {
                        None => 0,
                        Some(r) => match r.parse::<i64>() {
                            Ok(n) if n >= 0 => n,
                            Ok(_) => return Err(err(node, "--retries cannot be negative")),
                            Err(_) => return Err(err(node, format!("invalid --retries value {r:?}"))),
                        },
                    };
                }
                other => return Err(err(node, format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"))),
            }
            Instruction::Healthcheck(h)
        }
        "onbuild" => {
            no_flags("ONBUILD")?;
            let Args::OnBuild(child) = &node.args else {
                return Err(err(node, "ONBUILD requires at least one argument"));
            };
            match child.keyword.as_str() {
                "onbuild" => return Err(err(node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
                "from" | "maintainer" => {
                    return Err(err(node, format!("{} isn't allowed as an ONBUILD trigger", child.keyword.to_ascii_uppercase())))
                }
                _ => {}
            }
            // Validate the trigger now, as Docker does.
            instruction(child)?;
            let orig = node.original.trim_start();
            let expr = orig.get(7..).map(str::trim_start).unwrap_or("").to_string();
            Instruction::OnBuild(expr)
        }
        other => {
            let mut msg = format!("unknown instruction: {}", node.original.split_whitespace().next().unwrap_or(other));
            if let Some(s) = suggest(other) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(err(node, msg));
        }
    })
}

/// The closest known keyword within two edits, for "did you mean".
fn suggest(word: &str) -> Option<&'static str> {
    fn dist(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    if word.len() > 64 {
        return None;
    }
    parser::KEYWORDS.iter().map(|k| (dist(word, k), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

/// Group a parsed Dockerfile into stages.
pub fn plan(df: &Dockerfile) -> Result<Plan, BuildError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &df.nodes {
        let inst = instruction(node)?;
        let step = Step { line: node.start_line, original: node.original.trim().to_string(), inst };
        match (&step.inst, stages.last_mut()) {
            (Instruction::From { name, .. }, _) => {
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                        return Err(BuildError::parse(node.start_line, format!("duplicate stage name {n:?}")));
                    }
                }
                stages.push(Stage { name: name.clone(), from: step, steps: Vec::new() });
            }
            (Instruction::Arg(_), None) => meta_args.push(step),
            (_, None) => return Err(BuildError::parse(node.start_line, "no build stage in current context")),
            (_, Some(stage)) => stage.steps.push(step),
        }
    }
    if stages.is_empty() {
        return Err(BuildError::parse(df.nodes.last().map(|n| n.end_line).unwrap_or(1), "no build stage in current context"));
    }
    Ok(Plan { meta_args, stages, escape: df.directives.escape, warnings: df.warnings.clone() })
}

/// Parse a Dockerfile text all the way to a plan.
pub fn parse_plan(text: &str) -> Result<Plan, BuildError> {
    plan(&parser::parse(text)?)
}

/// Parse one ONBUILD trigger or `docker commit --change` line into an instruction.
pub fn parse_line(text: &str, escape: char) -> Result<Step, BuildError> {
    let prefix = if escape == '`' { "# escape=`\n" } else { "" };
    let df = parser::parse(&format!("{prefix}{text}"))?;
    let node = df.nodes.first().ok_or_else(|| BuildError::invalid("empty instruction"))?;
    Ok(Step { line: node.start_line, original: node.original.trim().to_string(), inst: instruction(node)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_meta_args() {
        let p = parse_plan("ARG V=1\nFROM busybox:${V} AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n").unwrap();
        assert_eq!(p.meta_args.len(), 1);
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].name.as_deref(), Some("build"));
        assert_eq!(p.total_steps(), 5);
        assert_eq!(p.target_index("BUILD").unwrap(), 0);
        assert!(p.target_index("nope").unwrap_err().to_string().contains("failed to reach build target nope"));
        match &p.stages[1].steps[0].inst {
            Instruction::Copy(c) => {
                assert_eq!(c.from.as_deref(), Some("build"));
                assert_eq!(c.srcs, vec!["/out"]);
                assert_eq!(c.dest, "/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_carry_lines() {
        let e = parse_plan("FROM a\n\nFORM b\n").unwrap_err();
        assert_eq!(e.to_string(), "dockerfile parse error on line 3: unknown instruction: FORM (did you mean from?)");
        assert!(parse_plan("RUN x\nFROM a").unwrap_err().to_string().contains("line 1: no build stage"));
        assert!(parse_plan("FROM a\nCOPY onlyone").unwrap_err().to_string().contains("line 2: COPY requires at least two arguments"));
        assert!(parse_plan("FROM a b").unwrap_err().to_string().contains("FROM requires either one or three arguments"));
        assert!(parse_plan("FROM a AS 1x").unwrap_err().to_string().contains("invalid name for build stage"));
        assert!(parse_plan("FROM a\nRUN --mount=type=cache x").unwrap_err().to_string().contains("requires BuildKit"));
        assert!(parse_plan("FROM a\nCOPY --bogus a b").unwrap_err().to_string().contains("unknown flag: bogus"));
        assert!(parse_plan("FROM a\nSHELL sh -c").unwrap_err().to_string().contains("JSON form"));
        assert!(parse_plan("FROM a\nONBUILD ONBUILD RUN x").unwrap_err().to_string().contains("Chaining ONBUILD"));
        assert!(parse_plan("FROM a\nONBUILD FROM x").unwrap_err().to_string().contains("isn't allowed as an ONBUILD trigger"));
        assert!(parse_plan("FROM a\nHEALTHCHECK --interval=abc CMD x").unwrap_err().to_string().contains("invalid duration"));
        assert!(parse_plan("FROM a\nHEALTHCHECK NONE x").unwrap_err().to_string().contains("takes no arguments"));
        assert!(parse_plan("FROM a\nWORKDIR").unwrap_err().to_string().contains("WORKDIR requires exactly one argument"));
        assert!(parse_plan("FROM a AS x\nFROM b AS X").unwrap_err().to_string().contains("duplicate stage name"));
    }

    #[test]
    fn healthcheck_and_onbuild() {
        let p = parse_plan("FROM a\nHEALTHCHECK --interval=1m30s --retries=3 CMD [\"true\"]\nONBUILD   run echo x\n").unwrap();
        match &p.stages[0].steps[0].inst {
            Instruction::Healthcheck(h) => {
                assert_eq!(h.interval, 90_000_000_000);
                assert_eq!(h.retries, 3);
                assert!(h.json);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.stages[0].steps[1].inst, Instruction::OnBuild("run echo x".into()));
        let s = parse_line("RUN echo from trigger", '\\').unwrap();
        assert!(matches!(s.inst, Instruction::Run { .. }));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1h2m"), Some(3_720_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn copy_heredoc_only() {
        let p = parse_plan("FROM a\nCOPY <<EOF /x\nhello\nEOF\n").unwrap();
        match &p.stages[0].steps[0].inst {
            Instruction::Copy(c) => {
                assert!(c.srcs.is_empty());
                assert_eq!(c.dest, "/x");
                assert_eq!(c.heredocs[0].content, "hello\n");
            }
            other => panic!("{other:?}"),
        }
    }
}
