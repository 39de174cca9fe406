//! The client side of `kiln daemon`: `build`, `du`, `prune` and
//! `debug info` with `--addr` (or `KILN_HOST`) talk to a daemon instead of
//! running embedded, with the same output and exit codes.
//!
//! Layer 7, beside `cli`: it parses flags with `cli`'s helpers, and speaks
//! `daemon::proto`. A build sends its `--local` dirs (a stat manifest, then
//! only the files the daemon's mirror lacks), answers the daemon's
//! requests for secrets (held in the daemon's memory for the build) and
//! ssh-agent connections (joined to the agent `--ssh` names, here), and
//! writes the outputs the daemon streams back where `dest=` says, on this
//! machine. `type=local` caches live here too: an import's directory goes
//! up like a `--local`, an export comes back without the blobs already
//! there.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{BuildArgs, Command, DebugCommand, DuArgs, PruneArgs};
use crate::control::SolveRequest;
use crate::daemon::proto::{
    self, client_message::Msg as CMsg, control_client::ControlClient, server_message::Msg as SMsg,
};
use crate::daemon::{Addr, MAX_MESSAGE, OutputShape, client_side};

const CHUNK: usize = 1 << 20;

/// Where the daemon is, and the client's TLS material for `tcp://`.
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Build on the kiln daemon at ADDR (`unix:///run/kiln/kiln.sock` or
    /// `tcp://HOST:PORT`) instead of embedded.
    #[arg(long, env = "KILN_HOST", value_name = "ADDR")]
    pub addr: Option<String>,
    /// CA certificate (PEM) that signed the daemon's certificate (tcp://).
    #[arg(long, env = "KILN_TLS_CACERT", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (PEM) for tcp://.
    #[arg(long, env = "KILN_TLS_CERT", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Client private key (PEM) for tcp://.
    #[arg(long, env = "KILN_TLS_KEY", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Name to check the daemon's certificate against (default: the host
    /// of --addr).
    #[arg(long, value_name = "NAME")]
    pub tlsservername: Option<String>,
}

/// The daemon a command should talk to, if any.
pub fn target(cmd: &Command) -> Option<RemoteArgs> {
    let r = match cmd {
        Command::Build(BuildArgs { remote, .. })
        | Command::Du(DuArgs { remote, .. })
        | Command::Prune(PruneArgs { remote, .. })
        | Command::Debug(DebugCommand::Info(remote)) => remote,
        _ => return None,
    };
    r.addr.as_ref().filter(|a| !a.is_empty()).map(|_| r.clone())
}

/// Runs `cmd` against the daemon.
pub fn run(remote: RemoteArgs, cmd: Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cmd {
            Command::Build(a) => {
                let req = crate::cli::solve_request(a)?;
                build(&remote, req).await
            }
            Command::Du(a) => {
                // Bad flags fail before the daemon is asked.
                kiln_engine::gc::Filter::parse_all(&a.filter)?;
                let mut c = connect(&remote).await?;
                let r = c
                    .disk_usage(proto::DiskUsageRequest {})
                    .await
                    .map_err(|s| status_error(&remote, s))?
                    .into_inner();
                crate::cli::print_du(r.records.into_iter().map(usage).collect(), &a)
            }
            Command::Prune(a) => {
                kiln_engine::gc::Filter::parse_all(&a.filter)?;
                if let Some(d) = &a.keep_duration {
                    kiln_engine::gc::policy::parse_duration(d)?;
                }
                let mut c = connect(&remote).await?;
                let r = c
                    .prune(proto::PruneRequest {
                        all: a.all,
                        keep_duration: a.keep_duration.clone(),
                        keep_storage: a.keep_storage.clone(),
                        reserved_space: a.reserved_space.clone(),
                        min_free_space: a.min_free_space.clone(),
                        filters: a.filter.clone(),
                    })
                    .await
                    .map_err(|s| status_error(&remote, s))?
                    .into_inner();
                let removed: Vec<_> = r.records.into_iter().map(usage).collect();
                crate::cli::print_pruned(&removed, &a)
            }
            Command::Debug(DebugCommand::Info(_)) => {
                let mut c = connect(&remote).await?;
                let r = c
                    .info(proto::InfoRequest {})
                    .await
                    .map_err(|s| status_error(&remote, s))?
                    .into_inner();
                crate::cli::print_info(&r);
                Ok(())
            }
            _ => bail!("this command does not take --addr"),
        }
    })
}

