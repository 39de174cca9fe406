//! OCI layer tars: pack a snapshot's diff into a layer blob in the content
//! store, and unpack layer blobs (or plain archives) safely.
//!
//! Layer 1: uses `content`, `snapshot`, `fsutil`, `digest`.
//!
//! - [`pack_layer`]: snapshot diff → compressed blob in the [`ContentStore`],
//!   hashing the uncompressed stream (diff id) and the blob (digest) in one
//!   pass. Output is reproducible: same diff, options and epoch give the
//!   same bytes.
//! - [`unpack_layer`]: layer stream (gzip/zstd/none, by magic) → new snapshot
//!   on a parent, verifying the diff id when given. [`unpack_layer_blob`]
//!   does the same from a blob already in the content store.
//! - [`unpack_archive`]: a plain archive (`ADD`) into a directory tree, with
//!   the same protection against hostile entries ([`unpack`] module docs).

mod compress;
mod pack;
pub mod unpack;

use std::io::Read;
use std::path::Path;

pub use compress::{
    Compression, Compressor, Detected, decompress, decompress_archive, detect, is_tar_header,
    sniff_archive,
};
pub use pack::{TarOptions, exists_below, find_below, write_layer_tar, write_tree_tar};
pub use unpack::{UnpackMode, UnpackReport, unpack_tar, unpack_tar_onto};

use crate::content::ContentStore;
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::snapshot::{SnapshotId, SnapshotStore};

/// How to pack a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// Blob compression.
    pub compression: Compression,
    /// Compression level (gzip 0–9, zstd 0–22); `None` for the default.
    pub level: Option<i32>,
    /// Clamp mtimes to this (unix seconds).
    pub source_date_epoch: Option<i64>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            compression: Compression::Gzip,
            level: None,
            source_date_epoch: None,
        }
    }
}

/// A layer blob in the content store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed).
    #[serde(with = "digest_str")]
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    #[serde(with = "digest_str")]
    pub diff_id: Digest,
    /// Number of tar entries; 0 means an empty diff, which image exporters
    /// skip.
    pub entries: u64,
    /// How the blob is compressed.
    pub compression: Compression,
}

