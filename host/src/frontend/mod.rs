//! Running frontends: WebAssembly components that export `build`.
//!
//! A [`FrontendRuntime`] owns one wasmtime `Engine` and `Linker`. Loading a
//! component compiles it once and keeps the precompiled artifact on disk,
//! keyed by the component's sha256 and the engine's compatibility hash, so
//! the next process starts it in well under a millisecond. Every build gets
//! a fresh `Store` with its own limits:
//!
//! - CPU: a deadline on the time spent in the guest itself (epoch
//!   interruption; time spent in host calls such as `solve` does not count);
//! - memory: a cap on linear memory and tables;
//! - output: caps on the number and size of solve calls, the log (both the
//!   `log` import and stdout/stderr), warnings and the returned result.
//!
//! The guest gets WASI with nothing in it: no preopened directories, no
//! environment, no arguments, no sockets. Its stdout and stderr are captured
//! and forwarded to the progress log.

pub mod artifact;
mod limits;

pub use limits::FrontendLimits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        world: "frontend",
        path: "../wit",
        imports: { default: trappable },
    });
}

use bindings::kiln::gateway::{gateway as gw, types as t};

/// The WIT package this kiln implements.
pub const GATEWAY_PACKAGE: &str = "kiln:gateway";
/// Its version.
pub const GATEWAY_VERSION: &str = "0.1.0";

/// How often the epoch ticks.
const TICK: Duration = Duration::from_millis(10);

/// A location in the user's input, as a frontend reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// File name, e.g. `Dockerfile`.
    pub file: String,
    /// 1-based first line.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
}

/// An error for or from a frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendError {
    /// One-sentence message.
    pub message: String,
    /// Where, when known.
    pub location: Option<Location>,
}

impl FrontendError {
    /// An error without a location.
    pub fn new(message: impl Into<String>) -> Self {
        FrontendError {
            message: message.into(),
            location: None,
        }
    }
}

impl std::fmt::Display for FrontendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) if l.start_line == l.end_line => {
                write!(f, "{}:{}: {}", l.file, l.start_line, self.message)
            }
            Some(l) => write!(
                f,
                "{}:{}-{}: {}",
                l.file, l.start_line, l.end_line, self.message
            ),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FrontendError {}

/// One entry of a directory listing, or one stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Path (relative to the directory listed).
    pub path: String,
    /// Unix mode including the file type bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// mtime in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Symlink target.
    pub linkname: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an image config is resolved for: reference, platform (os,
/// architecture, variant) and resolve mode.
type ResolveKey = (String, Option<(String, String, Option<String>)>, String);

/// A resolved image config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    /// `name@sha256:…`.
    pub canonical_ref: String,
    /// The manifest digest.
    pub digest: String,
    /// The config JSON.
    pub config: Vec<u8>,
}

/// A warning a frontend raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The message.
    pub message: String,
    /// An optional longer explanation.
    pub detail: Option<String>,
    /// Where, when known.
    pub location: Option<Location>,
}

