//! [`RuncExecutor`]: one `runc run` per exec, the way BuildKit's runc
//! executor does it.
//!
//! Per run: a bundle dir `<state>/bundles/<id>` holding `config.json`, the
//! generated `hosts` and `resolv.conf`, scratch dirs, runc's log and (for an
//! overlay rootfs) the `rootfs` mount point. All fork/unshare/pivot_root
//! work happens in the runc child; this process only mounts the rootfs and
//! spawns. Teardown runs on every path, including panics and cancellation:
//! `runc delete --force`, stub removal, unmount, and removal of the bundle
//! only once nothing is mounted under it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oci_spec::runtime::{Mount as OciMount, MountBuilder};

use super::output::Tail;
use super::overlay::{is_mount_point, mount_overlay, unmount};
use super::paths::{clean_container_path, resolve_in_root};
use super::spec::{SpecInput, bounding_set, build, host_devices};
use super::stubs::MountStubs;
use super::user::resolve_user;
use super::{
    CancelToken, Error, ExecOutcome, ExecRequest, Executor, MountKind, OutputSink, Result, Rootfs,
    StreamKind,
};

/// Capability number of CAP_SYS_RESOURCE.
const CAP_SYS_RESOURCE: u32 = 24;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How [`RuncExecutor`] runs containers.
#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// The OCI runtime binary: a path, or a name looked up in `PATH`,
    /// `/usr/sbin` and `/sbin`. `runc` by default; `crun` or `youki` work on
    /// cgroup-v2-only hosts.
    pub runtime: PathBuf,
    /// Where bundles and the runtime's state (`--root`) live. Must be on a
    /// local filesystem; one state dir may be shared by several executors.
    pub state_dir: PathBuf,
    /// cgroups parent: each container gets `/<parent>/<id>`. `None` lets
    /// the runtime choose.
    pub cgroup_parent: Option<String>,
    /// Apply the default seccomp deny-list in sandbox mode.
    pub seccomp: bool,
    /// Hostname when the request names none.
    pub default_hostname: String,
    /// RLIMIT_NOFILE (soft and hard) for the process.
    pub nofile: u64,
    /// How many bytes of output to keep for error messages.
    pub tail_bytes: usize,
    /// How many lines of output an exit-code error quotes.
    pub tail_lines: usize,
}

impl RuncConfig {
    /// Defaults: `runc`, cgroups under `/kiln`, seccomp on, hostname
    /// `buildkitsandbox` (BuildKit's, which some build scripts expect).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            runtime: PathBuf::from("runc"),
            state_dir: state_dir.into(),
            cgroup_parent: Some("kiln".to_string()),
            seccomp: true,
            default_hostname: "buildkitsandbox".to_string(),
            nofile: 1 << 20,
            tail_bytes: 16 * 1024,
            tail_lines: 20,
        }
    }
}

/// Runs containers with an OCI runtime CLI (runc by default).
#[derive(Debug)]
pub struct RuncExecutor {
    cfg: RuncConfig,
    runtime: PathBuf,
    counter: AtomicU64,
}

fn find_runtime(runtime: &Path) -> Option<PathBuf> {
    if runtime.components().count() > 1 {
        return runtime.is_file().then(|| runtime.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(runtime))
        .find(|p| p.is_file())
}

/// The highest RLIMIT_NOFILE we may hand out: fs.nr_open when we hold
/// CAP_SYS_RESOURCE, otherwise our own hard limit (some sandboxes drop that
/// capability, and runc's prlimit then fails with EPERM).
fn nofile_ceiling() -> u64 {
    let nr_open = fs_err::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let has_sys_resource = fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0);
    if has_sys_resource {
        return nr_open;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        nr_open.min(lim.rlim_max)
    } else {
        1024
    }
}

