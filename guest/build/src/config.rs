//! The run config an image carries (Docker's `config` object) and the pure part of dispatch:
//! how each instruction changes it, what Docker writes in the image history for it, and what
//! filesystem work (if any) the engine must do. Build arguments follow Docker's rules: ARGs
//! before FROM are only visible in FROM lines unless redeclared; ENV wins over ARG.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::BuildError;
use crate::instructions::{CopySpec, Health, Instruction, Step};
use crate::shell::Lexer;

pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
/// Docker's default PATH for images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Build args every build accepts without an ARG (kept out of history, as Docker does).
pub const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
    "ALL_PROXY", "all_proxy",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Docker's image `config`: the fields a Dockerfile sets, plus anything else kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(rename = "ArgsEscaped", default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    #[serde(rename = "Volumes", default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_default")]
    pub on_build: Vec<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields Berth does not interpret (Hostname, Tty, ...), kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl RunConfig {
    pub fn shell(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
    }

    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    pub fn env_set(&mut self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        match self.env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key) {
            Some(e) => *e = kv,
            None => self.env.push(kv),
        }
    }
}

/// Go's `%q` of a string slice (`["a" "b c"]`), which is how Docker writes CMD/ENTRYPOINT in history.
pub fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the engine has to do for a step beyond changing the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Metadata only: commit the new config with an empty layer.
    None,
    /// Run `argv` in a container of the current image with `env`.
    Run { argv: Vec<String>, env: Vec<String> },
    /// COPY/ADD with sources, destination and flags expanded.
    Copy { add: bool, spec: CopySpec },
    /// WORKDIR: make sure the (absolute) directory exists.
    Mkdir(String),
}

/// The outcome of dispatching one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// Docker's `container_config.Cmd` for this step, which (with the rest of the config)
    /// keys the build cache; joined by spaces it is the history's `created_by`.
    /// For COPY/ADD the engine fills it in once it has hashed the sources.
    pub cmd: Vec<String>,
    pub action: Action,
}

impl Dispatched {
    pub fn created_by(&self) -> String {
        self.cmd.join(" ")
    }
}

/// One stage's evolving state.
#[derive(Debug, Clone)]
pub struct State {
    pub config: RunConfig,
    pub author: Option<String>,
    lexer: Lexer,
    /// `--build-arg` values from the client.
    user_args: BTreeMap<String, Option<String>>,
    /// Values of the ARGs before FROM.
    meta_args: BTreeMap<String, Option<String>>,
    /// ARGs declared in this stage, with their values.
    declared: Vec<(String, Option<String>)>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// Evaluate the ARGs before the first FROM; returns their values (for FROM lines and for
/// stages that redeclare them).
pub fn meta_arg_values(
    steps: &[Step],
    user_args: &BTreeMap<String, Option<String>>,
    escape: char,
) -> Result<BTreeMap<String, Option<String>>, BuildError> {
    let lexer = Lexer::new(escape);
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for s in steps {
        if let Instruction::Arg(args) = &s.inst {
            for (name, default) in args {
                let env: Vec<String> = out.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
                let def = match default {
                    Some(d) => Some(lexer.process_word(d, &env).map_err(|m| BuildError::parse(s.line, m))?),
                    None => None,
                };
                let v = user_args.get(name).cloned().flatten().or(def);
                out.insert(name.clone(), v);
            }
        }
    }
    Ok(out)
}

/// Expand a FROM line's image name with the meta args.
pub fn expand_from(image: &str, meta: &BTreeMap<String, Option<String>>, escape: char, line: usize) -> Result<String, BuildError> {
    let env: Vec<String> = meta.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
    let out = Lexer::new(escape).process_word(image, &env).map_err(|m| BuildError::parse(line, m))?;
    if out.trim().is_empty() {
        return Err(BuildError::parse(line, format!("base name ({image}) should not be blank")));
    }
    Ok(out)
}

/// A port spec as Docker normalises it: "80" -> "80/tcp", ranges expanded.
pub fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // "ip:port" forms are not allowed in EXPOSE.
    let num = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid containerPort: {s}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo {
        return Err(format!("invalid range specified for container port: {ports}"));
    }
    if hi - lo > 10_000 {
        return Err(format!("port range {ports} is too large"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
    "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
    "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Docker's signal check for STOPSIGNAL: a name (with or without SIG), RTMIN+n, or 1..64.
pub fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX")
}

/// Lexically clean an absolute path (Go's path.Clean for "/"-rooted paths).
pub fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn health_comment(h: &HealthConfig) -> String {
    let d = |n: i64| format!("\"{}s\"", n / 1_000_000_000);
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} '\\x{:02x}'}}",
        go_quote_list(&h.test),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries.clamp(0, 255)
    )
}