/// What the frontend can reach of the engine. `control` implements it; tests
/// can use a fake.
pub trait Bridge: Send {
    /// Register (and with `evaluate`, solve) a definition; return a handle.
    fn solve(&mut self, definition: Vec<u8>, evaluate: bool) -> Result<String, FrontendError>;
    /// Read part of a file of a solved handle.
    fn read_file(
        &mut self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError>;
    /// List a directory of a solved handle.
    fn read_dir(
        &mut self,
        handle: &str,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError>;
    /// Stat a path of a solved handle.
    fn stat_file(&mut self, handle: &str, path: &str) -> Result<FileStat, FrontendError>;
    /// Resolve an image's config.
    fn resolve_image_config(
        &mut self,
        reference: &str,
        platform: Option<(&str, &str, Option<&str>)>,
        resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError>;
    /// A warning from the frontend.
    fn warn(&mut self, warning: Warning);
    /// A log line from the frontend (or its stdout/stderr).
    fn log(&mut self, line: &str);
}

/// What a successful `build` returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOutput {
    /// `(platform, handle)` pairs.
    pub refs: Vec<(String, String)>,
    /// Metadata entries, such as `containerimage.config`.
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl BuildOutput {
    /// A metadata entry by key.
    pub fn metadata(&self, key: &str) -> Option<&[u8]> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// A compiled frontend, ready to instantiate.
pub struct LoadedFrontend {
    pre: bindings::FrontendPre<HostState>,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Whether the precompiled artifact came from the disk cache.
    pub cache_hit: bool,
    /// How long loading took.
    pub load_time: Duration,
}

/// The per-build store data.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    bridge: Box<dyn Bridge>,
    options: Vec<(String, String)>,
    inputs: Vec<(String, Vec<u8>)>,
    limits: FrontendLimits,
    solves: u64,
    log_bytes: u64,
    warnings: u64,
    /// Time spent inside host calls, which does not count against the CPU limit.
    host_time: Duration,
    started: Instant,
    /// The first limit that was hit, reported in place of the trap.
    limit_hit: Option<String>,
    /// Image configs this build already resolved, by (reference, platform,
    /// resolve mode): a Dockerfile names its base once per stage, and one
    /// build sees one answer per reference, as with BuildKit's resolver.
    resolved: HashMap<ResolveKey, ImageConfig>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Memory limiter that remembers when it said no.
struct Limiter {
    max_memory: usize,
    max_tables: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_tables)
    }
}

fn mib(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

impl HostState {
    /// Record a limit violation and return the trap error for it.
    fn exceed(&mut self, msg: String) -> wasmtime::Error {
        if self.limit_hit.is_none() {
            self.limit_hit = Some(msg.clone());
        }
        wasmtime::format_err!("{msg}")
    }

    fn timed<R>(&mut self, f: impl FnOnce(&mut dyn Bridge) -> R) -> R {
        let t0 = Instant::now();
        let r = f(self.bridge.as_mut());
        self.host_time += t0.elapsed();
        r
    }

    fn count_log(&mut self, n: usize) -> wasmtime::Result<()> {
        self.log_bytes += n as u64;
        if self.log_bytes > self.limits.max_log_bytes {
            let max = self.limits.max_log_bytes;
            return Err(self.exceed(format!(
                "frontend exceeded its log limit of {} (raise it with --frontend-max-log)",
                mib(max)
            )));
        }
        Ok(())
    }
}

fn err_to_wit(e: FrontendError) -> t::FrontendError {
    t::FrontendError {
        message: e.message,
        location: e.location.map(|l| t::Location {
            file: l.file,
            start_line: l.start_line,
            end_line: l.end_line,
        }),
    }
}

fn stat_to_wit(s: FileStat) -> t::FileStat {
    t::FileStat {
        path: s.path,
        mode: s.mode,
        size: s.size,
        mtime_ns: s.mtime_ns,
        linkname: s.linkname,
        uid: s.uid,
        gid: s.gid,
    }
}

impl t::Host for HostState {}

impl gw::Host for HostState {
    fn options(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.options.clone())
    }

    fn inputs(&mut self) -> wasmtime::Result<Vec<t::NamedInput>> {
        Ok(self
            .inputs
            .iter()
            .map(|(name, def)| t::NamedInput {
                name: name.clone(),
                definition: def.clone(),
            })
            .collect())
    }

    fn solve(
        &mut self,
        definition: Vec<u8>,
        evaluate: bool,
    ) -> wasmtime::Result<Result<String, t::FrontendError>> {
        self.solves += 1;
        if self.solves > self.limits.max_solves {
            let max = self.limits.max_solves;
            return Err(self.exceed(format!(
                "frontend exceeded its limit of {max} solve calls (raise it with --frontend-max-solves)"
            )));
        }
        if definition.len() as u64 > self.limits.max_result_bytes {
            let (n, max) = (definition.len() as u64, self.limits.max_result_bytes);
            return Err(self.exceed(format!(
                "frontend passed a {} definition to solve, over its limit of {} (raise it with --frontend-max-result)",
                mib(n),
                mib(max)
            )));
        }
        Ok(self
            .timed(|b| b.solve(definition, evaluate))
            .map_err(err_to_wit))
    }

    fn read_file(
        &mut self,
        handle: String,
        path: String,
        offset: u64,
        length: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, t::FrontendError>> {
        Ok(self
            .timed(|b| b.read_file(&handle, &path, offset, length))
            .map_err(err_to_wit))
    }

    fn read_dir(
        &mut self,
        handle: String,
        path: String,
        include_pattern: Option<String>,
    ) -> wasmtime::Result<Result<Vec<t::FileStat>, t::FrontendError>> {
        Ok(self
            .timed(|b| b.read_dir(&handle, &path, include_pattern.as_deref()))
            .map(|v| v.into_iter().map(stat_to_wit).collect())
            .map_err(err_to_wit))
    }

    fn stat_file(
        &mut self,
        handle: String,
        path: String,
    ) -> wasmtime::Result<Result<t::FileStat, t::FrontendError>> {
        Ok(self
            .timed(|b| b.stat_file(&handle, &path))
            .map(stat_to_wit)
            .map_err(err_to_wit))
    }

    fn resolve_image_config(
        &mut self,
        reference: String,
        platform: Option<t::Platform>,
        resolve_mode: String,
    ) -> wasmtime::Result<Result<t::ImageConfig, t::FrontendError>> {
        let p = platform.as_ref().map(|p| {
            (
                p.os.as_str(),
                p.architecture.as_str(),
                p.cpu_variant.as_deref(),
            )
        });
        let key: ResolveKey = (
            reference.clone(),
            p.map(|(os, arch, variant)| {
                (os.to_owned(), arch.to_owned(), variant.map(str::to_owned))
            }),
            resolve_mode.clone(),
        );
        let answer = match self.resolved.get(&key) {
            Some(c) => Ok(c.clone()),
            None => {
                let r = self.timed(|b| b.resolve_image_config(&reference, p, &resolve_mode));
                if let Ok(c) = &r {
                    self.resolved.insert(key, c.clone());
                }
                r
            }
        };
        Ok(answer
            .map(|c| t::ImageConfig {
                canonical_ref: c.canonical_ref,
                digest: c.digest,
                config: c.config,
            })
            .map_err(err_to_wit))
    }

    fn warn(
        &mut self,
        message: String,
        detail: Option<String>,
        location: Option<t::Location>,
    ) -> wasmtime::Result<()> {
        self.warnings += 1;
        if self.warnings > self.limits.max_warnings {
            let max = self.limits.max_warnings;
            return Err(self.exceed(format!("frontend exceeded its limit of {max} warnings")));
        }
        self.count_log(message.len() + detail.as_ref().map_or(0, String::len))?;
        let location = location.map(|l| Location {
            file: l.file,
            start_line: l.start_line,
            end_line: l.end_line,
        });
        self.bridge.warn(Warning {
            message,
            detail,
            location,
        });
        Ok(())
    }

    fn log(&mut self, message: String) -> wasmtime::Result<()> {
        self.count_log(message.len())?;
        self.bridge.log(&message);
        Ok(())
    }
}

/// Loads and runs frontends. One per process; cheap to share behind `Arc`.
pub struct FrontendRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for FrontendRuntime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl FrontendRuntime {
    /// A runtime whose precompiled artifacts live in `cache_dir` (none: no
    /// disk cache).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.max_wasm_stack(2 << 20);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Frontend::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        // The epoch ticker must be an OS thread: a guest that never yields
        // would starve a task on an async runtime.
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .context("starting the frontend epoch thread")?;
        Ok(FrontendRuntime {
            engine,
            linker,
            cache_dir,
            stop_ticker: stop,
        })
    }

    /// The key for the precompiled artifact of `wasm` on this engine.
    fn artifact_key(&self, wasm_digest: &str) -> String {
        use std::hash::{Hash, Hasher};
        struct ShaHasher(Sha256);
        impl Hasher for ShaHasher {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut h = ShaHasher(Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..8]);
        format!(
            "{}-{engine_hash}.cwasm",
            wasm_digest.trim_start_matches("sha256:")
        )
    }

    /// Compile (or load from the disk cache) a component.
    pub fn load(&self, wasm: &[u8]) -> anyhow::Result<LoadedFrontend> {
        let t0 = Instant::now();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(wasm)));
        check_component_header(wasm)?;
        let mut cache_hit = false;
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(self.artifact_key(&digest)));
        let mut component = None;
        if let Some(p) = &path
            && p.exists()
        {
            // SAFETY: the artifact was written by `precompile_component` of
            // an engine with the same compatibility hash (it is in the
            // file name), into kiln's own state directory, through a
            // temp-file-and-rename, so it is complete and trusted.
            match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => {
                    component = Some(c);
                    cache_hit = true;
                }
                Err(_) => {
                    // A damaged artifact: drop it and compile again.
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let bytes = self.engine.precompile_component(wasm).map_err(|e| {
                    anyhow::anyhow!("frontend {digest} is not a valid component: {e:#}")
                })?;
                if let Some(p) = &path {
                    write_atomic(p, &bytes).with_context(|| {
                        format!("caching the compiled frontend at {}", p.display())
                    })?;
                }
                // SAFETY: `bytes` was just produced by this engine.
                unsafe { Component::deserialize(&self.engine, &bytes)? }
            }
        };
        check_world(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("frontend {digest} cannot be linked: {e:#}"))?;
        let pre = bindings::FrontendPre::new(pre)
            .map_err(|e| anyhow::anyhow!("frontend {digest} does not export `build`: {e:#}"))?;
        Ok(LoadedFrontend {
            pre,
            digest,
            cache_hit,
            load_time: t0.elapsed(),
        })
    }

    /// Run `build` of a loaded frontend in a fresh store.
    pub fn run(
        &self,
        frontend: &LoadedFrontend,
        bridge: Box<dyn Bridge>,
        options: Vec<(String, String)>,
        inputs: Vec<(String, Vec<u8>)>,
        limits: FrontendLimits,
    ) -> anyhow::Result<Result<BuildOutput, FrontendError>> {
        let pipe_cap = usize::try_from(limits.max_log_bytes)
            .unwrap_or(usize::MAX)
            .max(4096);
        let stdout = MemoryOutputPipe::new(pipe_cap);
        let stderr = MemoryOutputPipe::new(pipe_cap);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory: usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX),
                max_tables: 100_000,
                denied: None,
            },
            bridge,
            options,
            inputs,
            limits,
            solves: 0,
            log_bytes: 0,
            warnings: 0,
            host_time: Duration::ZERO,
            started: Instant::now(),
            limit_hit: None,
            resolved: HashMap::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let check_every = (Duration::from_millis(100).as_millis() / TICK.as_millis()) as u64;
        store.set_epoch_deadline(check_every);
        store.epoch_deadline_callback(move |mut ctx| {
            let s = ctx.data();
            let guest_time = s.started.elapsed().saturating_sub(s.host_time);
            if guest_time > s.limits.timeout {
                let secs = s.limits.timeout.as_secs_f64();
                let msg = format!(
                    "frontend exceeded its CPU time limit of {secs}s (raise it with --frontend-timeout)"
                );
                let s = ctx.data_mut();
                s.limit_hit.get_or_insert(msg.clone());
                return Err(wasmtime::format_err!("{msg}"));
            }
            Ok(UpdateDeadline::Continue(check_every))
        });

        let result = frontend
            .pre
            .instantiate(&mut store)
            .and_then(|fe| fe.call_build(&mut store));

        // Forward what the guest printed, within the log budget.
        let printed = [stdout.contents(), stderr.contents()];
        let state = store.data_mut();
        for chunk in &printed {
            let text = String::from_utf8_lossy(chunk);
            for line in text.lines() {
                state.bridge.log(line);
            }
        }
        let pipe_full = printed.iter().any(|c| c.len() >= pipe_cap);

        match result {
            Ok(Ok(r)) => {
                let size: u64 = r
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .chain(
                        r.refs
                            .iter()
                            .map(|x| (x.platform.len() + x.handle.len()) as u64),
                    )
                    .sum();
                if size > state.limits.max_result_bytes {
                    bail!(
                        "frontend returned a {} result, over its limit of {} (raise it with --frontend-max-result)",
                        mib(size),
                        mib(state.limits.max_result_bytes)
                    );
                }
                Ok(Ok(BuildOutput {
                    refs: r.refs.into_iter().map(|x| (x.platform, x.handle)).collect(),
                    metadata: r.metadata,
                }))
            }
            Ok(Err(e)) => Ok(Err(FrontendError {
                message: e.message,
                location: e.location.map(|l| Location {
                    file: l.file,
                    start_line: l.start_line,
                    end_line: l.end_line,
                }),
            })),
            Err(trap) => {
                if let Some(msg) = state.limit_hit.clone() {
                    bail!("{msg}");
                }
                if let Some(n) = state.limiter.denied {
                    bail!(
                        "frontend exceeded its memory limit of {} (it asked for {}; raise it with --frontend-memory)",
                        mib(state.limits.max_memory_bytes),
                        mib(n as u64)
                    );
                }
                if pipe_full {
                    bail!(
                        "frontend exceeded its log limit of {} on stdout/stderr (raise it with --frontend-max-log)",
                        mib(state.limits.max_log_bytes)
                    );
                }
                let stderr_text = String::from_utf8_lossy(&printed[1]).into_owned();
                let panic_msg = match stderr_text.find("panicked at") {
                    // The panic location line, then the message lines.
                    Some(i) => stderr_text[i..]
                        .lines()
                        .take(4)
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => stderr_text
                        .lines()
                        .filter(|l| l.contains("allocation"))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                let what = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(t) => t.to_string(),
                    None => format!("{trap:#}"),
                };
                if panic_msg.is_empty() {
                    bail!("frontend {} trapped: {what}", frontend.digest)
                }
                bail!("frontend {} crashed: {panic_msg} ({what})", frontend.digest)
            }
        }
    }

    /// The wasmtime engine (for benchmarks and tests).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A component starts with `\0asm`, version 0x0d, layer 1; a core module