impl RuncExecutor {
    /// Check that the runtime exists and create the state dirs.
    pub fn new(cfg: RuncConfig) -> Result<Self> {
        let runtime = find_runtime(&cfg.runtime).ok_or_else(|| Error::RuntimeNotFound {
            runtime: cfg.runtime.clone(),
        })?;
        for d in [cfg.state_dir.join("bundles"), cfg.state_dir.join("runc")] {
            fs_err::create_dir_all(&d).map_err(Error::io("create state dir", &d))?;
        }
        let exec = Self {
            cfg,
            runtime,
            counter: AtomicU64::new(0),
        };
        exec.recover();
        Ok(exec)
    }

    /// Clean up after runs of processes that died mid-run (a crash or a
    /// kill): for each bundle whose owning pid (in its id) is gone, delete
    /// the container, unmount its rootfs and remove the bundle. Bundles of
    /// live processes are left alone. Called by [`RuncExecutor::new`];
    /// returns how many bundles were removed.
    pub fn recover(&self) -> usize {
        let dir = self.cfg.state_dir.join("bundles");
        let Ok(entries) = fs_err::read_dir(&dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("kiln-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let _ = self
                .runtime_cmd()
                .args(["delete", "--force", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let bundle = e.path();
            let rootfs = bundle.join("rootfs");
            if is_mount_point(&rootfs) && unmount(&rootfs).is_err() {
                tracing::warn!(bundle = %bundle.display(), "stale rootfs stays mounted");
                continue;
            }
            if fs_err::remove_dir_all(&bundle).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(count = removed, "removed stale container bundles");
        }
        removed
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuncConfig {
        &self.cfg
    }

    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("kiln-{}-{n}-{nanos:08x}", std::process::id())
    }

    fn runtime_cmd(&self) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(self.cfg.state_dir.join("runc"));
        c
    }
}

/// Teardown state of one run; `Drop` undoes whatever was set up.
struct RunGuard<'a> {
    exec: &'a RuncExecutor,
    id: String,
    bundle: PathBuf,
    /// Set while the overlay rootfs is mounted.
    mounted_rootfs: Option<PathBuf>,
    started: bool,
    stubs: Option<(PathBuf, MountStubs)>,
}

impl RunGuard<'_> {
    fn teardown(&mut self) -> Result<()> {
        if self.started {
            self.started = false;
            let _ = self
                .exec
                .runtime_cmd()
                .args(["delete", "--force", &self.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some((root, stubs)) = self.stubs.take() {
            let removed = stubs.clean();
            if !removed.is_empty() {
                tracing::debug!(container = %self.id, root = %root.display(), count = removed.len(), "removed mount stubs");
            }
        }
        if let Some(target) = self.mounted_rootfs.take() {
            unmount(&target)?;
        }
        let rootfs = self.bundle.join("rootfs");
        if rootfs.exists() && is_mount_point(&rootfs) {
            // Never delete through a mount.
            return Ok(());
        }
        if self.bundle.exists() {
            fs_err::remove_dir_all(&self.bundle)
                .map_err(Error::io("remove bundle", &self.bundle))?;
        }
        Ok(())
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(container = %self.id, error = %e, "container teardown failed");
        }
    }
}

fn bind(dest: &Path, source: &Path, options: &[&str]) -> Result<OciMount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(dest.to_path_buf())
        .typ("bind")
        .source(source.to_path_buf())
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

fn hosts_file(hostname: &str, extra: &[(String, std::net::IpAddr)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// The host's resolv.conf (an empty one when the host has none).
fn resolv_conf() -> Vec<u8> {
    fs_err::read("/etc/resolv.conf").unwrap_or_default()
}

/// Create `cwd` inside the rootfs when it is missing, owned by the user.
fn ensure_cwd(root: &Path, cwd: &Path, uid: u32, gid: u32) -> Result<()> {
    let mut prefix = PathBuf::from("/");
    for c in cwd.components().skip(1) {
        prefix.push(c);
        let host = resolve_in_root(root, &prefix);
        if fs_err::symlink_metadata(&host).is_ok() {
            continue;
        }
        fs_err::create_dir(&host).map_err(Error::io("create working dir", &host))?;
        std::os::unix::fs::chown(&host, Some(uid), Some(gid))
            .map_err(Error::io("chown working dir", &host))?;
    }
    Ok(())
}

fn runtime_errors(log: &Path) -> Option<String> {
    let text = fs_err::read_to_string(log).ok()?;
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

/// Read a child's stream in chunks onto the channel until EOF.
fn pump(mut r: impl Read, kind: StreamKind, tx: mpsc::SyncSender<(StreamKind, Vec<u8>)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send((kind, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

impl RuncExecutor {
    /// Kill the container (and, if it never started, runc itself).
    fn kill(&self, id: &str, child: &mut Child) {
        let ok = self
            .runtime_cmd()
            .args(["kill", id, "KILL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = child.kill();
        }
    }

    /// Spawn runc and stream its output until it exits; returns the exit
    /// code and whether the run was canceled.
    fn supervise(
        &self,
        id: &str,
        bundle: &Path,
        output: &mut dyn OutputSink,
        tail: &mut Tail,
        cancel: &CancelToken,
    ) -> Result<(i32, bool)> {
        let mut child = self
            .runtime_cmd()
            .arg("--log")
            .arg(bundle.join("runc.log"))
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                runtime: self.runtime.clone(),
                container_id: id.to_string(),
                source,
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut canceled = false;
        let mut kill_deadline: Option<Instant> = None;
        let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
        // Detached readers: if something outside the container kept a pipe
        // open, we stop waiting for EOF shortly after runc exits instead of
        // hanging; the readers end once the channel is dropped.
        let (tx, rx) = mpsc::sync_channel(16);
        if let Some(out) = stdout {
            let tx = tx.clone();
            std::thread::spawn(move || pump(out, StreamKind::Stdout, tx));
        }
        if let Some(err) = stderr {
            let tx = tx.clone();
            std::thread::spawn(move || pump(err, StreamKind::Stderr, tx));
        }
        drop(tx);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((kind, data)) => {
                    tail.push(&data);
                    output.write(kind, &data);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if exited.is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some((status, Instant::now()));
            }
            if exited.is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(2)) {
                tracing::warn!(container = %id, "output pipes still open after the runtime exited");
                break;
            }
            if cancel.is_canceled() && !canceled {
                canceled = true;
                self.kill(id, &mut child);
                kill_deadline = Some(Instant::now() + Duration::from_secs(5));
            }
            if kill_deadline.is_some_and(|d| Instant::now() > d) {
                // The container ignored the kill: take runc down and have the
                // runtime kill whatever is left in the container's cgroup.
                let _ = child.kill();
                let _ = self
                    .runtime_cmd()
                    .args(["delete", "--force", id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                kill_deadline = None;
            }
        }
        let status = match exited {
            Some((status, _)) => status,
            None => child.wait().map_err(|source| Error::Spawn {
                runtime: self.runtime.clone(),
                container_id: id.to_string(),
                source,
            })?,
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255);
        Ok((code, canceled))
    }

    fn extra_mounts(
        &self,
        req: &ExecRequest,
        bundle: &Path,
        hostname: &str,
    ) -> Result<(Vec<OciMount>, Vec<PathBuf>)> {
        let spec_err = |source| Error::Spec {
            container_id: bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
        };
        let mut mounts = Vec::new();
        let mut dests = Vec::new();
        for (i, m) in req.mounts.iter().enumerate() {
            let dest = clean_container_path(&m.dest).ok_or_else(|| Error::InvalidRequest {
                problem: format!(
                    "mount destination {} is not an absolute path",
                    m.dest.display()
                ),
            })?;
            if dest == Path::new("/") {
                return Err(Error::InvalidRequest {
                    problem: "a mount cannot replace the rootfs `/`".to_string(),
                });
            }
            let mount = match &m.kind {
                MountKind::Bind { source, readonly } => {
                    let mode = if *readonly { "ro" } else { "rw" };
                    bind(&dest, source, &["rbind", mode])
                }
                MountKind::Secret { source } => {
                    bind(&dest, source, &["rbind", "ro", "nosuid", "nodev", "noexec"])
                }
                MountKind::SshSocket { source } => bind(&dest, source, &["rbind", "ro"]),
                MountKind::Tmpfs { size } => {
                    let mut opts = vec![
                        "nosuid".to_string(),
                        "nodev".to_string(),
                        "strictatime".to_string(),
                        "mode=1777".to_string(),
                    ];
                    if let Some(sz) = size {
                        opts.push(format!("size={sz}"));
                    }
                    MountBuilder::default()
                        .destination(dest.clone())
                        .typ("tmpfs")
                        .source(PathBuf::from("tmpfs"))
                        .options(opts)
                        .build()
                }
                MountKind::BindScratch { source } => {
                    let scratch = bundle.join(format!("scratch-{i}"));
                    let upper = scratch.join("upper");
                    let work = scratch.join("work");
                    for d in [&upper, &work] {
                        fs_err::create_dir_all(d).map_err(Error::io("create scratch dir", d))?;
                    }
                    for p in [source, &upper, &work] {
                        if p.to_str().is_none_or(|s| s.contains([',', ':'])) {
                            return Err(Error::UnsafeOverlayPath { path: p.clone() });
                        }
                    }
                    MountBuilder::default()
                        .destination(dest.clone())
                        .typ("overlay")
                        .source(PathBuf::from("overlay"))
                        .options(vec![
                            format!("lowerdir={}", source.display()),
                            format!("upperdir={}", upper.display()),
                            format!("workdir={}", work.display()),
                            "index=off".to_string(),
                            "metacopy=off".to_string(),
                            "redirect_dir=off".to_string(),
                        ])
                        .build()
                }
            }
            .map_err(spec_err)?;
            mounts.push(mount);
            dests.push(dest);
        }
        // Generated /etc/hosts and the host's resolv.conf, unless the caller
        // mounts its own.
        let generated: [(&str, Vec<u8>); 2] = [
            (
                "/etc/hosts",
                hosts_file(hostname, &req.extra_hosts).into_bytes(),
            ),
            ("/etc/resolv.conf", resolv_conf()),
        ];
        for (dest, content) in generated {
            if dests.iter().any(|d| d == Path::new(dest)) {
                continue;
            }
            let file = bundle.join(dest.rsplit('/').next().unwrap_or("file"));
            fs_err::write(&file, content).map_err(Error::io("write", &file))?;
            mounts.push(bind(Path::new(dest), &file, &["rbind", "ro"]).map_err(spec_err)?);
            dests.push(PathBuf::from(dest));
        }
        Ok((mounts, dests))
    }
}

/// Mount points the runtime may create in the rootfs for its own mounts.
const STANDARD_DESTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

impl Executor for RuncExecutor {
    fn run(
        &self,
        req: &ExecRequest,
        output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExecOutcome> {
        let argv = req.process.args.clone();
        if argv.is_empty() {
            return Err(Error::InvalidRequest {
                problem: "empty argv".to_string(),
            });
        }
        let cwd = clean_container_path(&req.process.cwd).ok_or_else(|| Error::InvalidRequest {
            problem: format!("working dir {} is not absolute", req.process.cwd.display()),
        })?;
        let id = self.new_id();
        let bundle = self.cfg.state_dir.join("bundles").join(&id);
        fs_err::create_dir_all(&bundle).map_err(Error::io("create bundle", &bundle))?;
        let mut guard = RunGuard {
            exec: self,
            id: id.clone(),
            bundle: bundle.clone(),
            mounted_rootfs: None,
            started: false,
            stubs: None,
        };

        let mut readonly_rootfs = req.readonly_rootfs;
        let root = match &req.rootfs {
            Rootfs::Overlay(spec) => {
                let target = bundle.join("rootfs");
                fs_err::create_dir(&target).map_err(Error::io("create rootfs dir", &target))?;
                let mut spec = spec.clone();
                if spec.upper.is_none() {
                    // The runtime must create mount points even in a
                    // read-only rootfs: give the overlay a throwaway upper
                    // and have the runtime make the root read-only after
                    // mounting.
                    let upperdir = bundle.join("scratch-root/upper");
                    let workdir = bundle.join("scratch-root/work");
                    for d in [&upperdir, &workdir] {
                        fs_err::create_dir_all(d).map_err(Error::io("create scratch dir", d))?;
                    }
                    spec.upper = Some(super::UpperDir { upperdir, workdir });
                    readonly_rootfs = true;
                }
                mount_overlay(&spec, &target)?;
                guard.mounted_rootfs = Some(target.clone());
                target
            }
            Rootfs::Dir(dir) => {
                fs_err::canonicalize(dir).map_err(Error::io("resolve rootfs dir", dir))?
            }
        };

        let user = resolve_user(&root, &req.process.user, &req.process.additional_gids)?;
        let hostname = req
            .hostname
            .clone()
            .unwrap_or_else(|| self.cfg.default_hostname.clone());
        let (extra_mounts, dests) = self.extra_mounts(req, &bundle, &hostname)?;
        let all_dests = STANDARD_DESTS
            .iter()
            .map(Path::new)
            .chain(dests.iter().map(PathBuf::as_path));
        guard.stubs = Some((root.clone(), MountStubs::record(&root, all_dests)));
        if !req.readonly_rootfs {
            ensure_cwd(&root, &cwd, user.uid, user.gid)?;
        }

        let mut env = req.process.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_string());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
        }
        let spec = build(SpecInput {
            rootfs: &root,
            readonly_rootfs,
            args: &argv,
            env,
            cwd: &cwd,
            user: &user,
            hostname: &hostname,
            network: req.network,
            security: req.security,
            extra_mounts,
            cgroups_path: self
                .cfg
                .cgroup_parent
                .as_ref()
                .map(|p| format!("/{}/{id}", p.trim_matches('/'))),
            seccomp: self.cfg.seccomp,
            nofile: self.cfg.nofile.min(nofile_ceiling()),
            devices: if req.security == super::SecurityMode::Insecure {
                host_devices()
            } else {
                Vec::new()
            },
            cap_mask: bounding_set(),
        })
        .map_err(|source| Error::Spec {
            container_id: id.clone(),
            source,
        })?;
        let config = bundle.join("config.json");
        spec.save(&config).map_err(|source| Error::Spec {
            container_id: id.clone(),
            source,
        })?;

        if cancel.is_canceled() {
            return Err(Error::Canceled {
                container_id: id,
                argv,
            });
        }
        guard.started = true;
        let mut tail = Tail::new(self.cfg.tail_bytes);
        tracing::debug!(container = %id, argv = ?argv, "starting container");
        let (code, canceled) = self.supervise(&id, &bundle, output, &mut tail, cancel)?;
        let runtime_error = if code != 0 && !canceled {
            runtime_errors(&bundle.join("runc.log"))
        } else {
            None
        };
        guard.teardown()?;

        if canceled {
            return Err(Error::Canceled {
                container_id: id,
                argv,
            });
        }
        if let Some(message) = runtime_error {
            return Err(Error::Runtime {
                container_id: id,
                argv,
                message,
            });
        }
        if code != 0 {
            return Err(Error::ExitCode {
                container_id: id,
                argv,
                code,
                output_tail: tail.last_lines(self.cfg.tail_lines),
            });
        }
        Ok(ExecOutcome {
            container_id: id,
            exit_code: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runtime_has_a_hint() {
        let mut cfg = RuncConfig::new(std::env::temp_dir().join("kiln-no-runtime"));
        cfg.runtime = PathBuf::from("definitely-not-a-runtime-kiln");
        let e = RuncExecutor::new(cfg).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("hint: install runc (apt-get install runc)"),
            "{msg}"
        );
    }

    #[test]
    fn hosts_lists_hostname_and_extras() {
        let h = hosts_file("box", &[("db".into(), "10.0.0.2".parse().unwrap())]);
        assert!(h.starts_with("127.0.0.1\tlocalhost box\n"));
        assert!(h.contains("10.0.0.2\tdb\n"));
    }
}
