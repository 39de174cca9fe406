//! The one in-process API: a [`SolveRequest`] in, exported artifacts out.
//!
//! `control` picks the frontend, runs it against a [`Bridge`] into the
//! engine, solves the LLB it returns and runs the exporters. The CLI calls
//! it directly (embedded mode); `kiln daemon` serves the same request for
//! many clients on one shared controller, with the progress writer and the
//! cancellation token of each client's session ([`Controller::solve_with`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::builtin;
use crate::frontend::{
    Bridge, BuildOutput, FileStat, FrontendError, FrontendLimits, FrontendRuntime, ImageConfig,
    Warning,
};
use kiln_engine::cache::CacheSpec;
use kiln_engine::{
    CancellationToken, Engine, EngineConfig, Progress, ProgressMode, Session, SolvedRef,
};

/// One `--output`: its type and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// `oci`, `docker`, `local`, `tar`, `image`, `llb`.
    pub kind: String,
    /// The other `k=v` pairs.
    pub attrs: BTreeMap<String, String>,
}

/// Everything one build needs.
#[derive(Clone, Debug, Default)]
pub struct SolveRequest {
    /// Frontend name, `gateway.v0`, or a path; `None` reads LLB from `definition`.
    pub frontend: Option<String>,
    /// `--opt` pairs.
    pub frontend_opts: BTreeMap<String, String>,
    /// An encoded Definition, when there is no frontend.
    pub definition: Option<Vec<u8>>,
    /// `--local name=dir`.
    pub locals: BTreeMap<String, PathBuf>,
    /// `--output`.
    pub outputs: Vec<OutputSpec>,
    /// `--secret id=…` contents, in memory only.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Asked for secrets not in `secrets` when a step needs them (a
    /// daemon's client).
    pub secret_source: Option<Arc<dyn kiln_engine::SecretSource>>,
    /// `--ssh id=socket`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--oci-layout name=dir`.
    pub oci_layouts: BTreeMap<String, PathBuf>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--explain-cache`.
    pub explain_cache: bool,
    /// `--progress` mode.
    pub progress: String,
    /// Frontend limits.
    pub limits: FrontendLimits,
    /// `--export-cache` entries.
    pub export_cache: Vec<CacheSpec>,
    /// `--import-cache` entries.
    pub import_cache: Vec<CacheSpec>,
    /// The frontend component's bytes, when the client read it (a daemon's
    /// client names a `.wasm` path on its own machine).
    pub frontend_component: Option<Vec<u8>>,
}

/// The embedded controller: one engine and one frontend runtime.
pub struct Controller {
    engine: Arc<Engine>,
    runtime: Arc<FrontendRuntime>,
    registry: Arc<kiln_runtime::registry::RegistryClient>,
    root: PathBuf,
    executor: String,
}

impl Controller {
    /// Open the state under `root`.
    pub fn open(root: PathBuf, oci_runtime: Option<PathBuf>) -> anyhow::Result<Controller> {
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the state directory {}", root.display()))?;
        let mut cfg = EngineConfig::default();
        let mut runc = kiln_runtime::RuncConfig::new(root.join("runc"));
        if let Some(rt) = oci_runtime {
            runc.runtime = rt;
        }
        let runtime_name = runc.runtime.display().to_string();
        // Without a runtime, builds that need no container still work; an
        // exec op then fails with the hint the executor gives.
        let executor = match kiln_runtime::RuncExecutor::new(runc) {
            Ok(exec) => {
                cfg.executor = Some(Arc::new(exec));
                format!("OCI runtime {runtime_name}")
            }
            Err(e) => format!("none (OCI runtime {runtime_name}: {e:#})"),
        };
        let engine = Engine::open(&root, cfg)
            .with_context(|| format!("opening the state directory {}", root.display()))?;
        let runtime = FrontendRuntime::new(Some(root.join("frontends")))?;
        let registry = Arc::new(kiln_runtime::registry::RegistryClient::default());
        Ok(Controller {
            engine,
            runtime: Arc::new(runtime),
            registry,
            root,
            executor,
        })
    }

    /// The state directory.
    pub fn root(&self) -> &PathBuf {
        &self.root
    }

    /// The engine (for `du` and `prune`).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// What runs RUN steps, for `kiln debug info`.
    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// Run one build to the end, with progress on stderr.
    pub async fn solve(&self, req: SolveRequest) -> anyhow::Result<()> {
        let mode = ProgressMode::parse(&req.progress)
            .with_context(|| format!("unknown progress mode {:?}", req.progress))?;
        self.solve_with(req, Progress::new(mode), CancellationToken::new())
            .await
    }

    /// Run one build to the end, reporting to `progress`; `cancel` stops
    /// it (the daemon cancels a build whose client went away).
    pub async fn solve_with(
        &self,
        req: SolveRequest,
        progress: Progress,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut session = Session::new(progress);
        session.cancel = cancel;
        session.locals = req.locals.clone();
        session.secrets = match &req.secret_source {
            Some(src) => kiln_engine::Secrets::on_demand(src.clone()),
            None => kiln_engine::Secrets::default(),
        };
        for (k, v) in &req.secrets {
            session.secrets.insert(k.clone(), v.clone());
        }
        session.ssh = req.ssh.clone();
        session.oci_layouts = req.oci_layouts.clone();
        session.no_cache = req.no_cache;
        session.explain_cache = req.explain_cache;
        session.cache_imports = req.import_cache.clone();
        let session = Arc::new(session);

        let (definition, image_config) = match &req.frontend {
            None => {
                let def = req
                    .definition
                    .clone()
                    .context("no --frontend given and no LLB definition on stdin")?;
                (def, None)
            }
            Some(name) => self.run_frontend(name, &req, session.clone()).await?,
        };

        // `type=llb` writes the definition and needs no solve.
        let (llb_outputs, outputs): (Vec<_>, Vec<_>) =
            req.outputs.iter().partition(|o| o.kind == "llb");
        for o in &llb_outputs {
            write_dest(
                o.attrs.get("dest").map(String::as_str).unwrap_or("-"),
                &definition,
            )?;
        }
        if !llb_outputs.is_empty() && outputs.is_empty() {
            return Ok(());
        }

        let solved = match self.engine.solve(&definition, session.clone()).await {
            Ok(r) => r,
            Err(e) => {
                let snippet = match &e {
                    kiln_engine::SolveError::Vertex { digest, .. } => {
                        source_snippet(&definition, digest)
                    }
                    _ => None,
                };
                let err = anyhow::Error::new(e);
                return Err(match snippet {
                    Some(s) => anyhow::anyhow!("{err:#}\n --> {s}"),
                    None => err,
                });
            }
        };
        let inline = req.export_cache.iter().any(|c| c.kind == "inline");
        for o in outputs {
            let mut o = o.clone();
            if inline && matches!(o.kind.as_str(), "image" | "oci" | "docker") {
                let doc = self
                    .engine
                    .inline_cache(Some(&solved), &o.attrs, session.clone())
                    .await
                    .context("building the inline cache")?;
                o.attrs
                    .insert(kiln_engine::cache::INLINE_ATTR.to_owned(), doc);
            }
            let o = &o;
            if o.kind == "image" {
                self.push_image(&solved, image_config.as_deref(), &o.attrs, session.clone())
                    .await
                    .context("exporting type=image")?;
                continue;
            }
            self.engine
                .export(
                    Some(&solved),
                    image_config.as_deref(),
                    &o.kind,
                    &o.attrs,
                    session.clone(),
                )
                .await
                .with_context(|| format!("exporting type={}", o.kind))?;
        }
        for spec in req.export_cache.iter().filter(|c| c.kind != "inline") {
            match self
                .engine
                .export_cache(Some(&solved), spec, session.clone())
                .await
            {
                Ok(meta) => session.progress.message(&format!(
                    "exported cache type={}: {} records, {} blobs, manifest {}",
                    spec.kind,
                    meta.get("cache.records").map(String::as_str).unwrap_or("?"),
                    meta.get("cache.blobs").map(String::as_str).unwrap_or("?"),
                    meta.get("cache.manifest.digest")
                        .map(String::as_str)
                        .unwrap_or("?"),
                )),
                Err(e) if spec.ignore_error() => session.progress.message(&format!(
                    "warning: exporting cache type={} failed (ignore-error=true): {e:#}",
                    spec.kind
                )),
                Err(e) => {
                    return Err(e.context(format!("exporting cache type={}", spec.kind)));
                }
            }
        }
        // The GC policy runs while this session still holds its results.
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.auto_gc()).await {
            Ok(Ok(removed)) if !removed.is_empty() => session.progress.message(&format!(
                "gc: removed {} cache records, freed {} bytes",
                removed.len(),
                removed.iter().map(|r| r.size).sum::<u64>()
            )),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => session
                .progress
                .message(&format!("warning: garbage collection failed: {e:#}")),
            Err(e) => session
                .progress
                .message(&format!("warning: garbage collection failed: {e}")),
        }
        Ok(())
    }

    /// `type=image,name=REF[,REF…],push=true`: export an OCI image into the
    /// content store and push it to every name, skipping blobs the registry
    /// already has.
    async fn push_image(
        &self,
        solved: &SolvedRef,
        config: Option<&[u8]>,
        attrs: &BTreeMap<String, String>,
        session: Arc<Session>,
    ) -> anyhow::Result<()> {
        let names: Vec<String> = attrs
            .get("name")
            .map(|n| {
                n.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            bail!("type=image needs name=REF");
        }
        let push = attrs
            .get("push")
            .map(|v| v == "true" || v.is_empty())
            .unwrap_or(false);
        if !push {
            bail!(
                "type=image without push=true has nowhere to keep the image (kiln has no image \
                 store): add push=true, or use type=oci or type=docker"
            );
        }
        let layout =
            tempfile::tempdir_in(&self.root).context("creating a temp dir for the image")?;
        let mut oci_attrs: BTreeMap<String, String> = attrs
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "push" | "name" | "registry.insecure" | "unpack")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        oci_attrs.insert("tar".into(), "false".into());
        oci_attrs.insert("dest".into(), layout.path().display().to_string());
        oci_attrs
            .entry("oci-mediatypes".into())
            .or_insert_with(|| "true".into());
        let res = self
            .engine
            .export(Some(solved), config, "oci", &oci_attrs, session.clone())
            .await?;
        let digest = res
            .metadata
            .get("containerimage.digest")
            .cloned()
            .context("the OCI exporter reported no manifest digest")?;
        // Everything the manifest names goes into the content store.
        let store = self.engine.content();
        let blobs = layout.path().join("blobs/sha256");
        for e in
            std::fs::read_dir(&blobs).with_context(|| format!("reading {}", blobs.display()))?
        {
            let e = e?;
            let d: kiln_store::Digest = format!("sha256:{}", e.file_name().to_string_lossy())
                .parse()
                .context("blob name in the exported layout")?;
            if !store.exists(&d) {
                let f = std::fs::File::open(e.path())?;
                store.write_reader(f, Some(&d))?;
            }
        }
        let manifest_digest: kiln_store::Digest = digest.parse().context("manifest digest")?;
        let manifest = store.read(&manifest_digest)?;
        let mut registry = self.registry.clone();
        if attrs.get("registry.insecure").is_some_and(|v| v == "true") {
            let hosts = names
                .iter()
                .filter_map(|n| n.parse::<kiln_runtime::registry::ImageRef>().ok())
                .map(|r| r.registry().to_string())
                .collect();
            registry = Arc::new(kiln_runtime::registry::RegistryClient::new(
                kiln_runtime::registry::RegistryOptions {
                    insecure: hosts,
                    ..Default::default()
                },
            ));
        }
        for name in &names {
            let r: kiln_runtime::registry::ImageRef = name
                .parse()
                .with_context(|| format!("invalid image name {name:?}"))?;
            let pushed = registry
                .push(&r, &manifest, store)
                .await
                .with_context(|| format!("pushing {name}"))?;
            session.progress.message(&format!("pushed {name}@{pushed}"));
        }
        Ok(())
    }

    /// Load the frontend `name` names, run it and return the definition of
    /// its result plus the image config.
    async fn run_frontend(
        &self,
        name: &str,
        req: &SolveRequest,
        session: Arc<Session>,
    ) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let (label, wasm) = self.frontend_component(name, req).await?;
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking({
            let runtime = runtime.clone();
            move || runtime.load(&wasm)
        })
        .await??;
        session.progress.message(&format!(
            "frontend {label} {} {} in {:.1}ms",
            loaded.digest,
            if loaded.cache_hit {
                "loaded from the compiled-artifact cache"
            } else {
                "compiled"
            },
            loaded.load_time.as_secs_f64() * 1000.0
        ));

        let mut options: BTreeMap<String, String> = req.frontend_opts.clone();
        if req.no_cache {
            options.entry("no-cache".into()).or_default();
        }
        let bridge = ControlBridge {
            engine: self.engine.clone(),
            session: session.clone(),
            handles: HashMap::new(),
            rt: tokio::runtime::Handle::current(),
            registry: self.registry.clone(),
        };
        let limits = req.limits.clone();
        let (result, bridge_state) = tokio::task::spawn_blocking(move || {
            let shared = Arc::new(std::sync::Mutex::new(bridge));
            let b = SharedBridge(shared.clone());
            let r = runtime.run(
                &loaded,
                Box::new(b),
                options.into_iter().collect(),
                Vec::new(),
                limits,
            );
            (r, shared)
        })
        .await?;
        let out: BuildOutput = match result? {
            Ok(out) => out,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("frontend {name} failed"))),
        };
        let handle = match out.refs.as_slice() {
            [] => bail!("frontend {name} returned no result"),
            [(_, h)] => h.clone(),
            many => {
                let want = req
                    .frontend_opts
                    .get("platform")
                    .cloned()
                    .unwrap_or_default();
                many.iter()
                    .find(|(p, _)| *p == want)
                    .or_else(|| many.first())
                    .map(|(_, h)| h.clone())
                    .expect("non-empty")
            }
        };
        let def = {
            let guard = bridge_state
                .lock()
                .map_err(|_| anyhow::anyhow!("bridge poisoned"))?;
            guard
                .handles
                .get(&handle)
                .map(|h| h.definition.clone())
                .with_context(|| format!("frontend {name} returned unknown handle {handle}"))?
        };
        let config = out.metadata("containerimage.config").map(<[u8]>::to_vec);
        Ok((def, config))
    }

    /// Find the component for a frontend: a built-in name, `gateway.v0`
    /// with `source=`, a path, or a registry reference. A Dockerfile whose
    /// first lines say `# syntax=REF` is forwarded to that frontend, unless
    /// `--opt source=` names one. Returns a label for progress and the bytes.
    async fn frontend_component(
        &self,
        name: &str,
        req: &SolveRequest,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        if let Some(bytes) = &req.frontend_component {
            let label = match name {
                "gateway.v0" => req.frontend_opts.get("source").map_or(name, String::as_str),
                _ => name,
            };
            return Ok((label.to_string(), bytes.clone()));
        }
        let opts = &req.frontend_opts;
        let mut source = if name == "gateway.v0" {
            opts.get("source").cloned().context(
                "--frontend gateway.v0 needs --opt source=<path or registry reference of a frontend component>",
            )?
        } else {
            name.to_string()
        };
        let mut seen = vec![];
        loop {
            if seen.contains(&source) || seen.len() > 8 {
                bail!(
                    "frontend forwarding loops: {} -> {source}",
                    seen.join(" -> ")
                );
            }
            seen.push(source.clone());
            if is_builtin_dockerfile(&source) {
                // `# syntax=` forwarding, as the Dockerfile frontend does.
                if !opts.contains_key("source")
                    && let Some(syntax) = dockerfile_syntax(req)?
                    && !is_builtin_dockerfile(&syntax)
                {
                    source = syntax;
                    continue;
                }
            }
            match builtin::get(&source) {
                Ok(Some(bytes)) => return Ok((source, bytes.to_vec())),
                Ok(None) => {}
                Err(why) => bail!(why),
            }
            let path = PathBuf::from(&source);
            if path.is_file() {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading frontend {}", path.display()))?;
                return Ok((source, bytes));
            }
            if crate::frontend::artifact::looks_like_reference(&source) {
                let cache = self.root.join("frontends");
                let (bytes, how) = crate::frontend::artifact::pull(
                    &self.registry,
                    self.engine.content(),
                    &cache,
                    &source,
                )
                .await?;
                return Ok((format!("{source} ({how})"), bytes));
            }
            bail!(
                "unknown frontend {source:?}: use one of {}, a path to a .wasm component, or a \
                 registry reference (--frontend gateway.v0 --opt source=PATH|REF)",
                builtin::NAMES.join(", ")
            )
        }
    }
}

