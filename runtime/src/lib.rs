//! Container execution through an OCI runtime, and the registry client.
//!
//! Layers 1–2 of the host: [`executor`] runs one process in a container
//! (runc with an `oci-spec` generated config, behind the [`Executor`] trait
//! so that callers without root can use a fake), and [`registry`] talks the
//! OCI distribution protocol (pull into a caller's blob sink, push, resolve an
//! image config). This crate may use `kiln-llb` and `kiln-store`, nothing
//! above them.

pub mod executor;
pub mod registry;

pub use executor::{
    CancelToken, CapturedOutput, ExecOutcome, ExecRequest, Executor, FnExecutor, Mount, MountKind,
    NetworkMode, OutputSink, OverlaySpec, ProcessSpec, Rootfs, RuncConfig, RuncExecutor,
    SecurityMode,
};
