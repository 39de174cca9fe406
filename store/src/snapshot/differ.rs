//! Compute a diff dir (overlay upper form) from two plain trees: what a
//! copy-mode mutable snapshot commits, and what `create_from_dir` stores when
//! given a full tree on top of a parent.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use fs_err as fs;

use crate::error::{Error, Result};
use crate::fsutil::{self, Attrs, Copier};

/// Write into `out` (an existing empty dir) the changes that turn `lower`
/// into `upper`. Files are compared by type, owner, mode, size, mtime and link
/// target (like BuildKit's double-walk differ, content is not re-read when
/// all of those match).
pub fn diff_trees(lower: &Path, upper: &Path, out: &Path) -> Result<()> {
    let mut copier = Copier::new();
    diff_dir(lower, upper, out, &mut copier, false)?;
    copier.finish()
}

/// [`diff_trees`] for an `upper` that the caller gives away: entries that
/// are new or changed are moved into `out` (one rename for a whole new
/// subtree) instead of copied. `upper` must be on the same filesystem as
/// `out` and is left incomplete.
pub fn diff_trees_consuming(lower: &Path, upper: &Path, out: &Path) -> Result<()> {
    let mut copier = Copier::new();
    diff_dir(lower, upper, out, &mut copier, true)?;
    copier.finish()
}

/// Returns whether anything was written below `out`.
fn diff_dir(
    lower: &Path,
    upper: &Path,
    out: &Path,
    copier: &mut Copier,
    consume: bool,
) -> Result<bool> {
    let mut changed = false;
    let up_names = fsutil::sorted_children(upper)?;
    let low_names: BTreeSet<OsString> = fsutil::sorted_children(lower)?.into_iter().collect();
    let up_set: BTreeSet<&OsString> = up_names.iter().collect();
    for gone in low_names.iter().filter(|n| !up_set.contains(n)) {
        fsutil::make_whiteout(out, gone)?;
        changed = true;
    }
    for name in &up_names {
        let u = upper.join(name);
        let o = out.join(name);
        let um = fs::symlink_metadata(&u).map_err(Error::io("stat"))?;
        let lm = if low_names.contains(name) {
            fsutil::lstat(&lower.join(name))?
        } else {
            None
        };
        match lm {
            Some(lm) if um.is_dir() && lm.is_dir() => {
                fs::create_dir(&o).map_err(Error::io("create dir"))?;
                let sub = diff_dir(&lower.join(name), &u, &o, copier, consume)?;
                if sub || !same_dir(&um, &lm) {
                    copier.set_attrs_dir(&o, &Attrs::of(&um))?;
                    changed = true;
                } else {
                    fs::remove_dir(&o).map_err(Error::io("remove dir"))?;
                }
            }
            Some(lm) if same_entry(&u, &um, &lower.join(name), &lm)? => {}
            _ if consume => {
                fs::rename(&u, &o).map_err(Error::io("move into diff"))?;
                changed = true;
            }
            _ => {
                copier.copy_tree(&u, &o)?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

fn same_dir(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid()
}

fn same_entry(up: &Path, a: &std::fs::Metadata, low: &Path, b: &std::fs::Metadata) -> Result<bool> {
    let (fa, fb) = (a.file_type(), b.file_type());
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return Ok(false);
    }
    if fa.is_symlink() && fb.is_symlink() {
        return Ok(fs::read_link(up).map_err(Error::io("read symlink"))?
            == fs::read_link(low).map_err(Error::io("read symlink"))?);
    }
    if fa.is_file() && fb.is_file() {
        return Ok(a.len() == b.len()
            && a.mtime() == b.mtime()
            && a.mtime_nsec() == b.mtime_nsec());
    }
    if (fa.is_char_device() || fa.is_block_device()) && fa == fb {
        return Ok(a.rdev() == b.rdev());
    }
    Ok(fa.is_fifo() && fb.is_fifo() || fa.is_socket() && fb.is_socket())
}
