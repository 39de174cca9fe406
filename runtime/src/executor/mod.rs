//! Running one process in a container.
//!
//! The engine's exec op describes a run with an [`ExecRequest`] (rootfs,
//! mounts, process, network, security) and hands it to an [`Executor`]. The
//! real implementation is [`RuncExecutor`]: it mounts the rootfs itself (the
//! engine process may call mount(2) but never forks or unshares), writes an
//! OCI runtime config generated with `oci-spec`, runs `runc run`, and cleans
//! up after itself (container state, mount stubs, the rootfs mount).
//!
//! Uses only std, libc and oci-spec; nothing from the layers above.

mod error;
mod fake;
mod output;
mod overlay;
mod paths;
mod runc;
mod spec;
mod stubs;
mod user;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use error::{Error, Result};
pub use fake::FnExecutor;
pub use output::{CapturedOutput, DiscardOutput, OutputSink, StreamKind};
pub use overlay::{mount_overlay, unmount};
pub use runc::{RuncConfig, RuncExecutor};
pub use user::{ResolvedUser, resolve_user};

/// Runs processes in containers.
///
/// Lifecycle: the caller builds an [`ExecRequest`] whose rootfs and mount
/// sources already exist (snapshots prepared by the store), calls [`run`],
/// and afterwards owns the rootfs again: for an overlay rootfs the upper dir
/// holds exactly the changes of the run (mount stubs removed), ready to be
/// turned into a layer. `run` blocks the calling thread until the process has
/// exited and everything is cleaned up, so async callers use
/// `spawn_blocking`. Output is passed to `output` as it arrives, from the
/// calling thread. Implementations are safe to call from many threads at once.
///
/// On error nothing stays mounted or running; the rootfs contents are
/// whatever the process left (callers normally discard them).
///
/// [`run`]: Executor::run
pub trait Executor: Send + Sync {
    /// Run `req.process` to completion.
    ///
    /// Returns `Ok` only for exit code 0. A non-zero exit is
    /// [`Error::ExitCode`], carrying the argv, code and output tail. If
    /// `cancel` fires, the container is killed and [`Error::Canceled`]
    /// returned.
    fn run(
        &self,
        req: &ExecRequest,
        output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExecOutcome>;
}

/// What a successful run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The id the container ran under (unique per executor).
    pub container_id: String,
    /// Always 0: non-zero exits are errors.
    pub exit_code: i32,
}

/// A cooperative cancellation flag shared between the caller and a run.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every run holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// Mount the rootfs read-only inside the container.
    pub readonly_rootfs: bool,
    /// Extra mounts, applied in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// The process to run.
    pub process: ProcessSpec,
    /// Hostname; `None` uses the executor's default (`buildkitsandbox`).
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` entries: (hostname, IP address).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
}

impl ExecRequest {
    /// A request with defaults: host network, sandbox security, no mounts.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        Self {
            rootfs,
            readonly_rootfs: false,
            mounts: Vec::new(),
            process: ProcessSpec::new(args),
            hostname: None,
            extra_hosts: Vec::new(),
            network: NetworkMode::Host,
            security: SecurityMode::Sandbox,
        }
    }
}

/// The container's root filesystem.
#[derive(Debug, Clone)]
pub enum Rootfs {
    /// An overlay the executor mounts for the run and unmounts afterwards.
    Overlay(OverlaySpec),
    /// A directory used as it is (writes land in it).
    Dir(PathBuf),
}

/// An overlay mount: read-only lower layers plus an optional writable upper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Lower directories, topmost first. At least one.
    pub lowerdirs: Vec<PathBuf>,
    /// Upper and work directory (same filesystem, both existing). `None`
    /// makes the rootfs read-only (the executor then mounts it over a
    /// throwaway upper so the runtime can still create mount points).
    pub upper: Option<UpperDir>,
}

impl OverlaySpec {
    /// The rootfs for a run on a snapshot prepared in overlay mode:
    /// `lowers` from [`SnapshotStore::overlay_lowers`] of the parent, and the
    /// active snapshot's upper and work dirs.
    ///
    /// [`SnapshotStore::overlay_lowers`]: kiln_store::SnapshotStore::overlay_lowers
    pub fn for_active(lowers: &kiln_store::OverlayLowers, active: &kiln_store::Active) -> Self {
        Self {
            lowerdirs: lowers.absolute(),
            upper: Some(UpperDir {
                upperdir: active.upper(),
                workdir: active.work(),
            }),
        }
    }

    /// A read-only rootfs over committed snapshots.
    pub fn read_only(lowers: &kiln_store::OverlayLowers) -> Self {
        Self {
            lowerdirs: lowers.absolute(),
            upper: None,
        }
    }
}

/// The writable part of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperDir {
    /// Receives the changes.
    pub upperdir: PathBuf,
    /// Overlay's scratch dir, on the same filesystem as `upperdir`.
    pub workdir: PathBuf,
}

/// One extra mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Absolute path inside the container.
    pub dest: PathBuf,
    /// What to mount there.
    pub kind: MountKind,
}

/// Kinds of extra mounts.
#[derive(Debug, Clone)]
pub enum MountKind {
    /// Bind a host file or directory.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Refuse writes.
        readonly: bool,
    },
    /// Bind a host directory writable, but discard the writes (an overlay
    /// with a throwaway upper dir, like `RUN --mount=type=bind,rw`).
    BindScratch {
        /// Host directory.
        source: PathBuf,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes, if any.
        size: Option<u64>,
    },
    /// A secret file, bound read-only, nosuid, nodev, noexec.
    Secret {
        /// Host file holding the secret.
        source: PathBuf,
    },
    /// An ssh agent (or any) unix socket, bound into the container.
    SshSocket {
        /// Host socket path.
        source: PathBuf,
    },
}

/// The process to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's PATH by runc.
    pub args: Vec<String>,
    /// `KEY=value` entries. A default `PATH` is added when absent.
    pub env: Vec<String>,
    /// Working directory (created, owned by the user, when missing).
    pub cwd: PathBuf,
    /// `""`/root, `name`, `uid`, `name:group`, `uid:gid`. Names are resolved
    /// from the rootfs' `/etc/passwd` and `/etc/group`.
    pub user: String,
    /// Extra supplementary group ids.
    pub additional_gids: Vec<u32>,
}

impl ProcessSpec {
    /// Root, cwd `/`, no env.
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            additional_gids: Vec::new(),
        }
    }
}

/// Network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only `lo` (up).
    None,
}

/// Security modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// containerd's default capabilities, masked and read-only paths, the
    /// device cgroup, optional seccomp.
    #[default]
    Sandbox,
    /// Privileged: every capability the engine holds, the host's device
    /// nodes and all devices allowed, nothing masked, `/sys` writable, no
    /// seccomp (`--security=insecure`).
    Insecure,
}
