//! `POST /build`: Docker's classic builder, which the docker CLI uses when BuildKit is not
//! available (berthd's `/_ping` says `Builder-Version: 1`).
//!
//! The request body is the build context tar. It is unpacked with berth-image's safe unpacker
//! (no path leaves the context directory, bombs are bounded), `.dockerignore` is applied, and
//! the Dockerfile is parsed by `berth-build` before any output: a parse error is an HTTP 400
//! with the Dockerfile line. Then each step streams `{"stream": ...}` lines:
//! - metadata steps (ENV, LABEL, CMD, ...) commit a new config with an empty layer;
//! - COPY/ADD/WORKDIR mount an overlay of the current image (the same bundle code as
//!   containers), write into it with root-confined paths, and turn the upper dir into a layer;
//! - RUN creates a real container (the same create/start/shim/runc path as `docker run`),
//!   streams its output, and turns its upper dir into a layer.
//!
//! Every step's result is an image whose parent is the previous one, as in Docker; the cache
//! is a lookup among the parent's children for one with the same `container_config` (whose
//! Cmd carries the instruction and, for COPY/ADD, the sources' content checksums).
//! Intermediate containers and mounts are removed on success, on failure and when the client
//! goes away; a build cut short by a crash leaves only tmp/ debris and intermediate images.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_build::config::{self as bcfg, Action, RunConfig, State};
use berth_build::context::{self as bctx, CopyOptions, Root};
use berth_build::instructions::{self, CopySpec, Instruction, Plan, Step};
use berth_image::{Digest, ImageRecord, Reference};
use berth_runtime::bundle::{Bundle, SysMounter};
use bollard_stubs::models::{ContainerConfig, HostConfig};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::commit::{self, NewImage};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http_util::{stream_body, Body, Query};

/// Largest Dockerfile / .dockerignore read from a context.
const MAX_DOCKERFILE: u64 = 4 << 20;
/// Default bound on the unpacked build context (berthd's --max-build-context overrides).
pub const DEFAULT_MAX_CONTEXT_BYTES: u64 = 16 << 30;
/// Entries in a build context.
const MAX_CONTEXT_ENTRIES: u64 = 1_000_000;

fn rand_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    hex::encode(b)
}

fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

/// Output lines to the client. A send fails once the client is gone. With `q=1` the step
/// output is held back (and sent only if the build fails), as Docker does.
#[derive(Clone)]
struct Out(mpsc::Sender<Value>, Option<Arc<std::sync::Mutex<String>>>);

/// The build was cancelled because the client disconnected.
const CANCELLED: &str = "build cancelled: the client went away";

impl Out {
    async fn stream(&self, s: impl Into<String>) -> Result<(), ApiError> {
        if let Some(buf) = &self.1 {
            buf.lock().expect("quiet buffer").push_str(&s.into());
            return if self.gone() { Err(ApiError::internal(CANCELLED)) } else { Ok(()) };
        }
        self.0.send(json!({ "stream": s.into() })).await.map_err(|_| ApiError::internal(CANCELLED))
    }
    fn blocking_stream(&self, s: String) -> bool {
        if let Some(buf) = &self.1 {
            buf.lock().expect("quiet buffer").push_str(&s);
            return !self.gone();
        }
        self.0.blocking_send(json!({ "stream": s })).is_ok()
    }
    fn gone(&self) -> bool {
        self.0.is_closed()
    }
}

/// Removes a directory tree when dropped (the context, step scratch dirs).
struct TempTree(PathBuf);
impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpack the (possibly compressed) context tar into `dir`, bounded. Blocking.
fn unpack_context(r: impl Read, dir: &Path, max_bytes: u64) -> Result<(), ApiError> {
    let mut r = std::io::BufReader::with_capacity(256 * 1024, r);
    let head = std::io::BufRead::fill_buf(&mut r).map_err(|e| ApiError::bad(format!("reading the build context: {e}")))?.to_vec();
    let reader: Box<dyn Read> = match berth_image::Compression::detect(&head) {
        berth_image::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        berth_image::Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r).map_err(ApiError::internal)?),
        berth_image::Compression::None => {
            if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
                return Err(ApiError::bad("bzip2 and xz build contexts are not supported by Berth; send a plain or gzip tar"));
            }
            let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
            if !is_tar && !head.is_empty() {
                // `docker build - < Dockerfile`: the body is the Dockerfile itself, no context.
                let mut text = Vec::new();
                (&mut r).take(MAX_DOCKERFILE + 1).read_to_end(&mut text).map_err(|e| ApiError::bad(format!("reading the Dockerfile: {e}")))?;
                if text.len() as u64 > MAX_DOCKERFILE {
                    return Err(ApiError::bad("the build context is neither a tar archive nor a Dockerfile"));
                }
                std::fs::write(dir.join("Dockerfile"), text).map_err(ApiError::internal)?;
                return Ok(());
            }
            Box::new(r)
        }
    };
    if head.is_empty() {
        return Ok(());
    }
    // Layer-strict names (no absolute paths, no `..`, no links out), but `.wh.` files are
    // ordinary context files here.
    let limits = berth_image::unpack::UnpackLimits { max_bytes, max_entries: MAX_CONTEXT_ENTRIES };
    let opts = berth_image::unpack::ExtractOptions { whiteouts: false, root_metadata: false, ..berth_image::unpack::ExtractOptions::layer(limits) };
    let fd: std::os::fd::OwnedFd = std::fs::File::open(dir).map_err(ApiError::internal)?.into();
    berth_image::unpack::extract_at(reader, fd, opts).map_err(|e| ApiError::bad(format!("error processing the build context: {e}")))?;
    Ok(())
}

