//! Safe tar extraction: OCI layers into diff dirs, plain tars into trees.
//!
//! Every path is resolved component by component inside the target dir.
//! `..` components are refused, absolute paths are made relative, an existing
//! symlink on the way is followed only by kiln itself and only within the
//! target (as if chrooted: `/` and `..` stop at the target dir), the final
//! component is never followed (it is unlinked and recreated, files are
//! opened with `O_NOFOLLOW | O_EXCL`). Hardlinks must name an entry already
//! inside the target. Device nodes are skipped (a 0/0 char device in a layer
//! is read as a whiteout). Overlay xattrs in PAX records are dropped, so an
//! archive cannot forge an opaque dir.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use fs_err as fs;
use rustix::fs::{CWD, FileType, Mode};

use crate::error::{Error, Result};
use crate::fsutil::{self, Attrs, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// How to read the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackMode {
    /// An OCI image layer: `.wh.NAME` and `.wh..wh..opq` become overlay-style
    /// whiteouts and opaque markers in the target diff dir.
    Layer,
    /// A plain archive (`ADD app.tar /dst`): every name is literal.
    Plain,
}

/// What an extraction did besides writing files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries written (including whiteouts).
    pub entries: u64,
    /// Entries skipped, with the reason (device nodes, unknown types).
    pub skipped: Vec<(String, &'static str)>,
}

/// Extract the uncompressed tar `reader` into `dest` (an existing dir).
/// Refuses (with [`Error::UnsafeEntry`]) entries that try to leave `dest`;
/// what was extracted before the refusal stays in `dest`, so extract into a
/// scratch dir and drop it on error.
pub fn unpack_tar(reader: impl Read, dest: &Path, mode: UnpackMode) -> Result<UnpackReport> {
    unpack_tar_onto(reader, dest, mode, &[])
}

/// [`unpack_tar`] into a diff dir that sits on `lowers` (the parent chain's
/// diff dirs, topmost first), giving overlay the result a real extraction
/// onto the merged tree would have:
/// - a parent dir missing from the archive is created with the lower
///   dir's owner and mode (not a default that would mask them);
/// - a symlink in a lower layer on the way is followed (within `dest`), so
///   `lib/x` under a lower `lib -> usr/lib` lands in `usr/lib/x`;
/// - a hardlink to a file only a lower layer has copies that file up first.
pub fn unpack_tar_onto(
    reader: impl Read,
    dest: &Path,
    mode: UnpackMode,
    lowers: &[PathBuf],
) -> Result<UnpackReport> {
    let mut ar = tar::Archive::new(reader);
    let mut report = UnpackReport::default();
    let mut dirs: Vec<(PathBuf, Attrs)> = Vec::new();
    let entries = ar.entries().map_err(Error::archive("read tar"))?;
    for entry in entries {
        let mut entry = entry.map_err(Error::archive("read tar entry"))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = clean_path(&raw, &shown)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let Some((name, parent_comps)) = comps.split_last() else {
            // The root itself ("./"): nothing to create.
            continue;
        };
        let h = entry.header();
        // Blank numeric fields (some writers leave them empty) read as defaults.
        let attrs = Attrs {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64,
            mtime_nsec: 0,
        };

        if mode == UnpackMode::Layer && kind.is_file() {
            let nb = name.as_bytes();
            if nb == OPAQUE_MARKER.as_bytes() {
                let dir = resolve_dir(dest, lowers, parent_comps, &shown, &mut dirs)?;
                fsutil::set_opaque(&dir)?;
                report.entries += 1;
                continue;
            }
            if let Some(target) = nb.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(Error::UnsafeEntry {
                        entry: shown,
                        reason: "malformed whiteout name",
                    });
                }
                let dir = resolve_dir(dest, lowers, parent_comps, &shown, &mut dirs)?;
                let t = OsStr::from_bytes(target);
                // A name this same layer created stays: whiteouts only hide lower layers.
                if fsutil::lstat(&dir.join(t))?.is_none() {
                    fsutil::make_whiteout(&dir, t)?;
                }
                report.entries += 1;
                continue;
            }
        }

        let xattrs = pax_xattrs(&mut entry)?;
        let parent = resolve_dir(dest, lowers, parent_comps, &shown, &mut dirs)?;
        let target = parent.join(name);
        let existing = fsutil::lstat(&target)?;
        match kind {
            tar::EntryType::Directory => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    let was_deleted = take_whiteout(&parent, name)?;
                    fsutil::remove_all(&target)?;
                    fs::create_dir(&target).map_err(Error::io("create dir"))?;
                    if was_deleted {
                        // Deleted and recreated in one layer: hide the lower dir.
                        fsutil::set_opaque(&target)?;
                    }
                }
                dirs.push((target.clone(), attrs));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                fsutil::remove_all(&target)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target)
                    .map_err(Error::io("create file"))?;
                io::copy(&mut entry, &mut f).map_err(Error::io("write file"))?;
                drop(f);
                fsutil::set_attrs(&target, &attrs, false)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if link.is_empty() {
                    return Err(Error::UnsafeEntry {
                        entry: shown,
                        reason: "symlink without target",
                    });
                }
                fsutil::remove_all(&target)?;
                // The target is stored as is; it is only ever resolved by the
                // container (chrooted) or by `resolve_dir` (scoped to dest).
                fs_err::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .map_err(Error::io("create symlink"))?;
                fsutil::set_attrs(&target, &attrs, true)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let lshown = String::from_utf8_lossy(&link).into_owned();
                let lcomps = clean_path(&link, &lshown)?;
                let Some((lname, lparent)) = lcomps.split_last() else {
                    return Err(Error::UnsafeEntry {
                        entry: shown,
                        reason: "hardlink to the root dir",
                    });
                };
                let src = match resolve_existing_dir(dest, lowers, lparent, &shown) {
                    Ok(ldir) if fsutil::lstat(&ldir.join(lname))?.is_some() => ldir.join(lname),
                    _ => copy_up(dest, lowers, &lcomps, &shown, &mut dirs)?,
                };
                if fsutil::lstat(&src)?.is_some_and(|m| m.is_dir()) {
                    return Err(Error::UnsafeEntry {
                        entry: shown,
                        reason: "hardlink to a directory",
                    });
                }
                if src == target {
                    report.entries += 1;
                    continue;
                }
                fsutil::remove_all(&target)?;
                // linkat without AT_SYMLINK_FOLLOW: a symlink is linked, not followed.
                fs::hard_link(&src, &target).map_err(Error::io("create hardlink"))?;
            }
            tar::EntryType::Fifo => {
                fsutil::remove_all(&target)?;
                rustix::fs::mknodat(
                    CWD,
                    &target,
                    FileType::Fifo,
                    Mode::from_raw_mode(attrs.mode),
                    0,
                )
                .map_err(|e| Error::IoAt {
                    op: "mkfifo",
                    path: target.clone(),
                    source: e.into(),
                })?;
                fsutil::set_attrs(&target, &attrs, false)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(1);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(1);
                if mode == UnpackMode::Layer
                    && kind == tar::EntryType::Char
                    && major == 0
                    && minor == 0
                {
                    if existing.is_none() {
                        fsutil::make_whiteout(&parent, name)?;
                    }
                } else {
                    report.skipped.push((shown, "device node"));
                    continue;
                }
            }
            _ => {
                report.skipped.push((shown, "unsupported entry type"));
                continue;
            }
        }
        for (k, v) in &xattrs {
            fsutil::set_xattr(&target, k, v);
        }
        report.entries += 1;
    }
    // Directory owners, modes and mtimes last, deepest first, so a read-only
    // dir does not block its children and child writes do not bump mtimes.
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, a) in dirs.iter().rev() {
        if fsutil::lstat(p)?.is_some_and(|m| m.is_dir()) {
            fsutil::set_attrs(p, a, false)?;
        }
    }
    Ok(report)
}