fn usage(r: proto::UsageRecord) -> kiln_engine::UsageRecord {
    kiln_engine::UsageRecord {
        id: r.id,
        kind: r.kind,
        snapshots: r.snapshots,
        size: r.size,
        created: r.created,
        last_used: r.last_used,
        usage_count: r.usage_count,
        description: r.description,
        in_use: r.in_use,
        prunable: r.prunable,
    }
}

fn addr_text(remote: &RemoteArgs) -> &str {
    remote.addr.as_deref().unwrap_or("")
}

fn status_error(remote: &RemoteArgs, s: tonic::Status) -> anyhow::Error {
    use std::error::Error as _;
    let mut parts: Vec<String> = vec![s.message().to_string()];
    let mut src = s.source();
    while let Some(e) = src {
        let t = e.to_string();
        if !parts.iter().any(|p| p == &t) {
            parts.push(t);
        }
        src = e.source();
    }
    parts.retain(|p| !p.is_empty());
    let msg = parts.join(": ");
    let addr = addr_text(remote);
    if s.source().is_none() {
        return anyhow::anyhow!("the kiln daemon at {addr}: {msg}");
    }
    let hint = if addr.starts_with("tcp://") {
        "\nhint: on tcp:// the daemon refuses clients without a certificate signed by its \
         --tlscacert: check --tlscert and --tlskey"
    } else {
        ""
    };
    anyhow::anyhow!("lost the connection to the kiln daemon at {addr}: {msg}{hint}")
}

/// Connects to the daemon `remote` names.
pub async fn connect(remote: &RemoteArgs) -> anyhow::Result<ControlClient<Channel>> {
    let text = addr_text(remote);
    let addr = Addr::parse(text)?;
    let channel = match &addr {
        Addr::Unix(path) => {
            let path = path.clone();
            // The URI is a placeholder: the connector dials the socket.
            Endpoint::from_static("http://[::1]:1")
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(&path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
        }
        Addr::Tcp { host, port } => {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let ca = remote.tlscacert.as_ref().context(
                "tcp:// needs --tlscacert (the CA that signed the daemon's certificate), \
                 --tlscert and --tlskey",
            )?;
            let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(remote.tlsservername.clone().unwrap_or_else(|| host.clone()));
            match (&remote.tlscert, &remote.tlskey) {
                (Some(c), Some(k)) => {
                    let c = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
                    let k = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
                    tls = tls.identity(Identity::from_pem(c, k));
                }
                (None, None) => {}
                _ => bail!("--tlscert and --tlskey go together"),
            }
            let uri = if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            };
            Endpoint::from_shared(uri)
                .context("the daemon address")?
                .tls_config(tls)
                .context("the TLS settings")?
                .connect()
                .await
        }
    };
    let channel = channel.map_err(|e| {
        use std::error::Error as _;
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        anyhow::anyhow!("cannot reach the kiln daemon at {addr}: {msg}")
    })?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Names a client directory for the daemon's mirror: this machine and the
/// directory's path.
fn shared_key(dir: &Path) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let mut host = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let host = if unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0 {
        let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        String::from_utf8_lossy(&host[..end]).into_owned()
    } else {
        String::new()
    };
    format!("{}:{host}:{}", machine.trim(), dir.display())
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// Every file, directory and symlink under `dir`, parents first. Other
/// kinds (sockets, fifos, devices) are not sent.
fn walk(name: &str, dir: &Path) -> anyhow::Result<proto::LocalManifest> {
    let root = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut entries = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let here = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let mut names = Vec::new();
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e.with_context(|| format!("reading {}", here.display()))?;
            let n = e.file_name();
            let n = n.to_str().with_context(|| {
                format!("{}: a file name that is not UTF-8", e.path().display())
            })?;
            names.push(n.to_string());
        }
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let r = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            let p = dir.join(&r);
            let md = std::fs::symlink_metadata(&p)
                .with_context(|| format!("reading {}", p.display()))?;
            let ft = md.file_type();
            let linkname = if ft.is_symlink() {
                std::fs::read_link(&p)
                    .with_context(|| format!("reading the symlink {}", p.display()))?
                    .to_str()
                    .with_context(|| format!("{}: a target that is not UTF-8", p.display()))?
                    .to_string()
            } else if ft.is_dir() || ft.is_file() {
                String::new()
            } else {
                continue;
            };
            entries.push(proto::Entry {
                path: r.clone(),
                mode: md.mode(),
                size: if ft.is_file() { md.size() } else { 0 },
                mtime_ns: mtime_ns(&md),
                linkname,
            });
            if ft.is_dir() {
                subdirs.push(r);
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(proto::LocalManifest {
        name: name.to_string(),
        entries,
        root_mode: root.mode(),
        root_mtime_ns: mtime_ns(&root),
    })
}

/// A frontend that names a file on this machine travels as bytes.
fn frontend_bytes(req: &SolveRequest) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(name) = &req.frontend else {
        return Ok(None);
    };
    let path = match name.as_str() {
        "gateway.v0" => match req.frontend_opts.get("source") {
            Some(s) => s.as_str(),
            None => return Ok(None),
        },
        n if crate::builtin::NAMES.contains(&n) => return Ok(None),
        n => n,
    };
    let p = Path::new(path);
    if !p.is_file() {
        return Ok(None);
    }
    Ok(Some(std::fs::read(p).with_context(|| {
        format!("reading frontend {}", p.display())
    })?))
}

