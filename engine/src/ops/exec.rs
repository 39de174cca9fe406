//! ExecOp: run a process through kiln-runtime's [`Executor`].
//!
//! The rootfs is an overlay of the root input's snapshot chain with a fresh
//! upper dir (or, in copy mode, a writable full copy). Mounts: bind (with
//! selector, read-only or writable, with or without output), cache (kept by
//! id under `<root>/engine/v1/cachemounts`, sharing shared / private /
//! locked), tmpfs, secret and ssh. Secrets live only in memory and in a
//! 0600-or-tighter temp file outside the rootfs for the run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use kiln_llb::pb;
use kiln_runtime::executor::{
    self as rt, CancelToken, ExecRequest, MountKind, NetworkMode, OutputSink, OverlaySpec, Rootfs,
    SecurityMode, StreamKind, UpperDir,
};
use kiln_store::Active;

use super::sshproxy::AgentProxy;
use super::{OpCtx, Ref, Worker, blocking, explain, inputs_key, remember};
use crate::cachekey::CacheKey;
use crate::fsutil;
use crate::records::KeyParts;
use crate::session::Session;

/// The secrets one step asked for, by id.
type Secrets = BTreeMap<String, Arc<Vec<u8>>>;
use crate::solver::{BoxFuture, Input, Op, OpContext, ProgressSink, VertexInfo};

pub use kiln_runtime::executor::Executor;

/// How exec rootfs snapshots are prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlay mount of the input chain (needs mount privileges).
    #[default]
    Overlay,
    /// A full writable copy (no privileges needed; slower).
    Copy,
}

pub(crate) struct ExecOpImpl {
    ctx: OpCtx,
    exec: Arc<pb::ExecOp>,
    n_inputs: usize,
    outputs: usize,
    parts: Mutex<Option<KeyParts>>,
}

impl ExecOpImpl {
    pub(crate) fn new(
        ctx: OpCtx,
        exec: pb::ExecOp,
        _platform: Option<pb::Platform>,
        n_inputs: usize,
    ) -> std::result::Result<Self, String> {
        if exec.meta.as_ref().is_none_or(|m| m.args.is_empty()) {
            return Err("exec op has no command".into());
        }
        if !exec.mounts.iter().any(|m| m.dest == "/") {
            return Err("exec op has no root mount".into());
        }
        let mut outputs = 0usize;
        for (i, m) in exec.mounts.iter().enumerate() {
            if m.input < -1 || m.input >= n_inputs as i64 {
                return Err(format!(
                    "mount {i} ({}) refers to input {}, which does not exist",
                    m.dest, m.input
                ));
            }
            if m.output >= 0 {
                outputs = outputs.max(m.output as usize + 1);
            }
        }
        Ok(ExecOpImpl {
            ctx,
            exec: Arc::new(exec),
            n_inputs,
            outputs,
            parts: Mutex::new(None),
        })
    }

    pub(crate) fn output_count(&self) -> usize {
        self.outputs
    }
}

impl Op<Ref> for ExecOpImpl {
    fn outputs(&self) -> usize {
        self.outputs
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move { Ok(inputs_key(&self.ctx, "exec", inputs, &self.parts)) })
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let worker = self.ctx.worker.clone();
            let Some(executor) = worker.executor.clone() else {
                bail!(
                    "no container runtime is configured: cannot run {:?}",
                    self.ctx.name
                );
            };
            let refs: Vec<Ref> = inputs.iter().map(|i| i.result.clone()).collect();
            debug_assert_eq!(refs.len(), self.n_inputs);
            let exec = self.exec.clone();
            let session = self.ctx.session.clone();
            // Secrets are looked up here, before the container starts: a
            // daemon asks its client for them, over the network.
            let wanted: Vec<String> = exec
                .mounts
                .iter()
                .filter(|m| m.mount_type == pb::MountType::Secret as i32)
                .map(|m| m.secret_opt.clone().unwrap_or_default().id)
                .chain(exec.secretenv.iter().map(|s| s.id.clone()))
                .collect();
            let secrets = session
                .secrets
                .resolve(wanted.iter().map(String::as_str))
                .await
                .context("asking the client for a secret")?;
            let vertex = VertexInfo {
                digest: cx.digest.clone(),
                name: cx.name.clone(),
                inputs: Vec::new(),
            };
            let token = CancelToken::new();
            let watcher = {
                let token = token.clone();
                let c = cx.cancel.clone();
                tokio::spawn(async move {
                    c.cancelled().await;
                    token.cancel();
                })
            };
            let outputs = self.outputs;
            let r = blocking(move || {
                run_exec(
                    &worker,
                    executor.as_ref(),
                    &exec,
                    &refs,
                    &session,
                    &secrets,
                    &vertex,
                    &token,
                    outputs,
                )
            })
            .await;
            watcher.abort();
            r
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move { explain(&self.ctx, "exec", &self.parts, inputs) })
    }

    fn after_solve(&self, _key: &CacheKey, inputs: &[Input<Ref>]) {
        remember(&self.ctx, "exec", &self.parts, inputs);
    }
}