/// What the query string of `POST /build` asks for, checked before the context is read (so a
/// bad request is refused without unpacking anything). Pure: fuzzed in `guest/engine/fuzz`.
#[derive(Debug)]
pub struct BuildOptions {
    pub tags: Vec<Reference>,
    /// The Dockerfile's path inside the context (cleaned; never outside it).
    pub dockerfile: String,
    pub user_args: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, Option<String>>,
    pub target: Option<String>,
    pub nocache: bool,
    pub pull: bool,
    pub quiet: bool,
    pub network_mode: Option<String>,
}

/// Parse and validate the build query.
pub fn parse_options(q: &Query) -> Result<BuildOptions, ApiError> {
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad("building from a remote context (git or URL) is not supported by Berth yet"));
    }
    if q.get("version") == Some("2") {
        return Err(ApiError::bad("BuildKit is not supported by Berth; the classic builder (version 1) is"));
    }
    let mut tags = Vec::new();
    for t in q.all("t") {
        let r = Reference::parse(t).map_err(|err| ApiError::bad(format!("invalid tag {t:?}: {err}")))?;
        if r.digest.is_some() {
            return Err(ApiError::bad(format!("invalid tag {t:?}: a tag cannot contain a digest")));
        }
        tags.push(if r.tag.is_some() { r } else { r.with_tag("latest")? });
    }
    let dockerfile = q.get("dockerfile").filter(|d| !d.is_empty()).unwrap_or("Dockerfile");
    let dockerfile = bctx::source_path(dockerfile, "Dockerfile")
        .map_err(|_| ApiError::bad(format!("the Dockerfile ({dockerfile}) must be within the build context")))?;
    Ok(BuildOptions {
        tags,
        dockerfile,
        user_args: json_map(q, "buildargs")?,
        labels: json_map(q, "labels")?,
        target: q.get("target").filter(|t| !t.is_empty()).map(str::to_string),
        nocache: q.bool("nocache")?,
        pull: q.bool("pull")?,
        quiet: q.bool("q")?,
        network_mode: q.get("networkmode").filter(|n| !n.is_empty() && *n != "default").map(str::to_string),
    })
}

/// Parse `buildargs`/`labels` JSON query values (`{"k":"v"}`, values may be null). `null` is
/// no map at all: Go clients send it for a nil map (moby's own client in `ImageBuild`).
fn json_map(q: &Query, k: &str) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    match q.get(k).filter(|v| !v.is_empty()) {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_str::<Option<BTreeMap<String, Option<String>>>>(v)
            .map(Option::unwrap_or_default)
            .map_err(|e| ApiError::bad(format!("invalid {k} JSON: {e}"))),
    }
}

/// Credentials for pulling `registry` from the X-Registry-Config header (a base64 JSON map
/// of registry to auth config). Anything unreadable means anonymous.
pub fn registry_auth(header: Option<&str>, registry: &str) -> berth_registry::Auth {
    use base64::Engine as _;
    let Some(h) = header else { return berth_registry::Auth::Anonymous };
    let dec = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h.trim()))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim()));
    let Ok(bytes) = dec else { return berth_registry::Auth::Anonymous };
    let Ok(map) = serde_json::from_slice::<BTreeMap<String, Value>>(&bytes) else { return berth_registry::Auth::Anonymous };
    for (k, v) in map {
        let host = k.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or("").to_string();
        if host == registry || (registry == "docker.io" && host.contains("docker.io")) {
            if let Ok(c) = berth_registry::parse_auth_config_json(v.to_string().as_bytes()) {
                return c.auth;
            }
        }
    }
    berth_registry::Auth::Anonymous
}

/// Everything a build needs after the request is read.
struct Job {
    e: Arc<Engine>,
    out: Out,
    plan: Plan,
    target: usize,
    tags: Vec<Reference>,
    nocache: bool,
    pull: bool,
    network_mode: Option<String>,
    user_args: BTreeMap<String, Option<String>>,
    registry_config: Option<String>,
    context: PathBuf,
    /// Scratch space on the store's filesystem for step upper dirs.
    work: PathBuf,
    quiet: bool,
}

/// An image a step can start from: None is an empty `FROM scratch` with no commit yet.
#[derive(Clone)]
struct Cur {
    rec: Option<ImageRecord>,
    config: Value,
}

impl Cur {
    fn id(&self) -> Option<Digest> {
        self.rec.as_ref().map(|r| r.id.clone())
    }
    fn run_config(&self) -> RunConfig {
        serde_json::from_value(self.config["config"].clone()).unwrap_or_default()
    }
}