/// An output being received: a file written the way the embedded
/// exporters write it (stdout, a temp file renamed into place, or straight
/// into a device or FIFO), or a directory's tar to unpack.
enum Sink {
    File(kiln_store::exporter::DestWriter),
    Dir(tempfile::NamedTempFile, PathBuf),
}

fn open_sink(o: &crate::control::OutputSpec, shape: OutputShape) -> anyhow::Result<Sink> {
    use kiln_store::exporter::Dest;
    let dest = o.attrs.get("dest").map(String::as_str).unwrap_or("-");
    if shape == OutputShape::File {
        let d = match dest {
            "-" | "" => Dest::Stdout,
            p => Dest::Path(PathBuf::from(p)),
        };
        return Ok(Sink::File(d.create()?));
    }
    let dest = PathBuf::from(dest);
    let parent = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs_err::create_dir_all(&dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&parent)
        .with_context(|| format!("creating a file in {}", parent.display()))?;
    Ok(Sink::Dir(tmp, dest))
}

fn finish_sink(s: Sink) -> anyhow::Result<()> {
    match s {
        Sink::File(w) => Ok(w.finish()?),
        Sink::Dir(tmp, dest) => {
            let f = fs_err::File::open(tmp.path())?;
            let mut a = tar::Archive::new(std::io::BufReader::new(f));
            a.set_preserve_permissions(true);
            a.set_preserve_mtime(true);
            // SAFETY: geteuid has no preconditions.
            a.set_preserve_ownerships(unsafe { libc::geteuid() } == 0);
            a.set_overwrite(true);
            a.unpack(&dest)
                .with_context(|| format!("writing the output to {}", dest.display()))
        }
    }
}