/// Forwards process output to the progress log, line by line.
struct ProgressOutput<'a> {
    session: &'a Session,
    vertex: &'a VertexInfo,
    pending: Vec<u8>,
}

impl OutputSink for ProgressOutput<'_> {
    fn write(&mut self, _stream: StreamKind, data: &[u8]) {
        self.pending.extend_from_slice(data);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.session.progress.log(self.vertex, &text);
        }
    }
}

impl Drop for ProgressOutput<'_> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.session.progress.log(self.vertex, &text);
        }
    }
}

/// Things to undo after a run.
#[derive(Default)]
struct Cleanup {
    actives: Vec<(Option<usize>, Active)>,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    locks: Vec<CacheGuard>,
    agents: Vec<super::sshproxy::AgentProxy>,
}

struct CacheGuard {
    _file: fs_err::File,
}

fn cache_locks() -> &'static Mutex<HashMap<String, Arc<Mutex<()>>>> {
    static L: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn flock(file: &fs_err::File, exclusive: bool, wait: bool) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    // SAFETY: the fd is valid for the lifetime of `file`.
    let r = unsafe { libc::flock(file.file().as_raw_fd(), op) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e).context("flock on a cache mount")
}

#[allow(clippy::too_many_arguments)]
fn run_exec(
    worker: &Arc<Worker>,
    executor: &dyn Executor,
    exec: &pb::ExecOp,
    refs: &[Ref],
    session: &Session,
    secrets: &Secrets,
    vertex: &VertexInfo,
    cancel: &CancelToken,
    outputs: usize,
) -> Result<Vec<Ref>> {
    let mut cleanup = Cleanup::default();
    let r = run_exec_inner(
        worker,
        executor,
        exec,
        refs,
        session,
        secrets,
        vertex,
        cancel,
        outputs,
        &mut cleanup,
    );
    for (_, a) in cleanup.actives.drain(..) {
        let _ = worker.snapshots.abort(a);
    }
    for f in &cleanup.files {
        let _ = std::fs::remove_file(f);
    }
    for d in &cleanup.dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    cleanup.locks.clear();
    cleanup.agents.clear();
    r
}

