//! `kiln daemon`: one [`Controller`] (one engine, one store) serving many
//! clients over gRPC, on a unix socket or on TCP with mutual TLS.
//!
//! Layer 7, beside `cli`: it uses `control` and the engine's `du`/`prune`.
//! The daemon holds `daemon.lock` in the state dir for its whole life, so a
//! second daemon on the same root refuses to start. Its own state is under
//! `daemon/v1/`: `locals/` (mirrors of client dirs, see [`transfer`]) and
//! `sessions/` (per-build scratch and the build's forwarded ssh-agent
//! sockets, removed at the end of each build).
//! Secrets are never written there: they stay in memory, and the exec op
//! puts secret mounts on /dev/shm (a tmpfs outside the state dir).

pub mod addr;
mod attach;
pub mod proto;
mod session;
mod transfer;

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_engine::CancellationToken;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use addr::Addr;
pub(crate) use attach::send_ssh_bytes;
pub use session::{OutputShape, client_side};

use crate::control::Controller;
use proto::control_server::{Control, ControlServer};

/// Largest message either side accepts (a frontend component travels in
/// one).
pub const MAX_MESSAGE: usize = 256 << 20;

/// `kiln daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Address to listen on: `unix:///run/kiln/kiln.sock` (the default as
    /// root; else `$XDG_RUNTIME_DIR/kiln/kiln.sock`) or `tcp://HOST:PORT`
    /// (needs the three TLS flags: clients must present a certificate).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// CA certificate (PEM) that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// The daemon's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// The daemon's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    /// Seconds to wait for cancelled builds to end on SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub shutdown_timeout: u64,
}

/// The GC policy as `kiln debug info` reports it.
fn gc_policy(cfg: &kiln_engine::gc::GcConfig) -> String {
    if !cfg.enabled {
        return format!("off ({}); `kiln prune` by hand", cfg.source);
    }
    let steps: Vec<String> = cfg
        .policies
        .iter()
        .map(|p| {
            let mut parts = Vec::new();
            if !p.filters.is_empty() {
                parts.push(p.filters.join(" | "));
            }
            if let Some(d) = p.keep_duration {
                parts.push(format!("keep {}h", d.as_secs() / 3600));
            }
            if let Some(b) = p.max_used {
                parts.push(format!("max {b} bytes"));
            }
            if p.all {
                parts.push("all".into());
            }
            format!("[{}]", parts.join(", "))
        })
        .collect();
    format!(
        "after each build, from {}: {}",
        cfg.source,
        steps.join(" then ")
    )
}

/// `kiln debug info` of a controller; `addr` is the daemon's address.
pub fn info_of(ctl: &Controller, addr: Option<&Addr>, active: u32) -> proto::InfoResponse {
    proto::InfoResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        root: ctl.engine().root().display().to_string(),
        executor: ctl.executor().to_string(),
        gc_policy: gc_policy(ctl.engine().gc_config()),
        addr: addr.map(ToString::to_string).unwrap_or_default(),
        active_builds: active,
    }
}

/// What every session shares.
pub(crate) struct State {
    controller: Arc<Controller>,
    mirrors: transfer::Mirrors,
    sessions_dir: PathBuf,
    addr: Addr,
    next_id: AtomicU64,
    active: Mutex<HashMap<u64, CancellationToken>>,
    /// Cancelled on SIGTERM; every session's token is its child.
    shutdown: CancellationToken,
}