impl State {
    /// A stage starting from `base` (the FROM image's config, or empty for scratch).
    pub fn new(
        mut base: RunConfig,
        escape: char,
        user_args: BTreeMap<String, Option<String>>,
        meta_args: BTreeMap<String, Option<String>>,
        scratch: bool,
    ) -> State {
        if scratch && base.env_get("PATH").is_none() {
            base.env.push(DEFAULT_PATH.to_string());
        }
        // ONBUILD triggers run once, in the image built FROM this one; they are not inherited.
        State { config: base, author: None, lexer: Lexer::new(escape), user_args, meta_args, declared: Vec::new(), cmd_set: false }
    }

    /// Build args visible now: (name, value) for declared ones with a value.
    fn arg_values(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in &self.declared {
            if let Some(val) = val {
                v.retain(|(n, _)| n != k);
                v.push((k.clone(), val.clone()));
            }
        }
        v
    }

    /// The environment variables are expanded against: ENV first, then build args.
    pub fn expansion_env(&self) -> Vec<String> {
        let mut env = self.config.env.clone();
        for (k, v) in self.arg_values() {
            if self.config.env_get(&k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        for p in PREDEFINED_ARGS {
            if let Some(Some(v)) = self.user_args.get(*p) {
                if self.config.env_get(p).is_none() && !self.declared.iter().any(|(k, _)| k == p) {
                    env.push(format!("{p}={v}"));
                }
            }
        }
        env
    }

    pub fn expand(&self, word: &str, line: usize) -> Result<String, BuildError> {
        self.lexer.process_word(word, &self.expansion_env()).map_err(|m| BuildError::parse(line, m))
    }

    /// Names of build args this stage declared (for the "not consumed" warning).
    pub fn declared_names(&self) -> impl Iterator<Item = &str> {
        self.declared.iter().map(|(k, _)| k.as_str())
    }

    fn nop(&self, comment: String) -> Vec<String> {
        let mut cmd = self.config.shell();
        cmd.push("#(nop) ".into());
        cmd.push(comment);
        cmd
    }

    /// The `#(nop)` container_config Cmd for a COPY/ADD once the sources are hashed.
    pub fn copy_cmd(&self, add: bool, chown: Option<&str>, src_hash: &str, dest: &str) -> Vec<String> {
        let chown = chown.map(|c| format!("--chown={c} ")).unwrap_or_default();
        self.nop(format!("{} {chown}{src_hash} in {dest} ", if add { "ADD" } else { "COPY" }))
    }

    /// The command a shell-form instruction runs.
    fn shell_form(&self, json: bool, args: &[String]) -> Vec<String> {
        if json {
            args.to_vec()
        } else {
            let mut v = self.config.shell();
            v.extend(args.iter().cloned());
            v
        }
    }

    /// Apply one step (anything but FROM): change the config, return Docker's history command
    /// and the filesystem action.
    pub fn dispatch(&mut self, step: &Step) -> Result<Dispatched, BuildError> {
        let line = step.line;
        let perr = |m: String| BuildError::parse(line, m);
        let d = |cmd: Vec<String>| Ok(Dispatched { cmd, action: Action::None });
        match &step.inst {
            Instruction::From { .. } => Err(BuildError::invalid("FROM is handled by the executor")),
            Instruction::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, line)?;
                    if k.is_empty() {
                        return Err(perr("ENV names can not be blank".into()));
                    }
                    let v = self.expand(v, line)?;
                    self.config.env_set(&k, &v);
                    shown.push(format!("{k}={v}"));
                }
                d(self.nop(format!("ENV {}", shown.join(" "))))
            }
            Instruction::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, line)?;
                    if k.is_empty() {
                        return Err(perr("LABEL names can not be blank".into()));
                    }
                    let v = self.expand(v, line)?;
                    shown.push(format!("{k}={v}"));
                    self.config.labels.insert(k, v);
                }
                d(self.nop(format!("LABEL {}", shown.join(" "))))
            }
            Instruction::Arg(args) => {
                let mut shown = Vec::new();
                for (name, default) in args {
                    let def = match default {
                        Some(dv) => Some(self.expand(dv, line)?),
                        None => None,
                    };
                    let value = match self.user_args.get(name) {
                        Some(Some(v)) => Some(v.clone()),
                        _ => def.clone().or_else(|| self.meta_args.get(name).cloned().flatten()),
                    };
                    self.declared.retain(|(k, _)| k != name);
                    self.declared.push((name.clone(), value));
                    shown.push(match &def {
                        Some(dv) => format!("{name}={dv}"),
                        None => name.clone(),
                    });
                }
                d(self.nop(format!("ARG {}", shown.join(" "))))
            }
            Instruction::Cmd { json, args } => {
                let cmd = self.shell_form(*json, args);
                self.config.cmd = Some(cmd.clone());
                self.config.args_escaped = false;
                self.cmd_set = true;
                d(self.nop(format!("CMD {}", go_quote_list(&cmd))))
            }
            Instruction::Entrypoint { json, args } => {
                let ep = if !*json && args.iter().all(|a| a.trim().is_empty()) {
                    Vec::new()
                } else {
                    self.shell_form(*json, args)
                };
                self.config.entrypoint = if ep.is_empty() { None } else { Some(ep.clone()) };
                if !self.cmd_set {
                    self.config.cmd = None;
                }
                d(self.nop(format!("ENTRYPOINT {}", go_quote_list(&ep))))
            }
            Instruction::Expose(items) => {
                let mut ports = Vec::new();
                for it in items {
                    let e = self.expand(it, line)?;
                    for word in e.split_whitespace() {
                        for p in parse_ports(word).map_err(perr)? {
                            self.config.exposed_ports.insert(p.clone(), serde_json::json!({}));
                            ports.push(p);
                        }
                    }
                }
                ports.sort();
                d(self.nop(format!("EXPOSE {}", ports.join(" "))))
            }
            Instruction::Volume(items) => {
                let mut vols = Vec::new();
                for it in items {
                    let v = self.expand(it, line)?;
                    let v = v.trim().to_string();
                    if v.is_empty() {
                        return Err(perr("VOLUME specified can not be an empty string".into()));
                    }
                    self.config.volumes.insert(v.clone(), serde_json::json!({}));
                    vols.push(v);
                }
                d(self.nop(format!("VOLUME [{}]", vols.join(" "))))
            }
            Instruction::User(u) => {
                let u = self.expand(u, line)?;
                self.config.user = u.clone();
                d(self.nop(format!("USER {u}")))
            }
            Instruction::Workdir(w) => {
                let w = self.expand(w, line)?;
                let base = if self.config.working_dir.is_empty() { "/".to_string() } else { self.config.working_dir.clone() };
                let dir = if w.starts_with('/') { clean_abs(&w) } else { clean_abs(&format!("{base}/{w}")) };
                self.config.working_dir = dir.clone();
                Ok(Dispatched { cmd: self.nop(format!("WORKDIR {dir}")), action: Action::Mkdir(dir) })
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(s, line)?;
                if !valid_signal(&s) {
                    return Err(perr(format!("Invalid signal: {s}")));
                }
                self.config.stop_signal = Some(s.clone());
                d(self.nop(format!("STOPSIGNAL {s}")))
            }
            Instruction::Healthcheck(h) => {
                let hc = health_config(h, &self.config.shell());
                let comment = health_comment(&hc);
                self.config.healthcheck = Some(hc);
                d(self.nop(comment))
            }
            Instruction::Shell(sh) => {
                self.config.shell = Some(sh.clone());
                d(self.nop(format!("SHELL {}", go_quote_list(sh))))
            }
            Instruction::OnBuild(expr) => {
                self.config.on_build.push(expr.clone());
                d(self.nop(format!("ONBUILD {expr}")))
            }
            Instruction::Maintainer(m) => {
                let m = self.expand(m, line)?;
                self.author = Some(m.clone());
                d(self.nop(format!("MAINTAINER {m}")))
            }
            Instruction::Run { json, args, heredocs } => {
                let mut argv = if !heredocs.is_empty() {
                    // Only `RUN <<EOF` (the heredoc is the whole command) is supported: its
                    // content is the script, as BuildKit runs it.
                    let only = !*json && args.len() == 1 && heredocs.len() == 1 && {
                        let t = args[0].trim();
                        t.starts_with("<<") && t.trim_start_matches("<<").trim_start_matches('-').trim_matches(['\'', '"']) == heredocs[0].name
                    };
                    if !only {
                        return Err(perr("RUN with a heredoc is only supported as `RUN <<EOF` (the heredoc as the whole script)".into()));
                    }
                    if heredocs[0].content.starts_with("#!") {
                        return Err(perr("RUN heredoc scripts with a #! line are not supported by Berth yet".into()));
                    }
                    let mut v = self.config.shell();
                    v.push(heredocs[0].content.clone());
                    v
                } else {
                    self.shell_form(*json, args)
                };
                if argv.is_empty() {
                    return Err(perr("RUN requires at least one argument".into()));
                }
                let mut env = self.config.env.clone();
                let args = self.arg_values();
                let mut shown: Vec<String> = Vec::new();
                for (k, v) in &args {
                    if self.config.env_get(k).is_none() {
                        env.push(format!("{k}={v}"));
                        shown.push(format!("{k}={v}"));
                    }
                }
                for p in PREDEFINED_ARGS {
                    if let Some(Some(v)) = self.user_args.get(*p) {
                        if self.config.env_get(p).is_none() && !args.iter().any(|(k, _)| k == p) {
                            env.push(format!("{p}={v}"));
                        }
                    }
                }
                shown.sort();
                let mut cmd = Vec::new();
                if !shown.is_empty() {
                    cmd.push(format!("|{}", shown.len()));
                    cmd.extend(shown);
                }
                cmd.append(&mut argv.clone());
                argv.shrink_to_fit();
                Ok(Dispatched { cmd, action: Action::Run { argv, env } })
            }
            Instruction::Copy(spec) | Instruction::Add(spec) => {
                let add = matches!(step.inst, Instruction::Add(_));
                let mut s = spec.clone();
                s.srcs = spec.srcs.iter().map(|x| self.expand(x, line)).collect::<Result<_, _>>()?;
                s.dest = self.expand(&spec.dest, line)?;
                s.chown = spec.chown.as_ref().map(|c| self.expand(c, line)).transpose()?;
                s.chmod = spec.chmod.as_ref().map(|c| self.expand(c, line)).transpose()?;
                s.from = spec.from.as_ref().map(|c| self.expand(c, line)).transpose()?;
                if let Some(m) = &s.chmod {
                    if u32::from_str_radix(m, 8).map(|v| v > 0o7777).unwrap_or(true) {
                        return Err(perr(format!("invalid --chmod value {m:?}: expected an octal mode such as 0755")));
                    }
                }
                for h in &mut s.heredocs {
                    if h.expand {
                        h.content = self.expand_heredoc(&h.content, line)?;
                    }
                }
                if s.dest.is_empty() {
                    return Err(perr(format!("{} destination can not be empty", if add { "ADD" } else { "COPY" })));
                }
                Ok(Dispatched { cmd: Vec::new(), action: Action::Copy { add, spec: s } })
            }
        }
    }

    /// Heredoc content expands `$VAR` like a double-quoted string, line by line.
    fn expand_heredoc(&self, content: &str, line: usize) -> Result<String, BuildError> {
        let env = self.expansion_env();
        let quoted = format!("\"{}\"", content.replace('\\', "\\\\").replace('"', "\\\""));
        self.lexer.process_word(&quoted, &env).map_err(|m| BuildError::parse(line, m))
    }

    /// The working directory a relative COPY destination is taken against.
    pub fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".into()
        } else {
            self.config.working_dir.clone()
        }
    }
}