/// Names that mean the built-in Dockerfile frontend, including the usual
/// `# syntax=docker/dockerfile:1` lines.
fn is_builtin_dockerfile(s: &str) -> bool {
    matches!(s, "dockerfile.v0" | "dockerfile")
        || s.strip_prefix("docker.io/")
            .unwrap_or(s)
            .starts_with("docker/dockerfile")
}

/// The `# syntax=` directive of the Dockerfile the request names, if any.
fn dockerfile_syntax(req: &SolveRequest) -> anyhow::Result<Option<String>> {
    if let Some(s) = req.frontend_opts.get("cmdline").filter(|s| !s.is_empty()) {
        return Ok(Some(s.clone()));
    }
    let Some(dir) = req
        .locals
        .get("dockerfile")
        .or_else(|| req.locals.get("context"))
    else {
        return Ok(None);
    };
    let filename = req
        .frontend_opts
        .get("filename")
        .map(String::as_str)
        .unwrap_or("Dockerfile");
    let path = dir.join(filename);
    let Ok(text) = std::fs::read(&path) else {
        return Ok(None);
    };
    Ok(parse_syntax_directive(&text))
}

/// Parser directives are `# key=value` comment lines at the very top.
fn parse_syntax_directive(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    for line in text.lines() {
        let line = line.trim();
        let rest = line.strip_prefix('#')?;
        let (k, v) = rest.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("syntax") {
            let v = v.trim();
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    None
}

/// Where in the user's input a vertex comes from, as `Dockerfile:12` plus
/// the lines themselves, from the Definition's source map.
fn source_snippet(definition: &[u8], digest: &str) -> Option<String> {
    let def = kiln_llb::Definition::decode(definition).ok()?;
    let source = def.source()?;
    let locs = source.locations.get(digest)?;
    let mut out = Vec::new();
    for loc in &locs.locations {
        let info = source.infos.get(usize::try_from(loc.source_index).ok()?)?;
        let text = String::from_utf8_lossy(&info.data);
        let lines: Vec<&str> = text.lines().collect();
        for r in &loc.ranges {
            let start = r.start.as_ref().map_or(0, |p| p.line).max(1) as usize;
            let end = r
                .end
                .as_ref()
                .map_or(start as i32, |p| p.line)
                .max(start as i32) as usize;
            let place = if start == end {
                format!("{}:{start}", info.filename)
            } else {
                format!("{}:{start}-{end}", info.filename)
            };
            let mut block = vec![place];
            for n in start..=end.min(start + 9) {
                if let Some(l) = lines.get(n - 1) {
                    block.push(format!(" {n:>4} | {l}"));
                }
            }
            out.push(block.join("\n"));
        }
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

fn write_dest(dest: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if dest == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()?;
        return Ok(());
    }
    std::fs::write(dest, bytes).with_context(|| format!("writing {dest}"))
}

struct Handle {
    definition: Vec<u8>,
    solved: Option<SolvedRef>,
}

/// The bridge from a running frontend into the engine.
struct ControlBridge {
    engine: Arc<Engine>,
    session: Arc<Session>,
    handles: HashMap<String, Handle>,
    rt: tokio::runtime::Handle,
    registry: Arc<kiln_runtime::registry::RegistryClient>,
}

impl ControlBridge {
    fn solved(&mut self, handle: &str) -> Result<SolvedRef, FrontendError> {
        let h = self
            .handles
            .get_mut(handle)
            .ok_or_else(|| FrontendError::new(format!("unknown result handle {handle:?}")))?;
        if let Some(r) = &h.solved {
            return Ok(r.clone());
        }
        let r = self
            .rt
            .block_on(self.engine.solve(&h.definition, self.session.clone()))
            .map_err(|e| FrontendError::new(format!("{e:#}")))?;
        h.solved = Some(r.clone());
        Ok(r)
    }
}

fn fe(e: anyhow::Error) -> FrontendError {
    FrontendError::new(format!("{e:#}"))
}

impl Bridge for ControlBridge {
    fn solve(&mut self, definition: Vec<u8>, evaluate: bool) -> Result<String, FrontendError> {
        let handle = format!("r{}", self.handles.len() + 1);
        self.handles.insert(
            handle.clone(),
            Handle {
                definition,
                solved: None,
            },
        );
        if evaluate {
            self.solved(&handle)?;
        }
        Ok(handle)
    }

    fn read_file(
        &mut self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        let r = self.solved(handle)?;
        self.engine.read_file(&r, path, offset, length).map_err(fe)
    }

    fn read_dir(
        &mut self,
        handle: &str,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        let r = self.solved(handle)?;
        Ok(self
            .engine
            .read_dir(&r, path, include_pattern)
            .map_err(fe)?
            .into_iter()
            .map(stat_from_engine)
            .collect())
    }

    fn stat_file(&mut self, handle: &str, path: &str) -> Result<FileStat, FrontendError> {
        let r = self.solved(handle)?;
        self.engine.stat(&r, path).map(stat_from_engine).map_err(fe)
    }

    fn resolve_image_config(
        &mut self,
        reference: &str,
        platform: Option<(&str, &str, Option<&str>)>,
        _resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError> {
        use kiln_runtime::registry::{ImageRef, Platform};
        let r: ImageRef = reference.parse().map_err(|e| {
            FrontendError::new(format!("invalid image reference {reference:?}: {e}"))
        })?;
        let platform = match platform {
            Some((os, arch, variant)) => Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.map(str::to_string),
            },
            None => Platform::host(),
        };
        let client = self.registry.clone();
        let cfg = self
            .rt
            .block_on(async move { client.resolve_image_config(&r, &platform).await })
            .map_err(|e| FrontendError::new(format!("resolving image {reference}: {e:#}")))?;
        Ok(ImageConfig {
            canonical_ref: cfg.reference.to_string(),
            digest: cfg.manifest_digest.to_string(),
            config: cfg.config,
        })
    }

    fn warn(&mut self, w: Warning) {
        let text = match &w.location {
            Some(l) => format!("WARN: {}:{}: {}", l.file, l.start_line, w.message),
            None => format!("WARN: {}", w.message),
        };
        self.session.progress.message(&text);
    }

    fn log(&mut self, line: &str) {
        self.session.progress.message(line);
    }
}

fn stat_from_engine(s: kiln_engine::FileStat) -> FileStat {
    FileStat {
        path: s.path,
        mode: s.mode,
        size: s.size,
        mtime_ns: s.mtime_ns,
        linkname: s.linkname,
        uid: s.uid,
        gid: s.gid,
    }
}

/// A bridge shared with the controller, so the handles survive the run.
struct SharedBridge(Arc<std::sync::Mutex<ControlBridge>>);

impl SharedBridge {
    fn with<R>(&self, f: impl FnOnce(&mut ControlBridge) -> R) -> R {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }
}

impl Bridge for SharedBridge {
    fn solve(&mut self, definition: Vec<u8>, evaluate: bool) -> Result<String, FrontendError> {
        self.with(|b| b.solve(definition, evaluate))
    }
    fn read_file(
        &mut self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        self.with(|b| b.read_file(handle, path, offset, length))
    }
    fn read_dir(
        &mut self,
        handle: &str,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        self.with(|b| b.read_dir(handle, path, include_pattern))
    }
    fn stat_file(&mut self, handle: &str, path: &str) -> Result<FileStat, FrontendError> {
        self.with(|b| b.stat_file(handle, path))
    }
    fn resolve_image_config(
        &mut self,
        reference: &str,
        platform: Option<(&str, &str, Option<&str>)>,
        resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError> {
        self.with(|b| b.resolve_image_config(reference, platform, resolve_mode))
    }
    fn warn(&mut self, warning: Warning) {
        self.with(|b| b.warn(warning))
    }
    fn log(&mut self, line: &str) {
        self.with(|b| b.log(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_directive() {
        assert_eq!(
            parse_syntax_directive(b"# syntax=x/y:1\nFROM a"),
            Some("x/y:1".into())
        );
        assert_eq!(
            parse_syntax_directive(b"# escape=`\n#  SYNTAX = r:1\nFROM a"),
            Some("r:1".into())
        );
        assert_eq!(parse_syntax_directive(b"FROM a\n# syntax=x"), None);
        assert_eq!(parse_syntax_directive(b"# a comment\n# syntax=x"), None);
        assert!(is_builtin_dockerfile("docker/dockerfile:1.7"));
        assert!(is_builtin_dockerfile("docker.io/docker/dockerfile:1"));
        assert!(!is_builtin_dockerfile("127.0.0.1:5000/fe:1"));
    }
}