#[allow(clippy::too_many_arguments)]
fn run_exec_inner(
    worker: &Arc<Worker>,
    executor: &dyn Executor,
    exec: &pb::ExecOp,
    refs: &[Ref],
    session: &Session,
    secrets: &Secrets,
    vertex: &VertexInfo,
    cancel: &CancelToken,
    outputs: usize,
    cleanup: &mut Cleanup,
) -> Result<Vec<Ref>> {
    let meta = exec.meta.clone().unwrap_or_default();
    let input_ref = |i: i64| -> Ref {
        if i < 0 {
            Ref(None)
        } else {
            refs[i as usize].clone()
        }
    };
    let mut results: Vec<Option<Ref>> = vec![None; outputs];
    let root = exec
        .mounts
        .iter()
        .find(|m| m.dest == "/")
        .context("exec op has no root mount")?;
    let root_ref = input_ref(root.input);
    let overlay = worker.rootfs_mode == RootfsMode::Overlay;
    let root_active = if overlay {
        worker.snapshots.prepare(root_ref.0.as_ref())?
    } else {
        worker.snapshots.prepare_copy(root_ref.0.as_ref())?
    };
    let rootfs = if overlay {
        let lowers = worker.snapshots.overlay_lowers(root_ref.0.as_ref(), 100)?;
        Rootfs::Overlay(OverlaySpec {
            lowerdirs: lowers.absolute(),
            upper: Some(UpperDir {
                upperdir: root_active.upper(),
                workdir: root_active.work(),
            }),
        })
    } else {
        Rootfs::Dir(root_active.root())
    };
    let root_out = (root.output >= 0 && !root.readonly).then_some(root.output as usize);
    cleanup.actives.push((root_out, root_active));
    let mut req = ExecRequest::new(rootfs, meta.args.clone());
    req.readonly_rootfs = root.readonly;
    if root.readonly && root.output >= 0 {
        results[root.output as usize] = Some(root_ref.clone());
    }
    let mut mounts: Vec<&pb::Mount> = exec.mounts.iter().filter(|m| m.dest != "/").collect();
    mounts.sort_by(|a, b| a.dest.cmp(&b.dest));
    for m in mounts {
        let dest = PathBuf::from(&m.dest);
        let kind = match pb::MountType::try_from(m.mount_type).unwrap_or(pb::MountType::Bind) {
            pb::MountType::Bind => {
                let r = input_ref(m.input);
                if m.readonly {
                    if m.output >= 0 {
                        results[m.output as usize] = Some(r.clone());
                    }
                    let v = worker.view(&r)?;
                    let src = fsutil::resolve(&v, &m.selector, true)?;
                    MountKind::Bind {
                        source: src,
                        readonly: true,
                    }
                } else if m.output >= 0 {
                    let a = worker.snapshots.prepare_copy(r.0.as_ref())?;
                    let src = fsutil::resolve(&a.root(), &m.selector, true)?;
                    cleanup.actives.push((Some(m.output as usize), a));
                    MountKind::Bind {
                        source: src,
                        readonly: false,
                    }
                } else {
                    let v = worker.view(&r)?;
                    let src = fsutil::resolve(&v, &m.selector, true)?;
                    MountKind::BindScratch { source: src }
                }
            }
            pb::MountType::Tmpfs => MountKind::Tmpfs {
                size: m
                    .tmpfs_opt
                    .as_ref()
                    .map(|t| t.size)
                    .filter(|&s| s > 0)
                    .map(|s| s as u64),
            },
            pb::MountType::Cache => cache_mount(worker, m, &input_ref(m.input), cleanup)?,
            pb::MountType::Secret => {
                let opt = m.secret_opt.clone().unwrap_or_default();
                match secrets.get(&opt.id) {
                    Some(value) => {
                        let path = secret_file(worker, value, &opt, cleanup)?;
                        MountKind::Secret { source: path }
                    }
                    None if opt.optional => continue,
                    None => bail!("secret {:?} is not provided by the session", opt.id),
                }
            }
            pb::MountType::Ssh => {
                let opt = m.ssh_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() {
                    "default"
                } else {
                    opt.id.as_str()
                };
                match session.ssh.get(id) {
                    Some(sock) if AgentProxy::needed(opt.uid, opt.gid, opt.mode) => {
                        let p = AgentProxy::start(
                            &worker.dir.join("tmp"),
                            sock,
                            opt.uid,
                            opt.gid,
                            opt.mode,
                        )?;
                        let source = p.path().to_path_buf();
                        cleanup.agents.push(p);
                        MountKind::SshSocket { source }
                    }
                    Some(sock) => MountKind::SshSocket {
                        source: sock.clone(),
                    },
                    None if opt.optional => continue,
                    None => bail!("ssh agent {id:?} is not provided by the session"),
                }
            }
        };
        req.mounts.push(rt::Mount { dest, kind });
    }
    let mut env = meta.env.clone();
    if let Some(p) = &meta.proxy_env {
        for (k, v) in [
            ("HTTP_PROXY", &p.http_proxy),
            ("HTTPS_PROXY", &p.https_proxy),
            ("FTP_PROXY", &p.ftp_proxy),
            ("NO_PROXY", &p.no_proxy),
            ("ALL_PROXY", &p.all_proxy),
        ] {
            if !v.is_empty() {
                env.push(format!("{k}={v}"));
                env.push(format!("{}={v}", k.to_lowercase()));
            }
        }
    }
    for se in &exec.secretenv {
        match secrets.get(&se.id) {
            Some(v) => env.push(format!("{}={}", se.name, String::from_utf8_lossy(v))),
            None if se.optional => {}
            None => bail!(
                "secret {:?} (for env {}) is not provided by the session",
                se.id,
                se.name
            ),
        }
    }
    req.process.env = env;
    if !meta.cwd.is_empty() {
        req.process.cwd = PathBuf::from(&meta.cwd);
    }
    req.process.user = meta.user.clone();
    if !meta.hostname.is_empty() {
        req.hostname = Some(meta.hostname.clone());
    }
    for h in &meta.extra_hosts {
        let ip =
            h.ip.parse()
                .with_context(|| format!("extra host {}: bad IP {:?}", h.host, h.ip))?;
        req.extra_hosts.push((h.host.clone(), ip));
    }
    req.network = match pb::NetMode::try_from(exec.network).unwrap_or(pb::NetMode::Unset) {
        pb::NetMode::None => NetworkMode::None,
        _ => NetworkMode::Host,
    };
    req.security =
        match pb::SecurityMode::try_from(exec.security).unwrap_or(pb::SecurityMode::Sandbox) {
            pb::SecurityMode::Insecure => SecurityMode::Insecure,
            _ => SecurityMode::Sandbox,
        };
    {
        let mut out = ProgressOutput {
            session,
            vertex,
            pending: Vec::new(),
        };
        match executor.run(&req, &mut out, cancel) {
            Ok(_) => {}
            // `validExitCodes`: other codes than 0 may count as success.
            Err(rt::Error::ExitCode { code, .. }) if meta.valid_exit_codes.contains(&code) => {}
            // The runtime's message already names the process, its exit
            // code and its last output lines.
            Err(e @ rt::Error::ExitCode { .. }) => return Err(anyhow!(e)),
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!("process {:?} did not complete successfully", meta.args)
                });
            }
        }
    }
    // Commit writable outputs; results only become visible once committed.
    for (out, a) in std::mem::take(&mut cleanup.actives) {
        match out {
            Some(i) => {
                let id = worker.snapshots.commit(a)?;
                results[i] = Some(Ref(Some(id)));
            }
            None => {
                let _ = worker.snapshots.abort(a);
            }
        }
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("exec output {i} was not produced")))
        .collect()
}