/// The blobs (hex) a cache directory already holds.
fn blobs_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.len() == 64 && !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// One build on the daemon.
async fn build(remote: &RemoteArgs, mut req: SolveRequest) -> anyhow::Result<()> {
    req.frontend_component = frontend_bytes(&req)?;
    let mut locals: Vec<(String, PathBuf)> = req
        .locals
        .iter()
        .map(|(n, d)| (n.clone(), d.clone()))
        .collect();
    for (n, d) in &req.oci_layouts {
        locals.push((format!("oci-layout:{n}"), d.clone()));
    }
    // A `type=local` cache import: its directory travels like a --local
    // (a rebuild sends only new blobs); one that is not a layout is a
    // warning, as embedded.
    let mut import_cache = Vec::new();
    for c in std::mem::take(&mut req.import_cache) {
        if c.kind == "local" {
            let src = c.attrs.get("src").map(String::as_str).unwrap_or_default();
            if !Path::new(src).join("index.json").is_file() {
                eprintln!("warning: importing cache type=local: {src} is not an OCI layout");
                continue;
            }
            let dir = std::fs::canonicalize(src).with_context(|| format!("reading {src}"))?;
            locals.push((format!("cache:{}", import_cache.len()), dir));
        }
        import_cache.push(c);
    }
    req.import_cache = import_cache;
    let walked = {
        let locals = locals.clone();
        tokio::task::spawn_blocking(move || {
            locals
                .iter()
                .map(|(n, d)| walk(n, d))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??
    };
    let dirs: BTreeMap<String, PathBuf> = locals.iter().cloned().collect();
    let shapes: Vec<Option<OutputShape>> = req.outputs.iter().map(client_side).collect();
    let start = proto::Start {
        frontend: req.frontend.clone().unwrap_or_default(),
        frontend_opts: req.frontend_opts.clone(),
        has_definition: req.definition.is_some(),
        definition: req.definition.take().unwrap_or_default(),
        locals: locals
            .iter()
            .map(|(n, d)| proto::LocalSpec {
                name: n.clone(),
                shared_key: shared_key(d),
            })
            .collect(),
        outputs: req
            .outputs
            .iter()
            .map(|o| proto::Output {
                kind: o.kind.clone(),
                attrs: o.attrs.clone(),
                have_blobs: Vec::new(),
            })
            .collect(),
        no_cache: req.no_cache,
        explain_cache: req.explain_cache,
        progress: req.progress.clone(),
        limits: Some(proto::Limits {
            timeout_seconds: req.limits.timeout.as_secs_f64(),
            max_memory_bytes: req.limits.max_memory_bytes,
            max_solves: req.limits.max_solves,
            max_result_bytes: req.limits.max_result_bytes,
            max_log_bytes: req.limits.max_log_bytes,
        }),
        frontend_component: req.frontend_component.take().unwrap_or_default(),
        export_cache: req.export_cache.iter().map(cache_output).collect(),
        import_cache: req.import_cache.iter().map(cache_output).collect(),
        ssh_ids: req.ssh.keys().cloned().collect(),
    };
    let secrets = std::mem::take(&mut req.secrets);

    let mut client = connect(remote).await?;
    let (tx, rx) = mpsc::channel::<proto::ClientMessage>(16);
    let send = |m: CMsg| proto::ClientMessage { msg: Some(m) };
    tx.send(send(CMsg::Start(start)))
        .await
        .context("starting the session")?;
    let mut resp = client
        .solve(ReceiverStream::new(rx))
        .await
        .map_err(|s| status_error(remote, s))?
        .into_inner();
    // The daemon takes the locals one after the other: a manifest, the
    // files it asks for, LocalDone, then the next manifest. A failed send
    // means the daemon ended the session; its Done says why.
    let mut manifests = std::collections::VecDeque::from(walked);
    if let Some(m) = manifests.pop_front() {
        let _ = tx.send(send(CMsg::Manifest(m))).await;
    }
    let mut sinks: Vec<Option<Sink>> = (0..req.outputs.len()).map(|_| None).collect();
    let mut cache_sinks: Vec<Option<tempfile::NamedTempFile>> =
        (0..req.export_cache.len()).map(|_| None).collect();
    let mut agents = Agents::new(req.ssh.clone(), tx.clone());
    let result = loop {
        let m = match resp.message().await {
            Ok(Some(proto::ServerMessage { msg: Some(m) })) => m,
            Ok(Some(_)) => continue,
            Ok(None) => {
                break Err(anyhow::anyhow!(
                    "the kiln daemon at {} ended the build without a result",
                    addr_text(remote)
                ));
            }
            Err(s) => break Err(status_error(remote, s)),
        };
        match m {
            SMsg::Progress(b) => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(&b);
                let _ = e.flush();
            }
            SMsg::Need(n) => {
                let dir = dirs.get(&n.name).with_context(|| {
                    format!("the daemon asked for an unknown local {:?}", n.name)
                })?;
                if send_files(&tx, &n.name, dir, &n.paths).await? {
                    let _ = tx
                        .send(send(CMsg::LocalDone(proto::LocalDone { name: n.name })))
                        .await;
                    if let Some(m) = manifests.pop_front() {
                        let _ = tx.send(send(CMsg::Manifest(m))).await;
                    }
                }
            }
            SMsg::NeedSecret(n) => {
                // An id the client does not have is an answer too: the
                // step says which secret is missing.
                let v = secrets.get(&n.id);
                let answer = proto::SecretValue {
                    request: n.request,
                    found: v.is_some(),
                    value: v.cloned().unwrap_or_default(),
                };
                let _ = tx.send(send(CMsg::Secret(answer))).await;
            }
            SMsg::Ssh(d) => agents.handle(d),
            SMsg::Output(c) if c.cache => {
                let i = c.index as usize;
                let Some(spec) = req.export_cache.get(i).filter(|s| s.kind == "local") else {
                    bail!("the daemon sent bytes of an unknown cache export {i}");
                };
                let dest = PathBuf::from(spec.attrs.get("dest").map(String::as_str).unwrap_or("."));
                if cache_sinks[i].is_none() {
                    fs_err::create_dir_all(&dest)?;
                    cache_sinks[i] = Some(
                        tempfile::Builder::new()
                            .prefix(".kiln-cache-")
                            .tempfile_in(&dest)
                            .with_context(|| format!("creating a file in {}", dest.display()))?,
                    );
                }
                let f = cache_sinks[i].as_mut().expect("opened above");
                f.write_all(&c.data)
                    .with_context(|| format!("writing {}", f.path().display()))?;
                if c.last {
                    let tar = cache_sinks[i].take().expect("opened above");
                    tokio::task::block_in_place(|| receive_cache(tar, &dest))?;
                }
            }
            SMsg::Output(c) => {
                let i = c.index as usize;
                let (Some(spec), Some(Some(shape))) = (req.outputs.get(i), shapes.get(i)) else {
                    bail!("the daemon sent bytes of an unknown output {i}");
                };
                if sinks[i].is_none() {
                    sinks[i] = Some(open_sink(spec, *shape)?);
                }
                match sinks[i].as_mut().expect("opened above") {
                    Sink::File(w) => w.write_all(&c.data).context("writing the output")?,
                    Sink::Dir(f, _) => f
                        .write_all(&c.data)
                        .with_context(|| format!("writing {}", f.path().display()))?,
                }
                if c.last {
                    let s = sinks[i].take().expect("opened above");
                    tokio::task::block_in_place(|| finish_sink(s))?;
                }
            }
            SMsg::Done(d) => {
                break if d.failed {
                    Err(anyhow::anyhow!("{}", d.error))
                } else {
                    Ok(())
                };
            }
        }
    };
    drop(agents);
    drop(tx);
    result
}

/// Unpacks a received cache directory beside `dest` and merges it in.
fn receive_cache(tar: tempfile::NamedTempFile, dest: &Path) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-cache-")
        .tempdir_in(dest)
        .with_context(|| format!("creating a directory in {}", dest.display()))?;
    let f = fs_err::File::open(tar.path())?;
    tar::Archive::new(std::io::BufReader::new(f))
        .unpack(tmp.path())
        .with_context(|| format!("unpacking the received cache into {}", tmp.path().display()))?;
    kiln_engine::cache::merge_cache_layout(tmp.path(), dest)
        .with_context(|| format!("writing the cache to {}", dest.display()))
}

