//! Filesystem helpers confined to a root: path resolution that never leaves
//! the root, tree copies that keep metadata, and content checksums.
//!
//! Resolution follows chroot semantics: `..` at the root stays at the root and
//! a symlink target is read relative to the root, so neither can name anything
//! outside it. Paths given by an op that climb above the root with `..` are
//! refused outright, which is stricter than BuildKit's silent clamping.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

const MAX_SYMLINKS: usize = 40;

/// Splits an op path into normal components, refusing `..` that climbs
/// above the root.
pub fn clean_rel(path: &str) -> Result<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    bail!("path {path:?} escapes the root");
                }
            }
            Component::Normal(n) => out.push(n.to_owned()),
        }
    }
    Ok(out)
}

/// The relative form of an op path (`/a/./b/` → `a/b`), refusing escapes.
pub fn clean_rel_path(path: &str) -> Result<PathBuf> {
    Ok(clean_rel(path)?.into_iter().collect())
}

/// Resolves `path` inside `root`, following symlinks in every component but
/// the last (and the last too when `follow_last`). The result is always
/// under `root`; missing components are allowed.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = clean_rel(path)?.into();
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            stack.pop();
            continue;
        }
        if c == "." {
            continue;
        }
        stack.push(c);
        if pending.is_empty() && !follow_last {
            break;
        }
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>());
        let Ok(md) = std::fs::symlink_metadata(&here) else {
            continue;
        };
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                bail!("too many levels of symbolic links resolving {path:?}");
            }
            let target = fs_err::read_link(&here)?;
            stack.pop();
            if target.is_absolute() {
                stack.clear();
            }
            let mut comps: Vec<OsString> = Vec::new();
            for tc in target.components() {
                match tc {
                    Component::Normal(n) => comps.push(n.to_owned()),
                    Component::ParentDir => comps.push("..".into()),
                    _ => {}
                }
            }
            for tc in comps.into_iter().rev() {
                pending.push_front(tc);
            }
        }
    }
    Ok(root.join(stack.iter().collect::<PathBuf>()))
}

/// Whether a symlink at `link` (relative to `root`, with target `target`)
/// points inside `root` without relying on clamping.
pub fn symlink_stays_inside(rel_link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel_link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("path {p:?} has a NUL byte"))
}

/// Sets owner without following symlinks.
pub fn lchown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let r = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // Unprivileged runs cannot chown; ownership is best effort there.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e).with_context(|| format!("chown {p:?}"));
        }
    }
    Ok(())
}

/// Sets atime and mtime (nanoseconds since the epoch) without following
/// symlinks.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) -> Result<()> {
    let c = cstr(p)?;
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: valid path pointer and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("utimensat {p:?}"));
    }
    Ok(())
}

fn mknod(p: &Path, mode: u32, rdev: u64) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid path pointer.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mknod {p:?}"));
    }
    Ok(())
}

/// Copies one entry (file, dir without contents, symlink, device, fifo)
/// with its mode, owner and mtime. `dst` must not exist.
pub fn copy_entry(src: &Path, dst: &Path, md: &std::fs::Metadata) -> Result<()> {
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = fs_err::read_link(src)?;
        std::os::unix::fs::symlink(&t, dst).with_context(|| format!("symlink {dst:?}"))?;
    } else if ft.is_dir() {
        fs_err::create_dir(dst)?;
        fs_err::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    } else if ft.is_file() {
        fs_err::copy(src, dst)?;
        fs_err::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    } else {
        mknod(dst, md.mode(), md.rdev())?;
    }
    lchown(dst, md.uid(), md.gid())?;
    if !ft.is_dir() {
        set_mtime(dst, md.mtime(), md.mtime_nsec())?;
    }
    Ok(())
}

/// Copies the tree at `src` to `dst` (created), keeping metadata. Directory
/// mtimes are set after their contents.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let md = fs_err::symlink_metadata(src)?;
    copy_entry(src, dst, &md)?;
    if md.is_dir() {
        let mut names: Vec<OsString> = fs_err::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            copy_tree(&src.join(&n), &dst.join(&n))?;
        }
        set_mtime(dst, md.mtime(), md.mtime_nsec())?;
    }
    Ok(())
}

/// Builds `dst` (created) as a hardlink farm of the tree at `src`:
/// directories are real copies, everything else is a hard link to the same
/// inode. Callers must never modify a linked file in place: they replace it
/// (unlink, then create), which leaves `src` untouched.
pub fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    let md = fs_err::symlink_metadata(src)?;
    if !md.is_dir() {
        fs_err::hard_link(src, dst)?;
        return Ok(());
    }
    fs_err::create_dir(dst)?;
    fs_err::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    lchown(dst, md.uid(), md.gid())?;
    for e in fs_err::read_dir(src)? {
        let e = e?;
        link_tree(&e.path(), &dst.join(e.file_name()))?;
    }
    set_mtime(dst, md.mtime(), md.mtime_nsec())?;
    Ok(())
}