fn health_config(h: &Health, shell: &[String]) -> HealthConfig {
    if h.none {
        return HealthConfig { test: vec!["NONE".into()], ..Default::default() };
    }
    let _ = shell;
    let test = if h.json {
        let mut t = vec!["CMD".to_string()];
        t.extend(h.args.iter().cloned());
        t
    } else {
        vec!["CMD-SHELL".to_string(), h.args.join(" ")]
    };
    HealthConfig {
        test,
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        start_interval: h.start_interval,
        retries: h.retries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::parse_plan;

    fn run(df: &str, args: &[(&str, &str)]) -> (State, Vec<Dispatched>) {
        let p = parse_plan(df).unwrap();
        let user: BTreeMap<String, Option<String>> = args.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect();
        let meta = meta_arg_values(&p.meta_args, &user, p.escape).unwrap();
        let mut st = State::new(RunConfig::default(), p.escape, user, meta, true);
        let mut out = Vec::new();
        for s in &p.stages[0].steps {
            out.push(st.dispatch(s).unwrap());
        }
        (st, out)
    }

    #[test]
    fn env_and_history() {
        let (st, d) = run("FROM scratch\nENV A=1 B=\"x y\"\nENV C $A-$B\nLABEL k=$C\n", &[]);
        assert_eq!(st.config.env_get("C"), Some("1-x y"));
        assert_eq!(st.config.labels["k"], "1-x y");
        assert_eq!(d[0].created_by(), "/bin/sh -c #(nop)  ENV A=1 B=x y");
        assert_eq!(d[0].action, Action::None);
    }

    #[test]
    fn args_follow_docker_rules() {
        let df = "ARG BASE=busybox\nARG V\nFROM $BASE\nARG V\nARG W=dflt\nENV W=envwins\nRUN echo $V $W\n";
        let p = parse_plan(df).unwrap();
        let user: BTreeMap<String, Option<String>> = [("V".to_string(), Some("2".to_string()))].into();
        let meta = meta_arg_values(&p.meta_args, &user, '\\').unwrap();
        assert_eq!(expand_from("$BASE", &meta, '\\', 3).unwrap(), "busybox");
        let mut st = State::new(RunConfig::default(), '\\', user, meta, false);
        let mut last = None;
        for s in &p.stages[0].steps {
            last = Some(st.dispatch(s).unwrap());
        }
        let last = last.unwrap();
        // ENV W shadows ARG W: only V is a build arg in the history and the environment.
        assert_eq!(last.cmd, vec!["|1", "V=2", "/bin/sh", "-c", "echo $V $W"]);
        match last.action {
            Action::Run { argv, env } => {
                assert_eq!(argv, vec!["/bin/sh", "-c", "echo $V $W"]);
                assert!(env.contains(&"V=2".to_string()));
                assert!(env.contains(&"W=envwins".to_string()));
            }
            other => panic!("{other:?}"),
        }
        assert!(expand_from("${NOPE}", &BTreeMap::new(), '\\', 1).unwrap_err().to_string().contains("should not be blank"));
    }

    #[test]
    fn cmd_entrypoint_shell() {
        let (st, d) = run("FROM scratch\nCMD echo hi\nENTRYPOINT [\"/e\"]\nSHELL [\"/bin/bash\", \"-c\"]\nCMD x\n", &[]);
        assert_eq!(d[0].created_by(), r#"/bin/sh -c #(nop)  CMD ["/bin/sh" "-c" "echo hi"]"#);
        assert_eq!(st.config.entrypoint, Some(vec!["/e".to_string()]));
        assert_eq!(st.config.cmd, Some(vec!["/bin/bash".to_string(), "-c".into(), "x".into()]));
        // ENTRYPOINT without an earlier CMD in the stage clears an inherited CMD.
        let base = RunConfig { cmd: Some(vec!["sh".into()]), ..Default::default() };
        let p = parse_plan("FROM x\nENTRYPOINT [\"/e\"]").unwrap();
        let mut st = State::new(base, '\\', BTreeMap::new(), BTreeMap::new(), false);
        st.dispatch(&p.stages[0].steps[0]).unwrap();
        assert_eq!(st.config.cmd, None);
    }

    #[test]
    fn workdir_expose_volume_signal_health() {
        let (st, d) = run(
            "FROM scratch\nWORKDIR /a\nWORKDIR b/../c\nEXPOSE 80 53/udp 8000-8001\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGUSR1\nHEALTHCHECK --retries=2 CMD true\n",
            &[],
        );
        assert_eq!(d[1].action, Action::Mkdir("/a/c".into()));
        assert_eq!(st.config.working_dir, "/a/c");
        assert_eq!(st.config.exposed_ports.keys().cloned().collect::<Vec<_>>(), vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert!(st.config.volumes.contains_key("/data"));
        assert_eq!(st.config.stop_signal.as_deref(), Some("SIGUSR1"));
        let h = st.config.healthcheck.unwrap();
        assert_eq!(h.test, vec!["CMD-SHELL", "true"]);
        assert_eq!(h.retries, 2);
        let p = parse_plan("FROM x\nSTOPSIGNAL NOPE").unwrap();
        let mut st = State::new(RunConfig::default(), '\\', BTreeMap::new(), BTreeMap::new(), false);
        assert!(st.dispatch(&p.stages[0].steps[0]).unwrap_err().to_string().contains("Invalid signal"));
        assert!(parse_ports("x").is_err());
        assert!(parse_ports("80/quic").is_err());
    }

    #[test]
    fn copy_expands_and_run_heredoc() {
        let (_, d) = run("FROM scratch\nENV D=/dst\nCOPY --chown=1:2 --chmod=0640 a $D/\nRUN <<EOF\necho hi\nEOF\n", &[]);
        match &d[1].action {
            Action::Copy { add: false, spec } => {
                assert_eq!(spec.dest, "/dst/");
                assert_eq!(spec.chown.as_deref(), Some("1:2"));
            }
            other => panic!("{other:?}"),
        }
        match &d[2].action {
            Action::Run { argv, .. } => assert_eq!(argv, &vec!["/bin/sh".to_string(), "-c".into(), "echo hi\n".into()]),
            other => panic!("{other:?}"),
        }
        let p = parse_plan("FROM x\nCOPY --chmod=999 a b").unwrap();
        let mut st = State::new(RunConfig::default(), '\\', BTreeMap::new(), BTreeMap::new(), false);
        assert!(st.dispatch(&p.stages[0].steps[0]).is_err());
    }

    #[test]
    fn config_json_round_trip_keeps_unknown_fields() {
        let v = serde_json::json!({"Env": ["A=1"], "Cmd": ["sh"], "Hostname": "", "Labels": null, "Tty": false});
        let c: RunConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["Tty"], false);
        assert_eq!(back["Env"][0], "A=1");
    }
}