/// POST /build
pub async fn build(e: &Arc<Engine>, req: Request<Incoming>, q: &Query) -> Result<Response<Body>, ApiError> {
    let BuildOptions { tags, dockerfile: df_rel, user_args, labels, target, nocache, pull, quiet, network_mode } = parse_options(q)?;
    let registry_config = req.headers().get("X-Registry-Config").and_then(|v| v.to_str().ok()).map(str::to_string);
    let max_bytes = e.config.build_context_max_bytes;

    // The context, unpacked into the store's tmp dir (wiped if berthd dies).
    let dir = e.store.tmp_dir().join(format!("build-{}", rand_hex(8)));
    std::fs::create_dir_all(dir.join("context")).map_err(ApiError::internal)?;
    let guard = TempTree(dir.clone());
    let ctx = dir.join("context");
    let ctx2 = ctx.clone();
    crate::images::body_reader(req).consume(move |reader| unpack_context(reader, &ctx2, max_bytes)).await?;

    // Dockerfile and .dockerignore, then drop what .dockerignore excludes.
    let ctx3 = ctx.clone();
    let df_rel2 = df_rel.clone();
    let text = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let root = Root::open(&ctx3).map_err(ApiError::internal)?;
        let text = bctx::read_file(&root, &df_rel2, MAX_DOCKERFILE)
            .map_err(|err| ApiError::bad(format!("reading the Dockerfile: {err}")))?
            .ok_or_else(|| ApiError::bad(format!("Cannot locate specified Dockerfile: {df_rel2}")))?;
        let ignore = bctx::read_file(&root, ".dockerignore", MAX_DOCKERFILE).map_err(ApiError::internal)?;
        if let Some(ig) = ignore {
            let m = berth_build::ignore::Matcher::parse(&String::from_utf8_lossy(&ig)).map_err(|err| ApiError::bad(err.to_string()))?;
            if !m.is_empty() {
                let paths = bctx::walk_paths(&root, MAX_CONTEXT_ENTRIES as usize).map_err(ApiError::internal)?;
                // Without exception patterns an excluded directory goes whole; with them only
                // excluded files go (an exception may keep something below the directory).
                let wholesale = !m.has_exceptions();
                let mut removed: Vec<String> = Vec::new();
                for (p, is_dir) in paths {
                    if removed.iter().any(|r| p.starts_with(&format!("{r}/"))) {
                        continue;
                    }
                    if m.excluded(&p) && (wholesale || !is_dir) {
                        bctx::remove(&root, &p).map_err(ApiError::internal)?;
                        removed.push(p);
                    }
                }
            }
        }
        String::from_utf8(text).map_err(|_| ApiError::bad("the Dockerfile is not valid UTF-8"))
    })
    .await??;

    let mut plan = instructions::parse_plan(&text).map_err(|err| ApiError::bad(err.to_string()))?;
    let target = match target.as_deref() {
        Some(t) => plan.target_index(t).map_err(|err| ApiError::bad(err.to_string()))?,
        None => plan.stages.len() - 1,
    };
    // `--label` becomes a LABEL step at the end of the target stage, as in Docker.
    let labels: Vec<(String, String)> = labels.into_iter().map(|(k, v)| (k, quote(&v.unwrap_or_default()))).collect();
    if !labels.is_empty() {
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        plan.stages[target].steps.push(Step { line: 0, original: format!("LABEL {}", shown.join(" ")), inst: Instruction::Label(labels) });
    }
    let (tx, rx) = mpsc::channel::<Value>(256);
    let job = Job {
        e: Arc::clone(e),
        out: Out(tx.clone(), quiet.then(|| Arc::new(std::sync::Mutex::new(String::new())))),
        plan,
        target,
        tags,
        nocache,
        pull,
        network_mode,
        user_args,
        registry_config,
        context: ctx,
        work: dir.clone(),
        quiet,
    };
    tokio::spawn(async move {
        let _guard = guard;
        let out = job.out.clone();
        match job.run().await {
            Ok(_) => {}
            Err((msg, code)) => {
                if msg != CANCELLED {
                    tracing::info!("build failed: {msg}");
                }
                if let Some(buf) = &out.1 {
                    let text = std::mem::take(&mut *buf.lock().expect("quiet buffer"));
                    let _ = out.0.send(json!({ "stream": text })).await;
                }
                let mut err = json!({ "errorDetail": { "message": msg }, "error": msg });
                if let Some(c) = code {
                    err["errorDetail"]["code"] = json!(c);
                }
                let _ = out.0.send(err).await;
            }
        }
    });
    let mut rx = rx;
    let s = async_stream::stream! {
        while let Some(v) = rx.recv().await {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            b.push(b'\n');
            yield Ok::<_, std::io::Error>(Bytes::from(b));
        }
    };
    let mut r = Response::new(stream_body(s));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// A value as a double-quoted Dockerfile word (for `--label`).
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$"))
}

type StepErr = (String, Option<i64>);

fn fail(e: impl std::fmt::Display) -> StepErr {
    (e.to_string(), None)
}