impl State {
    fn next_session(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
    fn register(&self, id: u64, t: CancellationToken) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, t);
    }
    fn unregister(&self, id: u64) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
    fn active(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

struct Service {
    state: Arc<State>,
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

fn usage_to_proto(r: kiln_engine::UsageRecord) -> proto::UsageRecord {
    proto::UsageRecord {
        id: r.id,
        size: r.size,
        created: r.created,
        last_used: r.last_used,
        description: r.description,
        usage_count: r.usage_count,
        kind: r.kind,
        snapshots: r.snapshots,
        in_use: r.in_use,
        prunable: r.prunable,
    }
}

#[tonic::async_trait]
impl Control for Service {
    type SolveStream = ReceiverStream<Result<proto::ServerMessage, Status>>;

    async fn solve(
        &self,
        request: Request<Streaming<proto::ClientMessage>>,
    ) -> Result<Response<Self::SolveStream>, Status> {
        if self.state.shutdown.is_cancelled() {
            return Err(Status::unavailable("the kiln daemon is stopping"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(session::run(self.state.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn disk_usage(
        &self,
        _: Request<proto::DiskUsageRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        let engine = self.state.controller.engine().clone();
        let records = tokio::task::spawn_blocking(move || engine.du())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(internal)?;
        Ok(Response::new(proto::DiskUsageResponse {
            records: records.into_iter().map(usage_to_proto).collect(),
        }))
    }

    async fn prune(
        &self,
        request: Request<proto::PruneRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        let r = request.into_inner();
        let args = crate::cli::PruneArgs {
            all: r.all,
            keep_duration: r.keep_duration,
            keep_storage: r.keep_storage,
            reserved_space: r.reserved_space,
            min_free_space: r.min_free_space,
            filter: r.filters,
            verbose: false,
            format: None,
            remote: Default::default(),
        };
        let opts = crate::cli::prune_options(&args, self.state.controller.engine().root())
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let engine = self.state.controller.engine().clone();
        let removed = tokio::task::spawn_blocking(move || engine.prune(&opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(internal)?;
        tracing::info!(records = removed.len(), "pruned");
        Ok(Response::new(proto::DiskUsageResponse {
            records: removed.into_iter().map(usage_to_proto).collect(),
        }))
    }

    async fn info(
        &self,
        _: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        let s = &self.state;
        Ok(Response::new(info_of(
            &s.controller,
            Some(&s.addr),
            u32::try_from(s.active()).unwrap_or(u32::MAX),
        )))
    }
}

/// The lock on a state dir, held while the daemon runs.
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn acquire(root: &Path) -> anyhow::Result<StateLock> {
        let path = root.join("daemon.lock");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        use std::os::fd::AsRawFd as _;
        // SAFETY: flock on an fd we own; no memory is involved.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let pid = pid.trim();
                bail!(
                    "another kiln daemon{} is already serving the state directory {}: stop it, \
                     or give this one its own --root",
                    if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                    root.display()
                );
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        Ok(StateLock { _file: f })
    }
}

fn default_addr() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "unix:///run/kiln/kiln.sock".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => format!("unix://{}/kiln/kiln.sock", PathBuf::from(d).display()),
        None => "unix:///tmp/kiln/kiln.sock".into(),
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let level: tracing::Level = level.parse().map_err(|_| {
        anyhow::anyhow!("--log-level {level}: use error, warn, info, debug or trace")
    })?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

/// Reads a PEM file for the TLS flags.
fn pem(flag: &str, p: &Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    let p = p.as_ref().with_context(|| {
        format!(
            "tcp:// needs --tlscacert, --tlscert and --tlskey (clients must present a \
             certificate on TCP); {flag} is missing"
        )
    })?;
    std::fs::read(p).with_context(|| format!("{flag}: reading {}", p.display()))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(root: PathBuf, oci_runtime: Option<PathBuf>, args: DaemonArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level)?;
    let addr = Addr::parse(&args.addr.clone().unwrap_or_else(default_addr))?;
    let tls = match &addr {
        Addr::Tcp { .. } => Some((
            pem("--tlscacert", &args.tlscacert)?,
            pem("--tlscert", &args.tlscert)?,
            pem("--tlskey", &args.tlskey)?,
        )),
        Addr::Unix(_) => {
            if args.tlscacert.is_some() || args.tlscert.is_some() || args.tlskey.is_some() {
                bail!(
                    "the TLS flags are for tcp:// addresses; a unix socket is guarded by its file mode"
                );
            }
            None
        }
    };
    fs_err::create_dir_all(&root)
        .with_context(|| format!("creating the state directory {}", root.display()))?;
    let lock = StateLock::acquire(&root)?;
    let controller = Arc::new(Controller::open(root.clone(), oci_runtime)?);
    let daemon_dir = controller.engine().root().join("daemon/v1");
    let sessions_dir = daemon_dir.join("sessions");
    // Scratch of a daemon that did not stop cleanly.
    if sessions_dir.exists() {
        fs_err::remove_dir_all(&sessions_dir)?;
    }
    fs_err::create_dir_all(&sessions_dir)?;
    if !Path::new("/dev/shm").is_dir() {
        tracing::warn!(
            "/dev/shm is missing: secret mounts of RUN steps will be written under the state \
             directory while a step runs"
        );
    }
    let state = Arc::new(State {
        controller,
        mirrors: transfer::Mirrors::new(daemon_dir.join("locals")),
        sessions_dir,
        addr: addr.clone(),
        next_id: AtomicU64::new(0),
        active: Mutex::new(HashMap::new()),
        shutdown: CancellationToken::new(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(serve(state, addr.clone(), tls, args.shutdown_timeout));
    if let Addr::Unix(p) = &addr {
        let _ = std::fs::remove_file(p);
    }
    drop(lock);
    match &r {
        Ok(()) => tracing::info!("stopped"),
        Err(e) => tracing::error!(error = %format!("{e:#}"), "stopped"),
    }
    r
}

async fn serve(
    state: Arc<State>,
    addr: Addr,
    tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    shutdown_timeout: u64,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let stop = CancellationToken::new();
    {
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let sig = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = sig,
                builds = state.active(),
                "stopping: cancelling running builds"
            );
            stop.cancel();
            state.shutdown.cancel();
        });
    }
    let svc = ControlServer::new(Service {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let mut builder = tonic::transport::Server::builder();
    let stopped = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    let server = match &addr {
        Addr::Unix(path) => {
            prepare_socket_path(path)?;
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(addr = %addr, root = %state.controller.engine().root().display(), version = env!("CARGO_PKG_VERSION"), "listening");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(
                builder
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, stopped),
            )
        }
        Addr::Tcp { host, port } => {
            let (ca, cert, key) = tls.context("TLS material for tcp://")?;
            use tonic::transport::{Certificate, Identity, ServerTlsConfig};
            let cfg = ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
            builder = builder
                .tls_config(cfg)
                .context("the daemon's TLS certificate or key")?;
            let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(addr = %addr, root = %state.controller.engine().root().display(), version = env!("CARGO_PKG_VERSION"), tls = "mutual", "listening");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(
                builder
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, stopped),
            )
        }
    };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => {
            return r.context("the server task")?.context("serving");
        }
        _ = stop.cancelled() => {}
    }
    // Cancelled builds report to their clients and end; give them time.
    match tokio::time::timeout(Duration::from_secs(shutdown_timeout), &mut server).await {
        Ok(r) => r.context("the server task")?.context("serving"),
        Err(_) => {
            tracing::warn!(
                builds = state.active(),
                "builds did not end within the shutdown timeout; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Creates the socket's directory and removes a stale socket (one nothing
/// answers on); refuses when another server listens there.
fn prepare_socket_path(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "something already listens on {}: another kiln daemon (with another --root)?",
                path.display()
            );
        }
        fs_err::remove_file(path)?;
    }
    Ok(())
}
