//! Filesystem helpers shared by snapshots, layers and exporters: overlay
//! whiteout/opaque markers, metadata copying, tree copy and removal.
//!
//! Layer 1 (leaf). Every error names its path.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use fs_err as fs;
use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timestamps, Uid, XattrFlags};

use crate::error::{Error, Result};

/// Prefix of an OCI whiteout name (`.wh.NAME`), also kiln's portable whiteout
/// marker when a 0/0 char device cannot be made.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque-dir marker name, also kiln's portable opaque marker when the
/// overlay xattr cannot be set.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs sets on an opaque upper dir.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same in rootless (`userxattr`) mode.
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";

/// What one name in a diff (overlay upper) directory means.
#[derive(Debug, PartialEq, Eq)]
pub enum DiffName {
    /// A real entry.
    Entry,
    /// A deletion of the given name (0/0 char device, or `.wh.NAME` file).
    Whiteout(OsString),
    /// The portable opaque marker for the containing dir.
    OpaqueMarker,
}

/// Whether `meta` is a portable marker: an empty regular file with mode 000
/// (a user file with a `.wh.` name and ordinary permissions stays a file).
pub fn is_marker_file(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_file() && meta.len() == 0 && meta.mode() & 0o7777 == 0
}

/// Classify `name` (with metadata `meta`) inside a diff dir.
pub fn classify(name: &OsStr, meta: &std::fs::Metadata) -> DiffName {
    let ft = meta.file_type();
    if ft.is_char_device() && meta.rdev() == 0 {
        return DiffName::Whiteout(name.to_owned());
    }
    if is_marker_file(meta) {
        let b = name.as_bytes();
        if b == OPAQUE_MARKER.as_bytes() {
            return DiffName::OpaqueMarker;
        }
        if let Some(rest) = b.strip_prefix(WHITEOUT_PREFIX.as_bytes())
            && !rest.is_empty()
        {
            return DiffName::Whiteout(OsStr::from_bytes(rest).to_owned());
        }
    }
    DiffName::Entry
}

/// Whether the diff dir `dir` is opaque (xattr or portable marker).
pub fn is_opaque(dir: &Path) -> bool {
    for name in [OPAQUE_XATTR, OPAQUE_XATTR_USER] {
        let mut buf = [0u8; 4];
        if let Ok(n) = rustix::fs::lgetxattr(dir, name, &mut buf[..])
            && &buf[..n] == b"y"
        {
            return true;
        }
    }
    dir.join(OPAQUE_MARKER)
        .symlink_metadata()
        .is_ok_and(|m| is_marker_file(&m))
}

/// Mark the diff dir `dir` opaque: the overlay xattr, or the portable marker
/// file if xattrs are not available (no privilege, or the fs lacks them).
pub fn set_opaque(dir: &Path) -> Result<()> {
    if !PORTABLE.load(std::sync::atomic::Ordering::Relaxed)
        && rustix::fs::lsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).is_ok()
    {
        return Ok(());
    }
    write_marker(&dir.join(OPAQUE_MARKER))
}

fn write_marker(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    remove_all(p)?;
    fs::File::create(p).map_err(Error::io("write marker"))?;
    fs::set_permissions(p, std::fs::Permissions::from_mode(0o000))
        .map_err(Error::io("write marker"))
}

/// Record the deletion of `dir/name`: a 0/0 char device, or the portable
/// `.wh.NAME` marker file when mknod is not permitted.
pub fn make_whiteout(dir: &Path, name: &OsStr) -> Result<()> {
    let p = dir.join(name);
    remove_all(&p)?;
    if !PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        let dev = rustix::fs::makedev(0, 0);
        if rustix::fs::mknodat(CWD, &p, FileType::CharacterDevice, Mode::empty(), dev).is_ok() {
            return Ok(());
        }
    }
    let mut m = OsString::from(WHITEOUT_PREFIX);
    m.push(name);
    write_marker(&dir.join(m))
}

static PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Make this process write only the portable marker forms (`.wh.NAME` and
/// `.wh..wh..opq` files), as it would without privilege. For tests of the
/// unprivileged path; affects the whole process.
pub fn force_portable_markers(on: bool) {
    PORTABLE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `lstat`, with `None` for a missing path.
pub fn lstat(p: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::IoAt {
            op: "stat",
            path: p.to_owned(),
            source: e,
        }),
    }
}

/// Remove a file, symlink or whole tree; a missing path is fine.
pub fn remove_all(p: &Path) -> Result<()> {
    match lstat(p)? {
        None => Ok(()),
        Some(m) if m.is_dir() => {
            // A read-only dir (e.g. overlay's work/work, mode 000) must be made
            // writable before its children can go.
            make_writable_tree(p);
            fs::remove_dir_all(p).map_err(Error::io("remove tree"))
        }
        Some(_) => fs::remove_file(p).map_err(Error::io("remove file")),
    }
}

fn make_writable_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::symlink_metadata(p)
        && m.is_dir()
    {
        if m.mode() & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(
                p,
                std::fs::Permissions::from_mode((m.mode() | 0o700) & 0o7777),
            );
        }
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                make_writable_tree(&e.path());
            }
        }
    }
}

/// Sorted names of a directory's children (byte order).
pub fn sorted_children(dir: &Path) -> Result<Vec<OsString>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(Error::io("read dir"))? {
        v.push(e.map_err(Error::io("read dir"))?.file_name());
    }
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(v)
}

/// Whether kiln runs with the privilege to chown.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Owner, mode and mtime to give a path.
#[derive(Clone, Copy, Debug)]
pub struct Attrs {
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
}