impl Job {
    async fn run(self) -> Result<Digest, StepErr> {
        let total = self.plan.meta_args.len()
            + self.plan.stages[..=self.target].iter().map(|s| 1 + s.steps.len()).sum::<usize>();
        let mut n = 0usize;
        let meta = bcfg::meta_arg_values(&self.plan.meta_args, &self.user_args, self.plan.escape).map_err(fail)?;
        for s in self.plan.meta_args.clone() {
            n += 1;
            self.out.stream(format!("Step {n}/{total} : {}\n", s.original)).await.map_err(fail)?;
        }
        let mut consumed: BTreeSet<String> = meta.keys().cloned().collect();
        let mut stages: Vec<(Option<String>, Cur)> = Vec::new();
        let mut last = None;
        let stages_plan = self.plan.stages[..=self.target].to_vec();
        for stage in &stages_plan {
            n += 1;
            self.out.stream(format!("Step {n}/{total} : {}\n", stage.from.original)).await.map_err(fail)?;
            let Instruction::From { image, .. } = &stage.from.inst else { return Err(fail("internal: stage without FROM")) };
            let image = bcfg::expand_from(image, &meta, self.plan.escape, stage.from.line).map_err(fail)?;
            let mut cur = self.resolve_base(&image, &stages).await?;
            match cur.id() {
                Some(id) => self.out.stream(format!(" ---> {}\n", short(&id))).await.map_err(fail)?,
                None => self.out.stream(" ---> \n".to_string()).await.map_err(fail)?,
            }
            let base = cur.run_config();
            let triggers = base.on_build.clone();
            let mut state = State::new(base, self.plan.escape, self.user_args.clone(), meta.clone(), image == "scratch");
            state.config.on_build.clear();
            if !triggers.is_empty() {
                self.out.stream(format!("# Executing {} build trigger{}\n", triggers.len(), if triggers.len() == 1 { "" } else { "s" })).await.map_err(fail)?;
                for t in &triggers {
                    let step = instructions::parse_line(t, self.plan.escape).map_err(fail)?;
                    if matches!(step.inst, Instruction::OnBuild(_) | Instruction::From { .. } | Instruction::Maintainer(_)) {
                        return Err(fail(format!("{} isn't allowed as an ONBUILD trigger", step.inst.keyword())));
                    }
                    cur = self.step(&mut state, &step, cur, &stages).await?;
                }
            }
            for step in &stage.steps {
                n += 1;
                if self.out.gone() {
                    return Err(fail(CANCELLED));
                }
                self.out.stream(format!("Step {n}/{total} : {}\n", step.original)).await.map_err(fail)?;
                cur = self.step(&mut state, step, cur, &stages).await?;
                self.out.stream(format!(" ---> {}\n", cur.id().map(|i| short(&i)).unwrap_or_default())).await.map_err(fail)?;
            }
            consumed.extend(state.declared_names().map(str::to_string));
            last = cur.id();
            stages.push((stage.name.clone(), cur));
        }
        let id = match last {
            Some(id) => id,
            None => {
                // FROM scratch with no steps: an empty image.
                let e = Arc::clone(&self.e);
                tokio::task::spawn_blocking(move || {
                    commit::commit_image(
                        &e.store,
                        NewImage { parent: None, parent_config: &json!({}), config: json!({"Env": [bcfg::DEFAULT_PATH]}), container_config: None, created_by: String::new(), author: None, comment: None, layer: None },
                    )
                })
                .await
                .map_err(fail)?
                .map_err(fail)?
            }
        };
        let unused: Vec<String> = self
            .user_args
            .keys()
            .filter(|k| !consumed.contains(*k) && !bcfg::PREDEFINED_ARGS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unused.is_empty() {
            self.out.stream(format!("[Warning] One or more build-args [{}] were not consumed\n", unused.join(" "))).await.map_err(fail)?;
        }
        let _ = self.out.0.send(json!({ "aux": { "ID": id.to_string() } })).await;
        if self.quiet {
            // With -q the CLI prints the daemon's output, which is then just the ID.
            let _ = self.out.0.send(json!({ "stream": format!("{id}\n") })).await;
        }
        self.out.stream(format!("Successfully built {}\n", short(&id))).await.map_err(fail)?;
        for t in self.tags.clone() {
            let e = Arc::clone(&self.e);
            let (t2, id2) = (t.clone(), id.clone());
            tokio::task::spawn_blocking(move || e.store.set_reference(&t2, &id2)).await.map_err(fail)?.map_err(fail)?;
            self.e.events.image("tag", &id.to_string(), Some(&t.familiar_string()));
            self.out.stream(format!("Successfully tagged {}\n", t.familiar_string())).await.map_err(fail)?;
        }
        Ok(id)
    }

    /// FROM: a previous stage, `scratch`, a local image, or one pulled now.
    async fn resolve_base(&self, image: &str, stages: &[(Option<String>, Cur)]) -> Result<Cur, StepErr> {
        let lower = image.to_ascii_lowercase();
        if let Some((_, c)) = stages.iter().rev().find(|(n, _)| n.as_deref() == Some(lower.as_str())) {
            return Ok(c.clone());
        }
        if lower == "scratch" {
            return Ok(Cur { rec: None, config: json!({}) });
        }
        let r = Reference::parse(image).map_err(|err| fail(format!("invalid reference format for FROM {image:?}: {err}")))?;
        let r = if r.tag.is_none() && r.digest.is_none() { r.with_tag("latest").map_err(fail)? } else { r };
        let e = Arc::clone(&self.e);
        let name = r.to_string();
        let local = tokio::task::spawn_blocking(move || e.store.resolve(&name)).await.map_err(fail)?;
        let id = match (local, self.pull) {
            (Ok(id), false) => id,
            (local, _) => {
                let auth = registry_auth(self.registry_config.as_deref(), &r.registry);
                self.out.stream(format!("{}: Pulling from {}\n", r.tag.clone().unwrap_or_default(), r.repository)).await.map_err(fail)?;
                match crate::pull::resolve(&self.e, &r, &auth, None).await {
                    Ok(res) => crate::pull::fetch(Arc::clone(&self.e), r.clone(), auth, res, crate::pull::Progress::none()).await.map_err(fail)?,
                    Err(err) => match local {
                        // --pull with the registry unreachable: use the local image.
                        Ok(id) if self.pull => id,
                        _ => return Err(fail(err)),
                    },
                }
            }
        };
        let e = Arc::clone(&self.e);
        let (rec, config) = tokio::task::spawn_blocking(move || commit::image_config(&e.store, &id)).await.map_err(fail)?.map_err(fail)?;
        Ok(Cur { rec: Some(rec), config })
    }

    /// A child of `parent` built by the same step before: same container_config.
    async fn probe(&self, parent: Option<Digest>, probe: &Value) -> Option<Cur> {
        if self.nocache {
            return None;
        }
        let e = Arc::clone(&self.e);
        let probe = probe.clone();
        tokio::task::spawn_blocking(move || {
            let mut kids: Vec<ImageRecord> = e.store.list_images().ok()?.into_iter().filter(|r| r.parent == parent).collect();
            // The newest match, as Docker picks.
            kids.sort_by(|a, b| b.created.cmp(&a.created));
            for k in kids {
                if let Ok((rec, cfg)) = commit::image_config(&e.store, &k.id) {
                    if cfg["container_config"] == probe {
                        return Some(Cur { rec: Some(rec), config: cfg });
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    async fn commit(&self, cur: &Cur, state: &State, cmd: &[String], layer: Option<berth_image::LayerInfo>) -> Result<Cur, StepErr> {
        let e = Arc::clone(&self.e);
        let parent = cur.rec.clone();
        let parent_config = cur.config.clone();
        let config = serde_json::to_value(&state.config).map_err(fail)?;
        let probe = probe_config(state, cmd)?;
        let author = state.author.clone().or_else(|| parent_config["author"].as_str().map(str::to_string));
        let created_by = cmd.join(" ");
        let id = tokio::task::spawn_blocking(move || {
            commit::commit_image(
                &e.store,
                NewImage { parent: parent.as_ref(), parent_config: &parent_config, config, container_config: Some(probe), created_by, author, comment: None, layer: layer.as_ref() },
            )
        })
        .await
        .map_err(fail)?
        .map_err(fail)?;
        let e = Arc::clone(&self.e);
        let (rec, config) = tokio::task::spawn_blocking(move || commit::image_config(&e.store, &id)).await.map_err(fail)?.map_err(fail)?;
        Ok(Cur { rec: Some(rec), config })
    }

    async fn cached(&self, cur: &Cur, state: &State, cmd: &[String]) -> Result<Option<Cur>, StepErr> {
        let probe = probe_config(state, cmd)?;
        match self.probe(cur.id(), &probe).await {
            Some(c) => {
                self.out.stream(" ---> Using cache\n").await.map_err(fail)?;
                Ok(Some(c))
            }
            None => Ok(None),
        }
    }

    async fn step(&self, state: &mut State, step: &Step, cur: Cur, stages: &[(Option<String>, Cur)]) -> Result<Cur, StepErr> {
        let d = state.dispatch(step).map_err(fail)?;
        match d.action {
            Action::None => {
                if let Some(c) = self.cached(&cur, state, &d.cmd).await? {
                    return Ok(c);
                }
                self.commit(&cur, state, &d.cmd, None).await
            }
            Action::Mkdir(dir) => {
                if let Some(c) = self.cached(&cur, state, &d.cmd).await? {
                    return Ok(c);
                }
                let layer = self.fs_step(&cur, move |root| root.mkdir_all(&dir, 0o755, (0, 0)).map(drop).map_err(|e| e.to_string())).await?;
                self.commit(&cur, state, &d.cmd, layer).await
            }
            Action::Copy { add, spec } => self.copy_step(state, add, spec, cur, stages).await,
            Action::Run { argv, env } => {
                if let Some(c) = self.cached(&cur, state, &d.cmd).await? {
                    return Ok(c);
                }
                let layer = self.run_step(&cur, state, argv, env).await?;
                self.commit(&cur, state, &d.cmd, layer).await
            }
        }
    }

    fn lowers(&self, cur: &Cur) -> Vec<PathBuf> {
        cur.rec.as_ref().map(|r| r.layers.iter().rev().map(|l| self.e.store.layer_diff_dir(l)).collect()).unwrap_or_default()
    }

    /// Mount the current image with a fresh upper dir, let `f` change it, make the layer.
    async fn fs_step<F>(&self, cur: &Cur, f: F) -> Result<Option<berth_image::LayerInfo>, StepErr>
    where
        F: FnOnce(&Root) -> Result<(), String> + Send + 'static,
    {
        let e = Arc::clone(&self.e);
        let lowers = self.lowers(cur);
        let parent_chain = cur.rec.as_ref().and_then(|r| r.layers.last().cloned());
        let id = rand_hex(8);
        let scratch = self.work.join(format!("step-{id}"));
        let bundle_dir = e.config.exec_root.join("b").join(&id);
        tokio::task::spawn_blocking(move || -> Result<Option<berth_image::LayerInfo>, StepErr> {
            let _t = TempTree(scratch.clone());
            let (upper, work) = (scratch.join("upper"), scratch.join("work"));
            let bundle = Bundle::create(&bundle_dir).map_err(fail)?;
            let r = bundle.mount_rootfs(&SysMounter, &lowers, &upper, &work).map_err(fail).and_then(|_| {
                let root = Root::open(&bundle.rootfs()).map_err(fail)?;
                f(&root).map_err(fail)
            });
            let _ = bundle.remove(&SysMounter);
            r?;
            let layer = commit::layer_from_upper(&e.store, &upper, &lowers, parent_chain.as_ref()).map_err(fail)?;
            Ok(layer.map(|(l, _lease)| l))
        })
        .await
        .map_err(fail)?
    }

    /// Sources of a COPY --from: a stage (by name or index) or an image.
    async fn copy_source(&self, from: &str, stages: &[(Option<String>, Cur)]) -> Result<Cur, StepErr> {
        if let Ok(i) = from.parse::<usize>() {
            return stages.get(i).map(|(_, c)| c.clone()).ok_or_else(|| fail(format!("invalid from flag value {from}: stage index out of range")));
        }
        let lower = from.to_ascii_lowercase();
        if let Some((_, c)) = stages.iter().find(|(n, _)| n.as_deref() == Some(lower.as_str())) {
            return Ok(c.clone());
        }
        self.resolve_base(from, &[]).await
    }

    async fn copy_step(&self, state: &mut State, add: bool, spec: CopySpec, cur: Cur, stages: &[(Option<String>, Cur)]) -> Result<Cur, StepErr> {
        let kw = if add { "ADD" } else { "COPY" };
        for s in &spec.srcs {
            if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@") {
                return Err(fail(format!("{kw} from a URL is not supported by Berth yet: {s}")));
            }
        }
        // Where sources come from: the context, or a mounted stage/image rootfs.
        let source = match &spec.from {
            Some(f) => Some(self.copy_source(f, stages).await?),
            None => None,
        };
        let dest = if spec.dest.starts_with('/') {
            spec.dest.clone()
        } else {
            let wd = state.workdir();
            let joined = format!("{}/{}", wd.trim_end_matches('/'), spec.dest);
            if spec.dest.ends_with('/') || spec.dest == "." { format!("{}/", bcfg::clean_abs(&joined)) } else { bcfg::clean_abs(&joined) }
        };
        let e = Arc::clone(&self.e);
        let context = self.context.clone();
        let src_lowers = source.as_ref().map(|s| self.lowers(s));
        let id = rand_hex(8);
        let src_bundle = e.config.exec_root.join("b").join(format!("{id}s"));
        let src_scratch = self.work.join(format!("src-{id}"));
        let spec2 = spec.clone();
        // Resolve and hash the sources (mounting the source image if any).
        type Resolved = (Vec<String>, String, Option<(Bundle, TempTree)>);
        let (srcs, hash, mounted) = tokio::task::spawn_blocking(move || -> Result<Resolved, StepErr> {
            let mut mounted = None;
            let root_path = match &src_lowers {
                None => context,
                Some(lowers) => {
                    let t = TempTree(src_scratch.clone());
                    let b = Bundle::create(&src_bundle).map_err(fail)?;
                    b.mount_rootfs(&SysMounter, lowers, &src_scratch.join("upper"), &src_scratch.join("work")).map_err(fail)?;
                    let p = b.rootfs();
                    mounted = Some((b, t));
                    p
                }
            };
            let root = Root::open(&root_path).map_err(fail)?;
            let mut srcs = Vec::new();
            let mut hashes = Vec::new();
            for s in &spec2.srcs {
                let rel = bctx::source_path(s, kw).map_err(fail)?;
                let found = if bctx::has_wildcards(&rel) {
                    let m = bctx::match_wildcards(&root, &rel, MAX_CONTEXT_ENTRIES as usize).map_err(fail)?;
                    if m.is_empty() {
                        return Err(fail(format!("{kw} failed: no source files were specified")));
                    }
                    m
                } else {
                    match root.stat(&rel) {
                        Ok(Some(_)) => vec![rel],
                        _ => {
                            return Err(fail(format!(
                                "{kw} failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist"
                            )))
                        }
                    }
                };
                for r in found {
                    hashes.push(bctx::checksum(&root, &r).map_err(fail)?);
                    srcs.push(r);
                }
            }
            for h in &spec2.heredocs {
                hashes.push(format!("file:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(h.content.as_bytes()))));
            }
            let hash = bctx::combine_checksums(&hashes);
            if let Some((b, _)) = &mounted {
                let _ = b;
            }
            Ok((srcs, hash, mounted))
        })
        .await
        .map_err(fail)??;
        let result = async {
            let count = srcs.len() + spec.heredocs.len();
            if count > 1 && !dest.ends_with('/') {
                return Err(fail(format!("When using {kw} with more than one source file, the destination must be a directory and end with a /")));
            }
            let cmd = state.copy_cmd(add, spec.chown.as_deref(), &hash, &dest);
            if let Some(c) = self.cached(&cur, state, &cmd).await? {
                return Ok(c);
            }
            let src_root = mounted.as_ref().map(|(b, _)| b.rootfs()).unwrap_or_else(|| self.context.clone());
            let (chown, chmod) = (spec.chown.clone(), spec.chmod.clone());
            let heredocs = spec.heredocs.clone();
            let srcs2 = srcs.clone();
            let dest2 = dest.clone();
            let layer = self
                .fs_step(&cur, move |root| {
                    let owner = match &chown {
                        None => (0, 0),
                        Some(c) => resolve_chown(root, c)?,
                    };
                    let mode = chmod.as_deref().and_then(|m| u32::from_str_radix(m, 8).ok());
                    let from = Root::open(&src_root).map_err(|e| e.to_string())?;
                    let opts = CopyOptions { owner: Some(owner), mode };
                    let into_dir = srcs2.len() + heredocs.len() > 1;
                    for s in &srcs2 {
                        if add && is_archive(&from, s) {
                            extract_archive(&from, s, root, &dest2, chown.as_ref().map(|_| owner))?;
                            continue;
                        }
                        bctx::copy(&from, s, root, &dest2, into_dir, opts).map_err(|e| format!("{kw} failed: {s}: {e}"))?;
                    }
                    for h in &heredocs {
                        let target = if dest2.ends_with('/') || root.is_dir(&dest2) { format!("{}/{}", dest2.trim_end_matches('/'), h.name) } else { dest2.clone() };
                        bctx::write_file(root, &target, h.content.as_bytes(), opts).map_err(|e| format!("{kw} failed: {e}"))?;
                    }
                    Ok(())
                })
                .await?;
            self.commit(&cur, state, &cmd, layer).await
        }
        .await;
        if let Some((b, t)) = mounted {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = b.remove(&SysMounter);
                drop(t);
            })
            .await;
        }
        result
    }

    /// RUN: a real container of the current image, its output streamed, its changes a layer.
    async fn run_step(&self, cur: &Cur, state: &State, argv: Vec<String>, env: Vec<String>) -> Result<Option<berth_image::LayerInfo>, StepErr> {
        let Some(image) = cur.id() else {
            return Err(fail("RUN needs a base image with a shell: FROM scratch has none"));
        };
        let cfg = &state.config;
        let config = ContainerConfig {
            image: Some(image.to_string()),
            cmd: Some(argv.clone()),
            entrypoint: Some(Vec::new()),
            env: Some(env),
            user: Some(cfg.user.clone()).filter(|u| !u.is_empty()),
            working_dir: Some(cfg.working_dir.clone()).filter(|w| !w.is_empty()),
            labels: Some([(INTERMEDIATE_LABEL.to_string(), "intermediate".to_string())].into()),
            ..Default::default()
        };
        let host_config = HostConfig { network_mode: self.network_mode.clone(), ..Default::default() };
        let body = crate::containers::CreateBody { config, host_config: Some(host_config), networking_config: None };
        let id = crate::containers::create_container(&self.e, body, None).await.map_err(fail)?;
        let r = self.run_container(&id, cur, &argv).await;
        // Always remove the intermediate container (also on failure or a vanished client).
        let _ = crate::containers::lifecycle::remove(&self.e, &id, &Query::parse(Some("force=1&v=1"))).await;
        if r.is_ok() {
            let _ = self.out.stream(format!("Removing intermediate container {}\n", &id[..12])).await;
        }
        r
    }

    async fn run_container(&self, id: &str, cur: &Cur, argv: &[String]) -> Result<Option<berth_image::LayerInfo>, StepErr> {
        let e = &self.e;
        self.out.stream(format!(" ---> Running in {}\n", &id[..12])).await.map_err(fail)?;
        let rx = e.exits.subscribe();
        crate::containers::lifecycle::start_container(e, id).await.map_err(fail)?;
        let p = crate::containers::lifecycle::paths(e, id);
        // Follow the log until the shim records the exit.
        let (log, exit_file) = (p.log.clone(), p.shim_state.join(berth_shim::state::EXIT_JSON));
        let out = self.out.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        // Set once the exit is known: the log is then complete. exit.json alone is not enough,
        // as the bundle teardown can remove it between two polls of the follower.
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let exited2 = Arc::clone(&exited);
        let follower = tokio::task::spawn_blocking(move || {
            let opts = berth_shim::LogOptions { stdout: true, stderr: true, follow: true, ..Default::default() };
            let Ok(reader) = berth_shim::read_logs(&log, opts) else { return };
            let reader = reader
                .stop_when(move || exited2.load(std::sync::atomic::Ordering::SeqCst) || exit_file.exists())
                .cancel_when(move || stop2.load(std::sync::atomic::Ordering::SeqCst));
            for entry in reader {
                let Ok(entry) = entry else { break };
                let text = String::from_utf8_lossy(&entry.log).into_owned();
                if !out.blocking_stream(text) {
                    break;
                }
            }
        });
        let exit = tokio::select! {
            n = crate::containers::lifecycle::next_exit(rx, id.to_string(), false) => n,
            _ = self.out.0.closed() => {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = follower.await;
                return Err(fail(CANCELLED));
            }
        };
        exited.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), follower).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let code = exit.map(|n| n.exit_code).unwrap_or(-1);
        if code != 0 {
            return Err((format!("The command '{}' returned a non-zero code: {code}", argv.join(" ")), Some(code)));
        }
        let e2 = Arc::clone(e);
        let lowers = self.lowers(cur);
        let parent_chain = cur.rec.as_ref().and_then(|r| r.layers.last().cloned());
        let upper = p.upper.clone();
        tokio::task::spawn_blocking(move || {
            commit::layer_from_upper(&e2.store, &upper, &lowers, parent_chain.as_ref()).map(|l| l.map(|(l, _)| l))
        })
        .await
        .map_err(fail)?
        .map_err(fail)
    }
}

/// The container_config the cache compares: the stage config with this step's Cmd.
fn probe_config(state: &State, cmd: &[String]) -> Result<Value, StepErr> {
    let mut c = state.config.clone();
    c.cmd = Some(cmd.to_vec());
    serde_json::to_value(&c).map_err(fail)
}

/// `--chown=user[:group]` against the rootfs being written (names need its /etc/passwd).
fn resolve_chown(root: &Root, spec: &str) -> Result<(u32, u32), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |rel: &str| bctx::read_file(root, rel, 8 << 20).ok().flatten().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => read("etc/passwd")
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[0] == u).then(|| f[2].parse().ok()).flatten()
            })
            .ok_or_else(|| format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {u}: no such user: {u}"))?,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read("etc/group")
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                })
                .ok_or_else(|| format!("unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}"))?,
        },
    };
    Ok((uid, gid))
}

