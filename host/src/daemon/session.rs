//! One client's build on the daemon: receive the locals, run the build on
//! the shared [`Controller`] with the client's progress mode (asking the
//! client for secrets and ssh-agent connections as steps need them, see
//! [`super::attach`]), stream the client-side outputs back, end with
//! `Done`.
//!
//! The build is cancelled, and only this build, when the client goes away
//! (its stream breaks or the response is dropped) or the daemon stops.
//! Secrets stay in this task's memory and in the engine's session.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kiln_engine::{CancellationToken, Progress, ProgressMode};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::State;
use super::attach::{Attachments, ClientSecrets};
use super::proto::{self, client_message::Msg as CMsg, server_message::Msg as SMsg};
use super::transfer::Mirror;
use crate::control::{OutputSpec, SolveRequest};
use crate::frontend::FrontendLimits;

pub(crate) type Tx = mpsc::Sender<Result<proto::ServerMessage, Status>>;

const CHUNK: usize = 1 << 20;

/// Where an output is written when the daemon streams it to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputShape {
    /// A file (a tarball, a definition), or stdout.
    File,
    /// A directory, sent as a tar stream.
    Dir,
}

/// Whether the client writes output `o`, and in which shape: `local`,
/// `tar`, `oci`, `docker` and `llb` outputs land on the client's side;
/// `image` is pushed by the daemon.
pub fn client_side(o: &OutputSpec) -> Option<OutputShape> {
    let dest = o.attrs.get("dest").map(String::as_str);
    match o.kind.as_str() {
        "local" => dest.map(|_| OutputShape::Dir),
        "oci" if o.attrs.get("tar").is_some_and(|v| v == "false") => {
            dest.filter(|d| *d != "-").map(|_| OutputShape::Dir)
        }
        "oci" | "docker" | "tar" | "llb" => Some(OutputShape::File),
        _ => None,
    }
}