/// has version 1, layer 0.
fn check_component_header(wasm: &[u8]) -> anyhow::Result<()> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        bail!("not a WebAssembly file (no \\0asm header)");
    }
    if wasm[6..8] == [0, 0] {
        bail!(
            "this is a core WebAssembly module, not a component: build the frontend for \
             wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
        );
    }
    Ok(())
}

/// Whether a component built for `kiln:gateway@version` runs on this kiln:
/// the same major version (for 0.x, the same minor) and not newer.
pub fn check_version_compatible(version: &str) -> anyhow::Result<()> {
    let ours = parse_version(GATEWAY_VERSION).expect("valid version");
    let theirs = parse_version(version)
        .with_context(|| format!("unreadable {GATEWAY_PACKAGE} version {version:?}"))?;
    let compatible = if ours.0 == 0 {
        theirs.0 == 0 && theirs.1 == ours.1 && theirs.2 <= ours.2
    } else {
        theirs.0 == ours.0 && (theirs.1, theirs.2) <= (ours.1, ours.2)
    };
    if !compatible {
        bail!(
            "frontend was built for {GATEWAY_PACKAGE}@{version}, but this kiln provides \
             {GATEWAY_PACKAGE}@{GATEWAY_VERSION}; rebuild the frontend against a compatible \
             kiln-frontend SDK"
        );
    }
    Ok(())
}

/// Refuse a component built against an incompatible `kiln:gateway` version.
fn check_world(engine: &Engine, component: &Component) -> anyhow::Result<()> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let Some(rest) = name.strip_prefix(GATEWAY_PACKAGE) else {
            continue;
        };
        // kiln:gateway/gateway@0.1.0
        let Some((_, version)) = rest.split_once('@') else {
            continue;
        };
        check_version_compatible(version)?;
    }
    if !ty.exports(engine).any(|(n, _)| n == "build") {
        bail!("component does not export `build`: it is not a kiln frontend");
    }
    Ok(())
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.split(['-', '+']).next()?;
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().context("artifact path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.2.3-rc1"), Some((1, 2, 3)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn headers() {
        assert!(check_component_header(b"nope").is_err());
        let core = b"\0asm\x01\0\0\0";
        let err = check_component_header(core).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module"), "{err}");
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