/// The client's end of forwarded ssh-agent connections: each one the
/// daemon opens is joined to the agent socket `--ssh` named for its id.
struct Agents {
    sockets: BTreeMap<String, PathBuf>,
    tx: mpsc::Sender<proto::ClientMessage>,
    conns: std::collections::HashMap<u64, mpsc::UnboundedSender<Option<Vec<u8>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Agents {
    fn new(sockets: BTreeMap<String, PathBuf>, tx: mpsc::Sender<proto::ClientMessage>) -> Agents {
        Agents {
            sockets,
            tx,
            conns: Default::default(),
            tasks: Vec::new(),
        }
    }

    fn handle(&mut self, d: proto::SshData) {
        if d.open {
            let (in_tx, in_rx) = mpsc::unbounded_channel();
            self.conns.insert(d.conn, in_tx);
            let path = self.sockets.get(&d.id).cloned();
            let tx = self.tx.clone();
            self.tasks
                .push(tokio::spawn(join_agent(d.conn, d.id, path, in_rx, tx)));
        } else if let Some(c) = self.conns.get(&d.conn) {
            let _ = c.send((!d.eof).then_some(d.data));
            if d.eof {
                self.conns.remove(&d.conn);
            }
        }
    }
}

/// Joins forwarded connection `conn` to the agent at `path`.
async fn join_agent(
    conn: u64,
    id: String,
    path: Option<PathBuf>,
    mut from_daemon: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    tx: mpsc::Sender<proto::ClientMessage>,
) {
    use tokio::io::AsyncWriteExt as _;
    let send = |d: proto::SshData| {
        tx.send(proto::ClientMessage {
            msg: Some(CMsg::Ssh(d)),
        })
    };
    let stream = match &path {
        Some(p) => tokio::net::UnixStream::connect(p)
            .await
            .with_context(|| format!("connecting to the ssh agent {id:?} at {}", p.display())),
        None => Err(anyhow::anyhow!("no --ssh {id} was given")),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            let _ = send(proto::SshData {
                conn,
                error: format!("{e:#}"),
                ..Default::default()
            })
            .await;
            return;
        }
    };
    let (r, mut w) = stream.into_split();
    let up = tokio::spawn(crate::daemon::send_ssh_bytes(r, conn, tx.clone(), |d| {
        proto::ClientMessage {
            msg: Some(CMsg::Ssh(d)),
        }
    }));
    while let Some(Some(d)) = from_daemon.recv().await {
        if w.write_all(&d).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    let _ = up.await;
}

fn cache_output(c: &kiln_engine::cache::CacheSpec) -> proto::Output {
    let have_blobs = match (c.kind.as_str(), c.attrs.get("dest")) {
        ("local", Some(d)) => blobs_in(Path::new(d)),
        _ => Vec::new(),
    };
    proto::Output {
        kind: c.kind.clone(),
        attrs: c.attrs.clone(),
        have_blobs,
    }
}

/// Sends the files the daemon asked for, in its order; false when the
/// daemon stopped listening.
async fn send_files(
    tx: &mpsc::Sender<proto::ClientMessage>,
    name: &str,
    dir: &Path,
    paths: &[String],
) -> anyhow::Result<bool> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; CHUNK];
    for p in paths {
        let full = dir.join(p);
        let mut f = tokio::fs::File::open(&full)
            .await
            .with_context(|| format!("reading {}", full.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .await
                .with_context(|| format!("reading {}", full.display()))?;
            let chunk = proto::FileChunk {
                name: name.to_string(),
                path: p.clone(),
                data: buf[..n].to_vec(),
                last: n == 0,
            };
            if tx
                .send(proto::ClientMessage {
                    msg: Some(CMsg::Chunk(chunk)),
                })
                .await
                .is_err()
            {
                return Ok(false);
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_lists_parents_first_with_modes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"abc").unwrap();
        std::fs::write(d.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("sub/f", d.path().join("l")).unwrap();
        let m = walk("context", d.path()).unwrap();
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "l", "sub", "sub/f"]);
        assert_eq!(m.entries[1].linkname, "sub/f");
        assert_eq!(m.entries[3].size, 3);
        assert_ne!(m.root_mode, 0);
    }
}
