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
//! | [`layer`] | diff dir → OCI layer blob (sorted, reproducible, gzip/zstd/none); layer or plain archive (tar, gzip, zstd, bzip2, xz) → snapshot or tree, refusing hostile entries | runtime (unpack pulled layers), engine (ADD), exporters |
//! | [`exporter`] | `oci`, `docker`, `local`, `tar` outputs from a snapshot chain and an image config | engine |
//! | [`ocilayout`] | read an OCI image layout (`oci-layout://` source) into the stores | engine |
//! | [`digest`] | the [`Digest`] type and hashing readers/writers | all |
//! | [`fsutil`] | whiteout/opaque markers, metadata-preserving copies | internal, runtime |
//!
//! All state lives under one root directory: `<root>/content/…` and
//! `<root>/snapshots/v1/…`. Every error is an [`Error`] that names the path,
//! digest or snapshot concerned.
//!
//! # For the engine
//!
//! - Op results are snapshots. A file op or a run without overlay:
//!   [`SnapshotStore::prepare_copy`] → write into [`Active::root`] →
//!   [`SnapshotStore::commit`]. A run with overlay:
//!   [`SnapshotStore::prepare`] + [`SnapshotStore::overlay_lowers`] for the
//!   runtime, then `commit` (the upper dir becomes the diff).
//! - Read a result's files through [`SnapshotStore::view`] (read only).
//! - `local` sources: unpack or copy into [`SnapshotStore::scratch_dir`] and
//!   [`SnapshotStore::commit_diff_dir_move`].
//! - `ADD` of archives: [`layer::sniff_archive`] then [`layer::unpack_archive`].
//! - `oci-layout://`: [`ocilayout::OciLayout`].
//! - Outputs: [`exporter::ImageExportOptions::from_attrs`] +
//!   [`exporter::export_image`], or [`exporter::export_local`] /
//!   [`exporter::export_tar`].
//!
//! # For the runtime
//!
//! - Pulled blobs: [`ContentStore::writer`] + [`Ingest::commit`] with the
//!   expected digest.
//! - Layers to snapshots: [`layer::unpack_layer_blob`] with the config's diff
//!   id, each on the previous one. The blob is remembered, so exports reuse
//!   it (same digest as the registry's).
//! - Rootfs mounts: [`OverlayLowers::absolute`] for `lowerdir+`, or
//!   [`OverlayLowers::mount_data`] / [`OverlayLowers::mount_data_relative`]
//!   (chdir to [`OverlayLowers::base`] in the forked mounter), with
//!   [`SnapshotStore::overlay_lowers_fitting`] flattening long chains so
//!   the data fits in 4 KiB. Remove mount stubs from the upper before
//!   committing.
//!
//! ```
//! use kiln_store::{ContentStore, SnapshotStore, exporter};
//!
//! let root = tempfile::tempdir()?;
//! let snapshots = SnapshotStore::new(root.path())?;
//! let content = ContentStore::new(root.path())?;
//!
//! // An op writes a file on top of nothing and commits.
//! let active = snapshots.prepare_copy(None)?;
//! std::fs::write(active.root().join("hello"), "world")?;
//! let id = snapshots.commit(active)?;
//! assert!(snapshots.view(&id)?.join("hello").is_file());
//!
//! // Export it as an OCI tarball.
//! let dest = root.path().join("image.tar");
//! let attrs = [("dest", dest.to_str().unwrap()), ("name", "example/hello:1")]
//!     .into_iter()
//!     .map(|(k, v)| (k.to_string(), v.to_string()))
//!     .collect();
//! let opts = exporter::ImageExportOptions::from_attrs(exporter::ImageFormat::Oci, &attrs)?;
//! let out = exporter::export_image(&snapshots, &content, Some(&id), None, &opts)?;
//! assert!(content.exists(&out.manifest_digest) && dest.is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