impl Attrs {
    /// The attributes of an existing file.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Attrs {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// Apply owner (best effort when not root), mode (not for symlinks) and mtime
/// to `p`, never following a symlink at `p`.
pub fn set_attrs(p: &Path, a: &Attrs, is_symlink: bool) -> Result<()> {
    let r = rustix::fs::chownat(
        CWD,
        p,
        Some(Uid::from_raw(a.uid)),
        Some(Gid::from_raw(a.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    if let Err(e) = r
        && is_root()
    {
        return Err(Error::IoAt {
            op: "chown",
            path: p.to_owned(),
            source: e.into(),
        });
    }
    if !is_symlink {
        // chown clears setuid bits, so the mode goes after it.
        rustix::fs::chmod(p, Mode::from_raw_mode(a.mode)).map_err(|e| Error::IoAt {
            op: "chmod",
            path: p.to_owned(),
            source: e.into(),
        })?;
    }
    set_mtime(p, a.mtime, a.mtime_nsec)
}

/// Set atime and mtime of `p` (not following a symlink).
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) -> Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let t = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, p, &t, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Error::IoAt {
        op: "set mtime of",
        path: p.to_owned(),
        source: e.into(),
    })
}

/// The xattrs of `p` that belong in a layer: everything except overlay's own
/// state. Errors reading xattrs (unsupported fs) give an empty list.
pub fn layer_xattrs(p: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let n = match rustix::fs::llistxattr_query(p) {
        Ok(0) | Err(_) => return Ok(out),
        Ok(n) => n,
    };
    let mut names = vec![0u8; n];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Ok(out);
    };
    for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if name == "trusted.overlay.redirect" || name == "trusted.overlay.metacopy" {
            return Err(Error::UnsupportedOverlay {
                path: p.to_owned(),
                xattr: name.to_owned(),
            });
        }
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let Ok(len) = rustix::fs::lgetxattr_query(p, name) else {
            continue;
        };
        let mut v = vec![0u8; len];
        if let Ok(len) = rustix::fs::lgetxattr(p, name, &mut v[..]) {
            v.truncate(len);
            out.push((name.to_owned(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Set an xattr, best effort (an fs or privilege without it is not an error).
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let _ = rustix::fs::lsetxattr(p, name, value, XattrFlags::empty());
}

/// Copies tree entries preserving type, content, owner, mode, mtime, xattrs
/// and hardlinks (within one `Copier`).
#[derive(Default)]
pub struct Copier {
    diffs: bool,
    links: HashMap<(u64, u64), PathBuf>,
    dir_times: Vec<(PathBuf, i64, i64)>,
}

impl Copier {
    /// A copier with no hardlinks seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copier for diff dirs: it also carries opaque-dir markers over.
    pub fn for_diffs() -> Self {
        Copier {
            diffs: true,
            ..Self::default()
        }
    }

    /// Copy one non-directory entry `src` to `dst` (which must not exist).
    pub fn copy_entry(&mut self, src: &Path, dst: &Path, m: &std::fs::Metadata) -> Result<()> {
        let ft = m.file_type();
        if !ft.is_dir() && m.nlink() > 1 && !(ft.is_char_device() && m.rdev() == 0) {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(first, dst).map_err(Error::io("hardlink"))?;
                return Ok(());
            }
            self.links.insert(key, dst.to_owned());
        }
        if ft.is_symlink() {
            let t = fs::read_link(src).map_err(Error::io("read symlink"))?;
            fs_err::os::unix::fs::symlink(&t, dst).map_err(Error::io("create symlink"))?;
        } else if ft.is_file() && m.len() == 0 {
            // Also covers mode-000 markers, which an unprivileged owner cannot read.
            fs::File::create(dst).map_err(Error::io("create file"))?;
        } else if ft.is_file() {
            fs::copy(src, dst).map_err(Error::io("copy file"))?;
        } else if ft.is_dir() {
            fs::create_dir(dst).map_err(Error::io("create dir"))?;
        } else {
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else if ft.is_fifo() {
                FileType::Fifo
            } else {
                FileType::Socket
            };
            rustix::fs::mknodat(
                CWD,
                dst,
                kind,
                Mode::from_raw_mode(m.mode() & 0o7777),
                m.rdev(),
            )
            .map_err(|e| Error::IoAt {
                op: "mknod",
                path: dst.to_owned(),
                source: e.into(),
            })?;
        }
        for (k, v) in layer_xattrs(src).unwrap_or_default() {
            set_xattr(dst, &k, &v);
        }
        if self.diffs && ft.is_dir() && is_opaque(src) {
            set_opaque(dst)?;
        }
        let a = Attrs::of(m);
        if ft.is_dir() {
            self.set_attrs_dir(dst, &a)
        } else {
            set_attrs(dst, &a, ft.is_symlink())
        }
    }

    /// Apply owner and mode to a dir now; its mtime is set by [`Copier::finish`]
    /// after its children are written.
    pub fn set_attrs_dir(&mut self, dst: &Path, a: &Attrs) -> Result<()> {
        set_attrs(dst, a, false)?;
        self.dir_times.push((dst.to_owned(), a.mtime, a.mtime_nsec));
        Ok(())
    }

    /// Copy the tree `src` to `dst` (which must not exist).
    pub fn copy_tree(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let m = fs::symlink_metadata(src).map_err(Error::io("stat"))?;
        self.copy_entry(src, dst, &m)?;
        if m.is_dir() {
            for name in sorted_children(src)? {
                self.copy_tree(&src.join(&name), &dst.join(&name))?;
            }
        }
        Ok(())
    }

    /// Set the deferred directory mtimes (deepest first, last writer wins).
    pub fn finish(self) -> Result<()> {
        let mut last: std::collections::BTreeMap<PathBuf, (i64, i64)> = Default::default();
        for (p, s, n) in self.dir_times {
            last.insert(p, (s, n));
        }
        for (p, (s, n)) in last.into_iter().rev() {
            if lstat(&p)?.is_some_and(|m| m.is_dir()) {
                set_mtime(&p, s, n)?;
            }
        }
        Ok(())
    }
}

/// Random 16-hex-digit id (64 bits from the OS).
pub fn random_hex() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(hex::encode(b))
}

/// Disk usage of a tree: allocated bytes, each inode once.
pub fn usage(root: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    fn walk(
        p: &Path,
        seen: &mut std::collections::HashSet<(u64, u64)>,
        total: &mut u64,
    ) -> Result<()> {
        let m = fs::symlink_metadata(p).map_err(Error::io("stat"))?;
        if seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in fs::read_dir(p).map_err(Error::io("read dir"))? {
                walk(&e.map_err(Error::io("read dir"))?.path(), seen, total)?;
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(root, &mut seen, &mut total)?;
    Ok(total)
}