/// A cache mount directory by id, honouring the sharing mode.
fn cache_mount(
    worker: &Worker,
    m: &pb::Mount,
    base: &Ref,
    cleanup: &mut Cleanup,
) -> Result<MountKind> {
    let opt = m.cache_opt.clone().unwrap_or_default();
    let id = if opt.id.is_empty() {
        m.dest.clone()
    } else {
        opt.id.clone()
    };
    let hashed = crate::cachekey::sha256_digest(id.as_bytes());
    let name = hashed.trim_start_matches("sha256:").to_owned();
    let base_dir = worker.dir.join("cachemounts");
    let dir = base_dir.join(&name);
    let seed = |d: &PathBuf| -> Result<()> {
        if !d.exists() {
            let tmp = worker
                .dir
                .join("tmp")
                .join(format!("cm-{}", kiln_store::fsutil::random_hex()?));
            if base.0.is_some() {
                let v = worker.view(base)?;
                let src = fsutil::resolve(&v, &m.selector, true)?;
                fsutil::copy_tree(&src, &tmp)?;
            } else {
                fs_err::create_dir_all(&tmp)?;
            }
            if std::fs::rename(&tmp, d).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        Ok(())
    };
    seed(&dir)?;
    let lockfile = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(base_dir.join(format!("{name}.lock")))?;
    let sharing = pb::CacheSharingOpt::try_from(opt.sharing).unwrap_or(pb::CacheSharingOpt::Shared);
    let source = match sharing {
        pb::CacheSharingOpt::Shared => {
            flock(&lockfile, false, true)?;
            dir
        }
        pb::CacheSharingOpt::Locked => {
            flock(&lockfile, true, true)?;
            dir
        }
        pb::CacheSharingOpt::Private => {
            // In-process users share the lock file description, so track
            // them with a mutex as well.
            let l = cache_locks()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .or_default()
                .clone();
            let free = l.try_lock().is_ok();
            if free && flock(&lockfile, true, false)? {
                dir
            } else {
                let d = worker
                    .dir
                    .join("tmp")
                    .join(format!("cm-private-{}", kiln_store::fsutil::random_hex()?));
                seed(&d)?;
                cleanup.dirs.push(d.clone());
                d
            }
        }
    };
    cleanup.locks.push(CacheGuard { _file: lockfile });
    Ok(MountKind::Bind {
        source,
        readonly: m.readonly,
    })
}

/// Writes a secret to a private temp file outside any rootfs.
fn secret_file(
    worker: &Worker,
    value: &[u8],
    opt: &pb::SecretOpt,
    cleanup: &mut Cleanup,
) -> Result<PathBuf> {
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        shm
    } else {
        worker.dir.join("tmp")
    };
    let path = dir.join(format!("kiln-secret-{}", kiln_store::fsutil::random_hex()?));
    let mode = if opt.mode == 0 {
        0o400
    } else {
        opt.mode & 0o777
    };
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating a secret file in {}", dir.display()))?;
    cleanup.files.push(path.clone());
    f.write_all(value)?;
    drop(f);
    fsutil::lchown(&path, opt.uid, opt.gid)?;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(path)
}
