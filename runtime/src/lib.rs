//! Container execution through an OCI runtime, and the registry client.
//!
//! Layers 1–2 of the host: [`executor`] runs one process in a container
//! (runc with an `oci-spec` generated config, behind the [`Executor`] trait
//! so that callers without root can use a fake such as [`FnExecutor`]), and
//! [`registry`] talks the OCI distribution protocol (pull into the content
//! store, push from it, resolve an image config). This crate may use
//! `kiln-llb` and `kiln-store`, nothing above them.
//!
//! Running a step on a snapshot (blocking; call it from `spawn_blocking`):
//!
//! ```no_run
//! # fn demo(snapshots: &kiln_store::SnapshotStore, base: &kiln_store::SnapshotId)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_runtime::executor::*;
//! let exec = RuncExecutor::new(RuncConfig::new("/var/lib/kiln/runc"))?;
//! let lowers = snapshots.overlay_lowers(Some(base), 100)?;
//! let active = snapshots.prepare(Some(base))?;
//! let mut req = ExecRequest::new(
//!     Rootfs::Overlay(OverlaySpec::for_active(&lowers, &active)),
//!     vec!["/bin/sh".into(), "-c".into(), "echo hi > /f".into()],
//! );
//! req.network = NetworkMode::None;
//! let mut out = CapturedOutput::default();
//! exec.run(&req, &mut out, &CancelToken::new())?; // non-zero exit = Error::ExitCode
//! let layer = snapshots.commit(active)?; // the upper holds only the changes
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Pulling an image (async, tokio):
//!
//! ```no_run
//! # async fn demo(store: &kiln_store::ContentStore) -> Result<(), kiln_runtime::registry::Error> {
//! use kiln_runtime::registry::*;
//! let client = RegistryClient::new(RegistryOptions::default());
//! let r: ImageRef = "busybox".parse()?; // docker.io/library/busybox:latest
//! let cfg = client.resolve_image_config(&r, &Platform::default()).await?;
//! let pulled = client.pull(&cfg.reference, &Platform::default(), store).await?;
//! # let _ = pulled; Ok(()) }
//! ```

pub mod executor;
pub mod registry;

pub use executor::{
    CancelToken, CapturedOutput, ExecOutcome, ExecRequest, Executor, FnExecutor, Mount, MountKind,
    NetworkMode, OutputSink, OverlaySpec, ProcessSpec, Rootfs, RuncConfig, RuncExecutor,
    SecurityMode,
};