/// Split an archive path into clean components: empty and `.` parts are
/// dropped, a leading `/` is ignored, `..` is refused.
fn clean_path(raw: &[u8], shown: &str) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::UnsafeEntry {
                    entry: shown.to_owned(),
                    reason: "path contains `..`",
                });
            }
            c => {
                if c.contains(&0) {
                    return Err(Error::UnsafeEntry {
                        entry: shown.to_owned(),
                        reason: "NUL in path",
                    });
                }
                out.push(OsStr::from_bytes(c).to_owned());
            }
        }
    }
    Ok(out)
}

/// Resolve `comps` as a directory inside `root`, creating missing dirs.
fn resolve_dir(
    root: &Path,
    lowers: &[PathBuf],
    comps: &[OsString],
    shown: &str,
    dirs: &mut Vec<(PathBuf, Attrs)>,
) -> Result<PathBuf> {
    resolve_in_root(root, lowers, comps, Some(dirs), shown)
}

/// Resolve `comps` as an existing directory inside `root`.
fn resolve_existing_dir(
    root: &Path,
    lowers: &[PathBuf],
    comps: &[OsString],
    shown: &str,
) -> Result<PathBuf> {
    resolve_in_root(root, lowers, comps, None, shown)
}

/// A hardlink names a file that only a lower layer has: copy it into the
/// diff (as overlay's copy-up would) and return its new path.
fn copy_up(
    root: &Path,
    lowers: &[PathBuf],
    comps: &[OsString],
    shown: &str,
    dirs: &mut Vec<(PathBuf, Attrs)>,
) -> Result<PathBuf> {
    let rel: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
    let missing = || Error::UnsafeEntry {
        entry: shown.to_owned(),
        reason: "hardlink target is not an earlier entry of the archive nor in a lower layer",
    };
    let Some((name, parent)) = comps.split_last() else {
        return Err(missing());
    };
    let Some((src, meta)) = super::pack::find_below(lowers, &rel) else {
        return Err(missing());
    };
    if meta.is_dir() {
        return Err(missing());
    }
    let dir = resolve_dir(root, lowers, parent, shown, dirs)?;
    let dst = dir.join(name);
    fsutil::remove_all(&dst)?;
    fsutil::Copier::new().copy_entry(&src, &dst, &meta)?;
    Ok(dst)
}

