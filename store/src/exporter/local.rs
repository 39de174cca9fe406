//! The `local` and `tar` exporters: the merged filesystem of a chain.

use std::io::Write;
use std::path::Path;

use super::{Dest, FsExportOptions, ensure_dir};
use crate::error::{Error, Result};
use crate::fsutil::Copier;
use crate::layer::{TarOptions, write_tree_tar};
use crate::snapshot::{SnapshotId, SnapshotStore, merge_tree};

/// Copy the merged filesystem of `top` into `dest` (created if missing;
/// existing files with the same names are replaced). `None` exports nothing.
pub fn export_local(
    snapshots: &SnapshotStore,
    top: Option<&SnapshotId>,
    dest: &Path,
) -> Result<()> {
    ensure_dir(dest)?;
    let Some(top) = top else { return Ok(()) };
    let view = snapshots.view(top)?;
    let mut c = Copier::new();
    merge_tree(&view, dest, &mut c)?;
    c.finish()
}

/// Write the merged filesystem of `top` as one tar to `opts.dest` (stdout
/// by default), sorted, numeric owners, mtimes clamped to the epoch if set.
pub fn export_tar(
    snapshots: &SnapshotStore,
    top: Option<&SnapshotId>,
    opts: &FsExportOptions,
) -> Result<()> {
    let mut w = opts.dest.create()?;
    export_tar_to_writer(snapshots, top, opts, &mut w)?;
    w.finish()
}

/// [`export_tar`] into any writer.
pub fn export_tar_to_writer(
    snapshots: &SnapshotStore,
    top: Option<&SnapshotId>,
    opts: &FsExportOptions,
    w: &mut dyn Write,
) -> Result<()> {
    let t = TarOptions {
        source_date_epoch: opts.source_date_epoch,
    };
    match top {
        Some(top) => {
            let view = snapshots.view(top)?;
            write_tree_tar(&view, &t, w)?;
        }
        None => {
            tar::Builder::new(w)
                .into_inner()
                .map_err(Error::io("write tar"))?;
        }
    }
    Ok(())
}

impl FsExportOptions {
    /// The local exporter's destination directory.
    pub fn local_dir(&self) -> Result<&Path> {
        match &self.dest {
            Dest::Path(p) => Ok(p),
            Dest::Stdout => Err(Error::InvalidOption {
                key: "dest".into(),
                value: String::new(),
                reason: "the local exporter needs a destination directory",
            }),
        }
    }
}
