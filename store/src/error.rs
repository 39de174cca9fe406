//! The one error type of `kiln-store`. Every variant names the path, digest or
//! snapshot it is about; lower errors hang off `#[source]`.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::snapshot::SnapshotId;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the content store, the snapshot store, layer
/// packing/unpacking and the exporters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call failed. The `fs-err` source already names the path;
    /// `op` says what kiln was doing.
    #[error("{op}")]
    Io {
        /// What kiln was doing, e.g. "write blob".
        op: &'static str,
        /// The error, naming the path.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem call on a known path failed (for calls `fs-err` does not wrap).
    #[error("{op} {}", path.display())]
    IoAt {
        /// What kiln was doing.
        op: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A written blob did not hash to the expected digest. Nothing was kept.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// The blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),
    /// A snapshot id that is not 1–64 of `[A-Za-z0-9_-]`.
    #[error("invalid snapshot id {0:?}")]
    InvalidSnapshotId(String),
    /// No committed snapshot has this id.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(SnapshotId),
    /// The snapshot is the parent of other snapshots and cannot be removed.
    #[error("snapshot {id} is the parent of {child}")]
    SnapshotInUse {
        /// The snapshot the caller tried to remove.
        id: SnapshotId,
        /// One snapshot that still names it as its parent.
        child: SnapshotId,
    },
    /// A snapshot's metadata file is unreadable.
    #[error("corrupt snapshot metadata {}", path.display())]
    CorruptSnapshot {
        /// The metadata file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
    /// The upper dir carries overlay state kiln cannot turn into a layer
    /// (`redirect` or `metacopy` xattrs: the overlay was mounted without
    /// `redirect_dir=off,metacopy=off`).
    #[error("unsupported overlay state {xattr} on {}", path.display())]
    UnsupportedOverlay {
        /// The file carrying it.
        path: PathBuf,
        /// The xattr name.
        xattr: String,
    },
    /// A tar entry that would escape the target directory or is otherwise unsafe.
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The archive could not be read.
    #[error("malformed archive: {what}")]
    Archive {
        /// What failed.
        what: &'static str,
        /// The reader error.
        #[source]
        source: std::io::Error,
    },
    /// A compression kiln cannot read (bzip2, xz).
    #[error("unsupported compression {0}")]
    UnsupportedCompression(&'static str),
    /// An exporter option is unknown or has a bad value.
    #[error("invalid exporter option {key}={value:?}: {reason}")]
    InvalidOption {
        /// The option key.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// JSON given to or read by kiln (image config, manifest, index) is invalid.
    #[error("invalid {what}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An OCI layout or image is missing something or is inconsistent.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A layer's uncompressed digest does not match the config's diff id.
    #[error("layer {layer} has diff id {actual}, config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's `rootfs.diff_ids` entry.
        expected: Digest,
        /// What the uncompressed layer hashed to.
        actual: Digest,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    pub(crate) fn io_at(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::IoAt { op, path, source }
    }

    pub(crate) fn archive(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Archive { what, source }
    }
}