/// Copies the contents of directory `src` into existing directory `dst`,
/// replacing entries that exist in both (a directory over a directory is
/// merged).
pub fn merge_into(src: &Path, dst: &Path) -> Result<()> {
    let mut names: Vec<OsString> = fs_err::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for n in names {
        let s = src.join(&n);
        let d = dst.join(&n);
        let smd = fs_err::symlink_metadata(&s)?;
        match std::fs::symlink_metadata(&d) {
            Ok(dmd) if dmd.is_dir() && smd.is_dir() => {
                merge_into(&s, &d)?;
                fs_err::set_permissions(&d, std::fs::Permissions::from_mode(smd.mode() & 0o7777))?;
                lchown(&d, smd.uid(), smd.gid())?;
                set_mtime(&d, smd.mtime(), smd.mtime_nsec())?;
            }
            Ok(dmd) => {
                remove_any(&d, &dmd)?;
                copy_tree(&s, &d)?;
            }
            Err(_) => copy_tree(&s, &d)?,
        }
    }
    Ok(())
}

/// Removes a file, symlink or directory tree.
pub fn remove_any(p: &Path, md: &std::fs::Metadata) -> Result<()> {
    if md.is_dir() {
        fs_err::remove_dir_all(p)?;
    } else {
        fs_err::remove_file(p)?;
    }
    Ok(())
}

/// sha256 of a file's contents.
pub fn hash_file(p: &Path) -> Result<String> {
    let mut f = fs_err::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("read {p:?}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The checksum of one entry: its type, permission bits and content (file
/// hash or link target). Owner and times are not part of it, so a touched
/// file keeps its checksum.
pub fn entry_sum(kind: char, mode: u32, content: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kiln.sum.v1\0");
    h.update([kind as u8]);
    h.update((mode & 0o7777).to_le_bytes());
    h.update(content.as_bytes());
    hex::encode(h.finalize())
}

/// Kind letter of a metadata entry.
pub fn kind_of(md: &std::fs::Metadata) -> char {
    let ft = md.file_type();
    if ft.is_symlink() {
        'l'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else {
        'o'
    }
}

/// Computes per-entry checksums for the whole tree under `root`, keyed by
/// relative path (`""` is the root itself).
pub fn tree_sums(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if std::fs::symlink_metadata(root).is_err() {
        return Ok(out);
    }
    walk_sums(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_sums(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let p = root.join(rel);
    let md = fs_err::symlink_metadata(&p)?;
    let kind = kind_of(&md);
    let content = match kind {
        'f' => hash_file(&p)?,
        'l' => fs_err::read_link(&p)?.to_string_lossy().into_owned(),
        'o' => format!("{}:{}", md.mode() & 0o170000, md.rdev()),
        _ => String::new(),
    };
    out.insert(
        rel.to_string_lossy().into_owned(),
        entry_sum(kind, md.mode(), &content),
    );
    if kind == 'd' {
        for e in fs_err::read_dir(&p)? {
            let e = e?;
            walk_sums(root, &rel.join(e.file_name()), out)?;
        }
    }
    Ok(())
}

/// Combines the entry checksums at and under `prefix` (a relative path,
/// `""` for everything) into one subtree checksum.
pub fn subtree_sum(sums: &BTreeMap<String, String>, prefix: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kiln.subtree.v1\0");
    let under = |k: &str| {
        prefix.is_empty()
            || k == prefix
            || (k.starts_with(prefix) && k.as_bytes().get(prefix.len()) == Some(&b'/'))
    };
    let mut any = false;
    for (k, v) in sums.range(prefix.to_owned()..) {
        if !under(k) {
            if k.as_str() > prefix && !k.starts_with(prefix) {
                break;
            }
            continue;
        }
        any = true;
        let relk = &k[prefix.len()..];
        h.update((relk.len() as u64).to_le_bytes());
        h.update(relk.as_bytes());
        h.update(v.as_bytes());
    }
    if !any {
        h.update(b"missing");
    }
    hex::encode(h.finalize())
}

/// Relative path string for a path under `root`.
pub fn rel_string(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// An `OsStr` to `&str`, refusing non-UTF-8 names in op paths.
pub fn utf8(name: &OsStr) -> Result<&str> {
    name.to_str()
        .with_context(|| format!("file name {name:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_never_leaves_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs_err::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("a/up")).unwrap();
        assert_eq!(
            resolve(&root, "abs/passwd", true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(resolve(&root, "a/up/x", true).unwrap(), root.join("x"));
        assert_eq!(resolve(&root, "a/up", false).unwrap(), root.join("a/up"));
        assert!(resolve(&root, "../x", true).is_err());
        assert!(resolve(&root, "a/../../x", true).is_err());
        assert_eq!(resolve(&root, "/a/./b/", true).unwrap(), root.join("a/b"));
    }

    #[test]
    fn symlink_inside_check() {
        assert!(symlink_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(!symlink_stays_inside(
            Path::new("a/l"),
            Path::new("../../b")
        ));
        assert!(!symlink_stays_inside(Path::new("l"), Path::new("/etc")));
    }

    #[test]
    fn subtree_sums_select_prefix() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), "1".to_owned());
        m.insert("a/x".to_owned(), "2".to_owned());
        m.insert("ab".to_owned(), "3".to_owned());
        m.insert("b".to_owned(), "4".to_owned());
        let s1 = subtree_sum(&m, "a");
        m.insert("ab".to_owned(), "5".to_owned());
        assert_eq!(s1, subtree_sum(&m, "a"));
        m.insert("a/x".to_owned(), "6".to_owned());
        assert_ne!(s1, subtree_sum(&m, "a"));
    }
}