/// Walk `comps` from `root`, one component at a time, following symlinks
/// met on the way as if `root` were `/` (absolute targets restart at root,
/// `..` never climbs above it). A component missing from `root` is looked
/// up in `lowers`: a symlink there is followed the same way, a dir there is
/// created with its owner and mode. Missing dirs are created only when
/// `created` is given (they are recorded there for their final attributes).
/// Returns a path made of real directories only.
pub fn resolve_in_root(
    root: &Path,
    lowers: &[PathBuf],
    comps: &[OsString],
    mut created: Option<&mut Vec<(PathBuf, Attrs)>>,
    shown: &str,
) -> Result<PathBuf> {
    let unsafe_entry = |reason| Error::UnsafeEntry {
        entry: shown.to_owned(),
        reason,
    };
    let mut stack: Vec<OsString> = Vec::new();
    let mut queue: std::collections::VecDeque<OsString> = comps.iter().cloned().collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        let b = c.as_bytes();
        if b.is_empty() || b == b"." {
            continue;
        }
        if b == b".." {
            stack.pop();
            continue;
        }
        let mut cur = root.to_path_buf();
        cur.extend(&stack);
        cur.push(&c);
        let parent_dir = cur.parent().unwrap_or(root).to_path_buf();
        let deleted = is_whiteout_at(&parent_dir, &c)?;
        let here = if deleted { None } else { fsutil::lstat(&cur)? };
        let below =
            if here.is_none() && !deleted && !lowers.is_empty() && !under_opaque(root, &stack) {
                let mut rel: Vec<&OsStr> = stack.iter().map(|s| s.as_os_str()).collect();
                rel.push(&c);
                super::pack::find_below(lowers, &rel)
            } else {
                None
            };
        let link_at = match (&here, &below) {
            (Some(m), _) if m.file_type().is_symlink() => Some(cur.clone()),
            (None, Some((p, m))) if m.file_type().is_symlink() => Some(p.clone()),
            _ => None,
        };
        if let Some(link) = link_at {
            hops += 1;
            if hops > 40 {
                return Err(unsafe_entry("too many symlinks"));
            }
            let t = fs::read_link(&link).map_err(Error::io("read symlink"))?;
            let tb = t.as_os_str().as_bytes();
            if tb.starts_with(b"/") {
                stack.clear();
            }
            for p in tb.split(|x| *x == b'/').rev() {
                queue.push_front(OsStr::from_bytes(p).to_owned());
            }
            continue;
        }
        match here {
            Some(m) if m.is_dir() => stack.push(c),
            Some(_) => return Err(unsafe_entry("a parent path component is not a directory")),
            None => {
                let Some(created) = created.as_deref_mut() else {
                    return Err(unsafe_entry("a parent directory does not exist"));
                };
                if deleted {
                    take_whiteout(&parent_dir, &c)?;
                }
                fs::create_dir(&cur).map_err(Error::io("create parent dir"))?;
                if deleted {
                    fsutil::set_opaque(&cur)?;
                }
                if let Some((_, m)) = below.filter(|(_, m)| m.is_dir()) {
                    created.push((cur, Attrs::of(&m)));
                }
                stack.push(c);
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    Ok(out)
}

/// Whether this layer deleted `dir/name` (0/0 char device or marker file).
fn is_whiteout_at(dir: &Path, name: &OsStr) -> Result<bool> {
    if let Some(m) = fsutil::lstat(&dir.join(name))? {
        return Ok(m.file_type().is_char_device() && m.rdev() == 0);
    }
    let mut marker = OsString::from(WHITEOUT_PREFIX);
    marker.push(name);
    Ok(fsutil::lstat(&dir.join(marker))?.is_some_and(|m| fsutil::is_marker_file(&m)))
}

/// Remove this layer's whiteout of `dir/name`, returning whether there was one.
fn take_whiteout(dir: &Path, name: &OsStr) -> Result<bool> {
    if !is_whiteout_at(dir, name)? {
        return Ok(false);
    }
    fsutil::remove_all(&dir.join(name))?;
    let mut marker = OsString::from(WHITEOUT_PREFIX);
    marker.push(name);
    fsutil::remove_all(&dir.join(marker))?;
    Ok(true)
}

/// Whether a dir on the way (in this layer) is opaque, hiding the lowers.
fn under_opaque(root: &Path, stack: &[OsString]) -> bool {
    let mut p = root.to_path_buf();
    stack.iter().any(|c| {
        p.push(c);
        fsutil::is_opaque(&p)
    })
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(Error::archive("read PAX header"))?
    {
        for ext in exts {
            let ext = ext.map_err(Error::archive("read PAX header"))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && !name.starts_with("trusted.overlay.")
                && !name.starts_with("user.overlay.")
            {
                out.push((name.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}
