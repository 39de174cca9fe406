//! Apply a diff dir (overlay upper form) onto a plain directory tree: the
//! "copy fallback" that materialises merged views without a mount.

use std::path::Path;

use crate::error::Result;
use crate::fsutil::{self, Copier, DiffName};

/// Apply `diff` on top of `dest`: whiteouts delete, opaque dirs hide what was
/// below, everything else is copied over with its metadata. Hardlinks within
/// the diff stay hardlinks. Call [`Copier::finish`] after the last diff.
pub fn apply_diff(diff: &Path, dest: &Path, copier: &mut Copier) -> Result<()> {
    apply_dir(diff, dest, copier, true)
}

/// Copy the plain tree `src` over `dest`, merging directories and replacing
/// other entries; no name is treated as a whiteout.
pub fn merge_tree(src: &Path, dest: &Path, copier: &mut Copier) -> Result<()> {
    apply_dir(src, dest, copier, false)
}

fn apply_dir(src: &Path, dst: &Path, copier: &mut Copier, diff: bool) -> Result<()> {
    for name in fsutil::sorted_children(src)? {
        let s = src.join(&name);
        let Some(m) = fsutil::lstat(&s)? else {
            continue;
        };
        let class = if diff {
            fsutil::classify(&name, &m)
        } else {
            DiffName::Entry
        };
        match class {
            DiffName::OpaqueMarker => {}
            DiffName::Whiteout(target) => fsutil::remove_all(&dst.join(target))?,
            DiffName::Entry => {
                let d = dst.join(&name);
                let existing = fsutil::lstat(&d)?;
                if m.is_dir() {
                    match existing {
                        Some(e) if e.is_dir() => {
                            if diff && fsutil::is_opaque(&s) {
                                for child in fsutil::sorted_children(&d)? {
                                    fsutil::remove_all(&d.join(child))?;
                                }
                            }
                            copier.set_attrs_dir(&d, &fsutil::Attrs::of(&m))?;
                        }
                        other => {
                            if other.is_some() {
                                fsutil::remove_all(&d)?;
                            }
                            copier.copy_entry(&s, &d, &m)?;
                        }
                    }
                    apply_dir(&s, &d, copier, diff)?;
                } else {
                    if existing.is_some() {
                        fsutil::remove_all(&d)?;
                    }
                    copier.copy_entry(&s, &d, &m)?;
                }
            }
        }
    }
    Ok(())
}