/// Progress bytes, in order with a flush marker.
enum Fwd {
    Bytes(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

struct ChannelWriter(mpsc::UnboundedSender<Fwd>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A client that went away drops its progress; the build is being
        // cancelled then.
        let _ = self.0.send(Fwd::Bytes(buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn msg(m: SMsg) -> Result<proto::ServerMessage, Status> {
    Ok(proto::ServerMessage { msg: Some(m) })
}

async fn next(inbound: &mut Streaming<proto::ClientMessage>) -> anyhow::Result<CMsg> {
    match inbound.message().await {
        Ok(Some(proto::ClientMessage { msg: Some(m) })) => Ok(m),
        Ok(Some(_)) => bail!("the client sent an empty message"),
        Ok(None) => bail!("the client closed the session early"),
        Err(s) => bail!("the client's stream broke: {}", s.message()),
    }
}

/// Runs one session to the end; errors go to the client in `Done`.
pub(crate) async fn run(state: Arc<State>, inbound: Streaming<proto::ClientMessage>, tx: Tx) {
    let id = state.next_session();
    let cancel = state.shutdown.child_token();
    state.register(id, cancel.clone());
    let started = Instant::now();
    let dir = state.sessions_dir.join(format!("{id}"));
    let outcome = match fs_err::create_dir_all(&dir) {
        Ok(()) => serve(&state, id, &dir, inbound, &tx, cancel.clone()).await,
        Err(e) => Err(anyhow::Error::new(e).context("creating the session directory")),
    };
    state.unregister(id);
    let secs = started.elapsed().as_secs_f64();
    let done = match outcome {
        Ok(()) => {
            tracing::info!(session = id, secs, "build done");
            proto::Done::default()
        }
        Err(e) => {
            if cancel.is_cancelled() && tx.is_closed() {
                tracing::warn!(session = id, secs, "client went away; build cancelled");
            } else if cancel.is_cancelled() {
                tracing::warn!(
                    session = id,
                    secs,
                    "build cancelled: the daemon is stopping"
                );
            } else {
                tracing::info!(session = id, secs, error = %format!("{e:#}"), "build failed");
            }
            proto::Done {
                failed: true,
                error: format!("{e:#}"),
                ..Default::default()
            }
        }
    };
    let _ = tx.send(msg(SMsg::Done(done))).await;
    let d = dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d)).await;
}

async fn serve(
    state: &Arc<State>,
    id: u64,
    dir: &Path,
    mut stream: Streaming<proto::ClientMessage>,
    tx: &Tx,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let inbound = &mut stream;
    let start = match next(inbound).await? {
        CMsg::Start(s) => s,
        _ => bail!("the client did not open the session with Start"),
    };
    tracing::info!(
        session = id,
        frontend = %if start.frontend.is_empty() { "(llb)" } else { start.frontend.as_str() },
        locals = start.locals.len(),
        outputs = start.outputs.len(),
        ssh = start.ssh_ids.len(),
        "build started"
    );
    // Locals, one after the other, in the order Start names them.
    let mut mirrors: Vec<Mirror> = Vec::new();
    for spec in &start.locals {
        let mirrors_ref = &state.mirrors;
        let mut m = mirrors_ref.acquire(&spec.name, &spec.shared_key, dir)?;
        let manifest = match next(inbound).await? {
            CMsg::Manifest(m) if m.name == spec.name => m,
            _ => bail!("expected the manifest of local {:?}", spec.name),
        };
        let need = m.apply(&manifest)?;
        tx.send(msg(SMsg::Need(proto::NeedFiles {
            name: spec.name.clone(),
            paths: need,
        })))
        .await
        .context("the client went away")?;
        loop {
            match next(inbound).await? {
                CMsg::Chunk(c) if c.name == spec.name => m.write_chunk(&c)?,
                CMsg::LocalDone(d) if d.name == spec.name => break,
                _ => bail!("unexpected message while receiving local {:?}", spec.name),
            }
        }
        m.finish()?;
        let (sent, total, bytes) = m.stats();
        tracing::info!(session = id, local = %spec.name, files_requested = sent, entries = total, bytes, "local received");
        mirrors.push(m);
    }
    let mut locals = BTreeMap::new();
    let mut oci_layouts = BTreeMap::new();
    let mut import_cache: Vec<_> = start.import_cache.into_iter().map(cache_spec).collect();
    let mut mirrored = std::collections::HashSet::new();
    for m in &mirrors {
        let tree = m.tree().display().to_string();
        if let Some(n) = m.name().strip_prefix("oci-layout:") {
            oci_layouts.insert(n.to_string(), m.tree().to_path_buf());
        } else if let Some(i) = m.name().strip_prefix("cache:") {
            // A `type=local` cache import reads the mirror of the
            // client's directory.
            let i = i.parse::<usize>().ok();
            let spec = i
                .and_then(|i| import_cache.get_mut(i))
                .filter(|s| s.kind == "local")
                .with_context(|| format!("local {:?} names no --import-cache", m.name()))?;
            spec.attrs.insert("src".into(), tree);
            mirrored.extend(i);
        } else {
            locals.insert(m.name().to_string(), m.tree().to_path_buf());
        }
    }
    // Never a directory of the daemon's own machine.
    let import_cache: Vec<_> = import_cache
        .into_iter()
        .enumerate()
        .filter(|(i, s)| s.kind != "local" || mirrored.contains(i))
        .map(|(_, s)| s)
        .collect();
    // A `type=local` cache export is written here, then sent back without
    // the blobs the client's directory already has.
    let mut export_cache = Vec::new();
    let mut cache_dirs: Vec<(usize, PathBuf, std::collections::HashSet<String>)> = Vec::new();
    for (i, o) in start.export_cache.into_iter().enumerate() {
        let have = o.have_blobs.iter().cloned().collect();
        let mut spec = cache_spec(o);
        if spec.kind == "local" {
            let p = dir.join(format!("cache-out-{i}"));
            spec.attrs.insert("dest".into(), p.display().to_string());
            cache_dirs.push((i, p, have));
        }
        export_cache.push(spec);
    }
    // The client's secrets and ssh agents, asked for while the build runs.
    let attach = Attachments::new(id, tx.clone());
    let mut ssh = BTreeMap::new();
    for (i, name) in start.ssh_ids.iter().enumerate() {
        let sock = attach.listen_ssh(name, &dir.join(format!("ssh-{i}.sock")))?;
        ssh.insert(name.clone(), sock);
    }
    // Client-side outputs go to files in the session dir first.
    let mut outputs = Vec::new();
    let mut streamed: Vec<(usize, OutputShape, PathBuf)> = Vec::new();
    for (i, o) in start.outputs.iter().enumerate() {
        let mut spec = OutputSpec {
            kind: o.kind.clone(),
            attrs: o.attrs.clone(),
        };
        if let Some(shape) = client_side(&spec) {
            let p = dir.join(format!("out-{i}"));
            spec.attrs.insert("dest".into(), p.display().to_string());
            streamed.push((i, shape, p));
        }
        outputs.push(spec);
    }
    let mode = ProgressMode::parse(&start.progress)
        .filter(|_| start.progress != "auto")
        .with_context(|| format!("unknown progress mode {:?}", start.progress))?;
    let limits = start.limits.unwrap_or_default();
    let defaults = FrontendLimits::default();
    let req = SolveRequest {
        frontend: (!start.frontend.is_empty()).then_some(start.frontend),
        frontend_opts: start.frontend_opts,
        definition: start.has_definition.then_some(start.definition),
        locals,
        outputs,
        secrets: BTreeMap::new(),
        secret_source: Some(Arc::new(ClientSecrets(attach.clone()))),
        ssh,
        oci_layouts,
        no_cache: start.no_cache,
        explain_cache: start.explain_cache,
        progress: start.progress,
        limits: FrontendLimits {
            timeout: Duration::from_secs_f64(limits.timeout_seconds.max(0.001)),
            max_memory_bytes: limits.max_memory_bytes,
            max_solves: limits.max_solves,
            max_result_bytes: limits.max_result_bytes,
            max_log_bytes: limits.max_log_bytes,
            ..defaults
        },
        frontend_component: (!start.frontend_component.is_empty())
            .then_some(start.frontend_component),
        export_cache,
        import_cache,
    };

    // Progress: rendered here in the client's mode, forwarded in order.
    let (ptx, mut prx) = mpsc::unbounded_channel::<Fwd>();
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(f) = prx.recv().await {
                match f {
                    Fwd::Bytes(b) => {
                        if tx.send(msg(SMsg::Progress(b))).await.is_err() {
                            break;
                        }
                    }
                    Fwd::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })
    };
    let progress = Progress::with_writer(mode, Box::new(ChannelWriter(ptx.clone())));

    // The rest of the client's stream carries its answers (secrets, ssh
    // bytes); a broken stream means the client is gone, which cancels its
    // build.
    let watch = {
        let cancel = cancel.clone();
        let tx = tx.clone();
        let attach = attach.clone();
        let mut rest = stream;
        tokio::spawn(async move {
            let broken = async {
                loop {
                    match rest.message().await {
                        Ok(Some(proto::ClientMessage { msg: Some(m) })) => {
                            if let Err(e) = attach.dispatch(m) {
                                tracing::warn!(session = id, error = %format!("{e:#}"), "bad message from the client");
                                attach.close();
                                return;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            attach.close();
                            std::future::pending::<()>().await
                        }
                        Err(_) => {
                            attach.close();
                            return;
                        }
                    }
                }
            };
            tokio::select! {
                _ = tx.closed() => cancel.cancel(),
                _ = broken => cancel.cancel(),
                _ = cancel.cancelled() => {}
            }
        })
    };
    let result = state
        .controller
        .solve_with(req, progress, cancel.clone())
        .await;
    attach.close();
    let (ftx, frx) = oneshot::channel();
    let _ = ptx.send(Fwd::Flush(ftx));
    let _ = frx.await;
    if cancel.is_cancelled() {
        watch.abort();
        forward.abort();
        result?;
        bail!("the build was cancelled");
    }
    result?;
    for (i, shape, p) in streamed {
        send_output(tx, i as u32, shape, &p, dir, None).await?;
    }
    for (i, p, have) in cache_dirs {
        let blobs = send_output(tx, i as u32, OutputShape::Dir, &p, dir, Some(&have)).await?;
        tracing::info!(
            session = id,
            export = i,
            blobs,
            client_has = have.len(),
            "cache sent"
        );
    }
    watch.abort();
    forward.abort();
    drop(mirrors);
    Ok(())
}

fn cache_spec(o: proto::Output) -> kiln_engine::cache::CacheSpec {
    kiln_engine::cache::CacheSpec {
        kind: o.kind,
        attrs: o.attrs,
    }
}

/// Streams an exported file (or a directory, as a tar) to the client.
/// `cache_have` marks a cache directory (of `Start.export_cache`) and the
/// blobs the client already has, which are left out. Returns how many
/// blobs were sent.
async fn send_output(
    tx: &Tx,
    index: u32,
    shape: OutputShape,
    path: &Path,
    dir: &Path,
    cache_have: Option<&std::collections::HashSet<String>>,
) -> anyhow::Result<usize> {
    let cache = cache_have.is_some();
    let (file, blobs) = match shape {
        OutputShape::File => (path.to_path_buf(), 0),
        OutputShape::Dir => {
            let tar = dir.join(format!(
                "{}-{index}.tar",
                if cache { "cache" } else { "out" }
            ));
            let (src, dst) = (path.to_path_buf(), tar.clone());
            let skip = cache_have.cloned();
            let n =
                tokio::task::spawn_blocking(move || tar_dir(&src, &dst, skip.as_ref())).await??;
            (tar, n)
        }
    };
    use tokio::io::AsyncReadExt as _;
    let mut f = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        let last = n == 0;
        tx.send(msg(SMsg::Output(proto::OutputChunk {
            index,
            data: buf[..n].to_vec(),
            last,
            cache,
        })))
        .await
        .context("the client went away")?;
        if last {
            return Ok(blobs);
        }
    }
}

/// Packs `src` as a tar at `dst`. For a cache layout (`skip_blobs` given),
/// leaves out `blobs/sha256/<hex>` for every hex in `skip_blobs`, and
/// returns how many blobs it packed.
fn tar_dir(
    src: &Path,
    dst: &Path,
    skip_blobs: Option<&std::collections::HashSet<String>>,
) -> anyhow::Result<usize> {
    let f = fs_err::File::create(dst)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut blobs = 0;
    match skip_blobs {
        _ if !src.exists() => {}
        Some(skip) => append_tree(&mut b, src, Path::new(""), skip, &mut blobs)?,
        None => b
            .append_dir_all(".", src)
            .with_context(|| format!("packing {}", src.display()))?,
    }
    b.into_inner()?.flush()?;
    Ok(blobs)
}

fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    skip_blobs: &std::collections::HashSet<String>,
    blobs: &mut usize,
) -> anyhow::Result<()> {
    let here = root.join(rel);
    let mut names: Vec<_> = fs_err::read_dir(&here)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let full = root.join(&r);
        let blob = rel == Path::new("blobs/sha256");
        if blob && n.to_str().is_some_and(|h| skip_blobs.contains(h)) {
            continue;
        }
        b.append_path_with_name(&full, &r)
            .with_context(|| format!("packing {}", full.display()))?;
        if fs_err::symlink_metadata(&full)?.is_dir() {
            append_tree(b, root, &r, skip_blobs, blobs)?;
        } else if blob {
            *blobs += 1;
        }
    }
    Ok(())
}
