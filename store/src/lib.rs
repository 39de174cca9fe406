//! Content store, snapshots, layer tars and image exporters: layer 1 of kiln
//! (see `docs/design-notes.md`). Depends on `kiln-llb` only; synchronous std
//! code, which the engine calls from `spawn_blocking`.
//!
//! # Module map
//!
//! | module | owns | used by |
//! | --- | --- | --- |
//! | [`content`] | [`ContentStore`]: blobs at `<root>/content/blobs/sha256/<hex>`, verified, atomic writes | runtime (pulled blobs), exporters |
//! | [`snapshot`] | [`SnapshotStore`]: immutable snapshots (diff dirs in overlay upper form), merged views, overlay lowerdirs, prepare → commit | engine (op results), runtime (rootfs mounts) |
//! | [`layer`] | diff dir → OCI layer blob (sorted, reproducible, gzip/zstd/none); layer or plain tar → snapshot, refusing hostile entries | runtime (unpack pulled layers), engine (ADD), exporters |
//! | [`exporter`] | `oci`, `docker`, `local`, `tar` outputs from a snapshot chain and an image config | engine |
//! | [`ocilayout`] | read an OCI image layout (`oci-layout://` source) into the stores | engine |
//! | [`digest`] | the [`Digest`] type and hashing readers/writers | all |
//! | [`fsutil`] | whiteout/opaque markers, metadata-preserving copies | internal, runtime |
//!
//! All state lives under one root directory: `<root>/content/…` and
//! `<root>/snapshots/v1/…`. Every error is an [`Error`] that names the path,
//! digest or snapshot concerned.

pub mod content;
pub mod digest;
pub mod error;
pub mod exporter;
pub mod fsutil;
pub mod layer;
pub mod ocilayout;
pub mod snapshot;

pub use content::{ContentStore, Ingest};
pub use digest::Digest;
pub use error::{Error, Result};
pub use snapshot::{Active, ActiveMode, OverlayLowers, SnapshotId, SnapshotInfo, SnapshotStore};