/// ADD extracts local tar archives (plain, gzip or zstd) instead of copying them.
fn is_archive(root: &Root, rel: &str) -> bool {
    let Ok(Some(st)) = root.stat(rel) else { return false };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return false;
    }
    let Ok(Some(head)) = bctx::read_file(root, rel, u64::MAX / 2).map(|o| o.map(|b| b[..b.len().min(512)].to_vec())) else { return false };
    match berth_image::Compression::detect(&head) {
        berth_image::Compression::None => head.len() >= 262 && &head[257..262] == b"ustar",
        _ => true,
    }
}

/// Extract an archive into `dest` inside the rootfs with the store's safe extractor (as
/// Docker's ADD: `.wh.` names are ordinary, absolute names are cleaned to the destination,
/// ids kept unless --chown). A hostile tar (`..` above the destination, links out of it,
/// a path through a symlink, bombs) fails; nothing is written outside the destination.
fn extract_archive(from: &Root, rel: &str, to: &Root, dest: &str, owner: Option<(u32, u32)>) -> Result<(), String> {
    let data = bctx::read_file(from, rel, 64 << 30).map_err(|e| e.to_string())?.unwrap_or_default();
    let head = data[..data.len().min(8)].to_vec();
    let reader: Box<dyn Read> = match berth_image::Compression::detect(&head) {
        berth_image::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
        berth_image::Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&data[..]).map_err(|e| e.to_string())?),
        berth_image::Compression::None => Box::new(&data[..]),
    };
    let dfd = to.mkdir_all(dest, 0o755, owner.unwrap_or((0, 0))).map_err(|e| format!("ADD failed: {dest}: {e}"))?;
    let limits = berth_image::unpack::UnpackLimits { max_bytes: 64 << 30, max_entries: MAX_CONTEXT_ENTRIES };
    let opts = berth_image::unpack::ExtractOptions::copy_in(limits, false, owner);
    berth_image::unpack::extract_at(reader, dfd, opts).map_err(|e| format!("ADD failed: {rel}: {e}"))?;
    Ok(())
}

/// The label marking a build's RUN containers (removed at daemon start if a crash left any).
pub const INTERMEDIATE_LABEL: &str = "com.github.berth.build";

/// After a crash or kill -9 mid-build: RUN containers of builds that no longer exist are
/// killed and removed, with their anonymous volumes.
pub async fn recover_containers(e: &Arc<Engine>) {
    for c in e.containers.list() {
        if c.config.labels.as_ref().is_some_and(|l| l.get(INTERMEDIATE_LABEL).map(String::as_str) == Some("intermediate")) {
            tracing::info!(id = %c.short_id(), "removing an intermediate build container left by an interrupted build");
            if let Err(err) = crate::containers::lifecycle::remove(e, &c.id, &Query::parse(Some("force=1&v=1"))).await {
                tracing::warn!(id = %c.short_id(), "cannot remove intermediate container: {err}");
            }
        }
    }
}

/// After a crash: detach any step or source mounts left under the exec root.
pub fn recover(exec_root: &Path) {
    let dir = exec_root.join("b");
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    for e in rd.flatten() {
        let _ = Bundle { dir: e.path() }.remove(&SysMounter);
    }
}