pub(crate) mod digest_str {
    use crate::digest::Digest;
    pub fn serialize<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Pack the diff of snapshot `id` as a layer blob into `content`.
///
/// Whiteouts for names that exist in no lower layer are dropped. Results
/// are cached per snapshot and options, so exporting the same snapshot
/// twice compresses once (the cache is ignored if the blob was deleted).
pub fn pack_layer(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    id: &SnapshotId,
    opts: &PackOptions,
) -> Result<LayerBlob> {
    let cache_name = format!(
        "layer-v1-{}-{}-{}.json",
        opts.compression.name(),
        opts.level.unwrap_or(opts.compression.default_level()),
        opts.source_date_epoch
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none".into())
    );
    let cache = snapshots.cache_dir(id)?.join(cache_name);
    if let Ok(bytes) = std::fs::read(&cache)
        && let Ok(blob) = serde_json::from_slice::<LayerBlob>(&bytes)
        && content.exists(&blob.digest)
    {
        return Ok(blob);
    }
    let diff = snapshots.diff_dir(id)?;
    let lowers = match snapshots.info(id)?.parent {
        Some(p) => lower_diffs(snapshots, &p)?,
        None => Vec::new(),
    };
    let blob = pack_dir(content, &diff, &lowers, opts)?;
    // Cache write is an optimisation: failures are ignored.
    let tmp = cache.with_extension(format!("tmp{}", fsutil::random_hex().unwrap_or_default()));
    if std::fs::write(&tmp, serde_json::to_vec(&blob).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    Ok(blob)
}

/// The blob an exporter uses for snapshot `id`: the blob it was unpacked
/// from when one is recorded and `reuse` accepts it (so pulled and
/// imported layers keep their registry digests), otherwise a packed one.
/// Also says whether the blob is kiln's own packing (packed here, or
/// unpacked from a cache that kiln packed) rather than an image's layer.
pub fn layer_blob_for(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    id: &SnapshotId,
    opts: &PackOptions,
    reuse: impl Fn(&SourceBlob) -> bool,
) -> Result<SourceBlob> {
    match source_blob(snapshots, content, id).filter(|b| reuse(b)) {
        Some(b) => Ok(b),
        None => Ok(SourceBlob {
            blob: pack_layer(snapshots, content, id, opts)?,
            packed: true,
            epoch: opts.source_date_epoch,
        }),
    }
}

/// The diff dirs of the chain ending at `top`, topmost first.
pub fn lower_diffs(snapshots: &SnapshotStore, top: &SnapshotId) -> Result<Vec<std::path::PathBuf>> {
    let mut chain = snapshots.chain(top)?;
    chain.reverse();
    chain.iter().map(|s| snapshots.diff_dir(s)).collect()
}

/// Pack any diff dir (overlay upper form) as a layer blob. `lowers` as in
/// [`write_layer_tar`]. An empty diff gives `entries == 0` (the blob is an
/// empty tar, stored like any other).
pub fn pack_dir(
    content: &ContentStore,
    diff: &Path,
    lowers: &[std::path::PathBuf],
    opts: &PackOptions,
) -> Result<LayerBlob> {
    let ingest = std::io::BufWriter::with_capacity(256 * 1024, content.writer()?);
    let comp = Compressor::new(ingest, opts.compression, opts.level)
        .map_err(Error::io("start compressor"))?;
    let tar_opts = TarOptions {
        source_date_epoch: opts.source_date_epoch,
    };
    let (hw, entries) = write_layer_tar(diff, lowers, &tar_opts, HashingWriter::new(comp))?;
    let (comp, diff_id, _) = hw.finish();
    let ingest = comp.finish().map_err(Error::io("finish compression"))?;
    let ingest = ingest.into_inner().map_err(|e| Error::Io {
        op: "write layer blob",
        source: e.into_error(),
    })?;
    let (digest, size) = ingest.commit(None)?;
    Ok(LayerBlob {
        digest,
        size,
        diff_id,
        entries,
        compression: opts.compression,
    })
}

/// A layer unpacked into a new snapshot.
#[derive(Clone, Debug)]
pub struct UnpackedLayer {
    /// The new snapshot (child of the given parent).
    pub id: SnapshotId,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Compression found on the stream.
    pub compression: Compression,
    /// Entries written and skipped.
    pub report: UnpackReport,
}

/// Unpack a layer stream (compression detected by magic) into a new
/// snapshot on `parent`. With `expected_diff_id`, a mismatch is an error and
/// no snapshot is created. Hostile entries fail the whole layer.
pub fn unpack_layer(
    snapshots: &SnapshotStore,
    parent: Option<&SnapshotId>,
    reader: impl Read,
    expected_diff_id: Option<&Digest>,
) -> Result<UnpackedLayer> {
    let (compression, plain) = decompress(reader)?;
    let mut hr = HashingReader::new(plain);
    let lowers = match parent {
        Some(p) => lower_diffs(snapshots, p)?,
        None => Vec::new(),
    };
    let scratch = snapshots.scratch_dir()?;
    let r = (|| {
        let report = unpack_tar_onto(&mut hr, &scratch, UnpackMode::Layer, &lowers)?;
        let (diff_id, _) = hr
            .finish()
            .map_err(Error::archive("read layer to its end"))?;
        if let Some(exp) = expected_diff_id
            && *exp != diff_id
        {
            return Err(Error::DigestMismatch {
                expected: exp.clone(),
                actual: diff_id,
            });
        }
        let id = snapshots.commit_diff_dir_move(&scratch, parent)?;
        Ok(UnpackedLayer {
            id,
            diff_id,
            compression,
            report,
        })
    })();
    if let Some(t) = scratch.parent() {
        let _ = fsutil::remove_all(t);
    }
    r
}

/// [`unpack_layer`] for a blob in the content store.
pub fn unpack_layer_blob(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    parent: Option<&SnapshotId>,
    blob: &Digest,
    expected_diff_id: Option<&Digest>,
) -> Result<UnpackedLayer> {
    let f = content.open(blob)?;
    let u = unpack_layer(
        snapshots,
        parent,
        std::io::BufReader::new(f),
        expected_diff_id,
    )
    .map_err(|e| match e {
        Error::DigestMismatch { expected, actual } => Error::DiffIdMismatch {
            layer: blob.clone(),
            expected,
            actual,
        },
        e => e,
    })?;
    let src = LayerBlob {
        digest: blob.clone(),
        size: content.size(blob)?,
        diff_id: u.diff_id.clone(),
        entries: u.report.entries + u.report.skipped.len() as u64,
        compression: u.compression,
    };
    record_source_blob(
        snapshots,
        &u.id,
        &SourceBlob {
            blob: src,
            packed: false,
            epoch: None,
        },
    )?;
    Ok(u)
}

const SOURCE_BLOB: &str = "source-blob-v1.json";

/// The blob a snapshot was unpacked from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceBlob {
    /// The blob.
    #[serde(flatten)]
    pub blob: LayerBlob,
    /// kiln packed it (a layer of an imported build cache), as opposed to
    /// an image's layer from a registry or layout. An exporter whose
    /// `source-date-epoch` differs from `epoch` packs such a layer again,
    /// as a build without the cache would.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
    /// The `source-date-epoch` a packed blob was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// Remember that snapshot `id` was unpacked from `blob`, so exporters can
/// reuse the original blob (same digest as the registry's) instead of
/// repacking, unless `force-compression` is set.
pub fn record_source_blob(
    snapshots: &SnapshotStore,
    id: &SnapshotId,
    blob: &SourceBlob,
) -> Result<()> {
    let p = snapshots.cache_dir(id)?.join(SOURCE_BLOB);
    let tmp = p.with_extension(format!("tmp{}", fsutil::random_hex()?));
    fs_err::write(&tmp, serde_json::to_vec(blob).unwrap_or_default())
        .map_err(Error::io("record source blob"))?;
    fs_err::rename(&tmp, &p).map_err(Error::io("record source blob"))
}

/// The blob snapshot `id` was unpacked from, if recorded and still stored.
pub fn source_blob(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    id: &SnapshotId,
) -> Option<SourceBlob> {
    let p = snapshots.cache_dir(id).ok()?.join(SOURCE_BLOB);
    let b: SourceBlob = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    content.exists(&b.blob.digest).then_some(b)
}

/// Extract a plain archive (tar, tar.gz, tar.zst, tar.bz2, tar.xz; detected
/// by magic) into
/// the directory tree `dest`, safely (see [`unpack`]).
pub fn unpack_archive(reader: impl Read, dest: &Path) -> Result<UnpackReport> {
    let plain = decompress_archive(reader)?;
    unpack_tar(plain, dest, UnpackMode::Plain)
}

#[cfg(test)]
mod tests;
