//! The executor's error type.

use std::path::PathBuf;

/// Result alias for the executor.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong running a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OCI runtime binary is not installed.
    #[error(
        "OCI runtime `{}` not found\nhint: install runc (apt-get install runc)",
        runtime.display()
    )]
    RuntimeNotFound {
        /// The configured binary.
        runtime: PathBuf,
    },
    /// The runtime could not be started.
    #[error("cannot start OCI runtime `{}` for container {container_id}", runtime.display())]
    Spawn {
        /// The configured binary.
        runtime: PathBuf,
        /// The container.
        container_id: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime itself failed (bad config, mount failure, missing
    /// executable...), as opposed to the process exiting non-zero.
    #[error("OCI runtime failed for container {container_id} running {argv:?}: {message}")]
    Runtime {
        /// The container.
        container_id: String,
        /// The process' argv.
        argv: Vec<String>,
        /// The runtime's own error message.
        message: String,
    },
    /// The process exited with a non-zero code.
    #[error(
        "process {argv:?} did not complete successfully: exit code {code} (container {container_id}){}",
        tail_suffix(output_tail)
    )]
    ExitCode {
        /// The container.
        container_id: String,
        /// The process' argv.
        argv: Vec<String>,
        /// Exit code (128+N for signal N).
        code: i32,
        /// The last lines of stdout/stderr.
        output_tail: String,
    },
    /// The run was canceled and the container killed.
    #[error("container {container_id} running {argv:?} was canceled")]
    Canceled {
        /// The container.
        container_id: String,
        /// The process' argv.
        argv: Vec<String>,
    },
    /// A mount failed.
    #[error("cannot mount {what} at {}{}", target.display(), kernel_suffix(kernel_log))]
    Mount {
        /// What was being mounted.
        what: &'static str,
        /// Mount point.
        target: PathBuf,
        /// Messages the kernel attached to the filesystem context.
        kernel_log: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting failed; the path is left in place.
    #[error("cannot unmount {}", target.display())]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An overlay with too many layers for the legacy mount(2) option string,
    /// on a kernel without `lowerdir+`.
    #[error(
        "overlay at {} has {layers} lower layers whose option string ({len} bytes) exceeds the 4 KiB mount limit, and this kernel lacks fsconfig lowerdir+ (6.8+)",
        target.display()
    )]
    OverlayTooLong {
        /// Mount point.
        target: PathBuf,
        /// Number of lower dirs.
        layers: usize,
        /// Length of the option string.
        len: usize,
    },
    /// A path that cannot be passed in a legacy overlay option string.
    #[error("overlay layer path {} contains ',' or ':' or NUL", path.display())]
    UnsafeOverlayPath {
        /// The path.
        path: PathBuf,
    },
    /// A filesystem operation on the bundle or rootfs failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime config could not be built or written.
    #[error("cannot write runtime config for container {container_id}")]
    Spec {
        /// The container.
        container_id: String,
        /// Why.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A user or group name is not in the rootfs.
    #[error("unknown {kind} `{name}`: not found in the image's {file}")]
    UnknownUser {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
    },
    /// The request is malformed.
    #[error("invalid exec request: {problem}")]
    InvalidRequest {
        /// What is wrong.
        problem: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- last output lines ---\n{}", tail.trim_end())
    }
}

fn kernel_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {log})")
    }
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
