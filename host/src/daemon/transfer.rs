//! Local dirs that clients send: one mirror directory per client directory
//! and local name, kept between builds, so a rebuild transfers only the
//! files whose type, mode, size or mtime changed (BuildKit's fsutil does
//! the same with its own stat walk).
//!
//! Layout under the daemon's state: `daemon/v1/locals/<key>/tree/` is the
//! mirror the engine's `local://` source reads, `<key>/manifest.json` what
//! it holds, `<key>/tmp/` files being received. The manifest is removed
//! while a transfer changes the tree and written again at its end, so a
//! transfer cut short leaves a mirror that is rebuilt from scratch.
//!
//! A mirror serves one session at a time: a second session from the same
//! client directory, while the first still builds, gets a private copy
//! under its session dir (a full transfer).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::proto;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// What the mirror holds of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    mode: u32,
    size: u64,
    mtime_ns: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    linkname: String,
}

impl Held {
    fn of(e: &proto::Entry) -> Held {
        Held {
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime_ns,
            linkname: e.linkname.clone(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    root_mode: u32,
    root_mtime_ns: i64,
    entries: BTreeMap<String, Held>,
}

/// The mirrors of one daemon.
pub(crate) struct Mirrors {
    dir: PathBuf,
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One local dir of one session, being received or ready.
pub(crate) struct Mirror {
    name: String,
    base: PathBuf,
    tree: PathBuf,
    persistent: bool,
    held: Manifest,
    want: Manifest,
    needed: BTreeSet<String>,
    requested: usize,
    receiving: Option<Receiving>,
    sent_bytes: u64,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

struct Receiving {
    path: String,
    file: tempfile::NamedTempFile,
    written: u64,
}

impl Mirrors {
    pub(crate) fn new(dir: PathBuf) -> Mirrors {
        Mirrors {
            dir,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror of `shared_key`'s dir for local `name`, or a fresh
    /// private one under `session_dir` when another session holds it.
    pub(crate) fn acquire(
        &self,
        name: &str,
        shared_key: &str,
        session_dir: &Path,
    ) -> anyhow::Result<Mirror> {
        let mut h = sha2::Sha256::new();
        h.update(shared_key.as_bytes());
        h.update([0]);
        h.update(name.as_bytes());
        let key = hex::encode(h.finalize());
        let lock = self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let (base, guard) = match lock.try_lock_owned() {
            Ok(g) if !shared_key.is_empty() => (self.dir.join(&key), Some(g)),
            _ => (
                session_dir
                    .join("locals")
                    .join(hex::encode(sha2::Sha256::digest(name.as_bytes()))),
                None,
            ),
        };
        let persistent = guard.is_some();
        let tree = base.join("tree");
        fs_err::create_dir_all(base.join("tmp"))?;
        let held = if persistent {
            load_manifest(&base.join("manifest.json"))
        } else {
            None
        };
        let held = match held {
            Some(m) => m,
            None => {
                // Unknown contents: start over.
                if tree.exists() {
                    fs_err::remove_dir_all(&tree)?;
                }
                Manifest::default()
            }
        };
        fs_err::create_dir_all(&tree)?;
        Ok(Mirror {
            name: name.to_string(),
            base,
            tree,
            persistent,
            held,
            want: Manifest::default(),
            needed: BTreeSet::new(),
            requested: 0,
            receiving: None,
            sent_bytes: 0,
            _guard: guard,
        })
    }
}

fn load_manifest(p: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(p).ok()?;
    serde_json::from_slice::<Manifest>(&bytes)
        .ok()
        .filter(|m| m.version == 1)
}

/// A relative path with `/` separators and no empty, `.` or `..` parts.
fn check_path(p: &str) -> anyhow::Result<()> {
    if p.is_empty()
        || p.starts_with('/')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("the client sent an invalid path {p:?}");
    }
    Ok(())
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn remove_any(p: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs_err::remove_dir_all(p)?,
        Ok(_) => fs_err::remove_file(p)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
    }
    Ok(())
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Sets the mtime (and atime) of `p` without following a symlink.
fn set_mtime_nofollow(p: &Path, ns: i64) -> anyhow::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("path {} holds a NUL byte", p.display()))?;
    let ts = libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the mtime of {}", p.display()));
    }
    Ok(())
}

impl Mirror {
    /// The directory the engine reads.
    pub(crate) fn tree(&self) -> &Path {
        &self.tree
    }

    /// The local name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Files asked for, entries in the manifest, bytes received.
    pub(crate) fn stats(&self) -> (usize, usize, u64) {
        (self.requested, self.want.entries.len(), self.sent_bytes)
    }

    /// Brings the tree in line with the client's manifest except for file
    /// contents, and returns the files the client must send.
    pub(crate) fn apply(&mut self, m: &proto::LocalManifest) -> anyhow::Result<Vec<String>> {
        let mut want = Manifest {
            version: 1,
            root_mode: m.root_mode,
            root_mtime_ns: m.root_mtime_ns,
            entries: BTreeMap::new(),
        };
        for e in &m.entries {
            check_path(&e.path)?;
            let kind = e.mode & S_IFMT;
            if !matches!(kind, S_IFDIR | S_IFREG | S_IFLNK) {
                bail!("the client sent {:?} with an unsupported file type", e.path);
            }
            want.entries.insert(e.path.clone(), Held::of(e));
        }
        for p in want.entries.keys() {
            let parent = parent_of(p);
            if !parent.is_empty()
                && want
                    .entries
                    .get(parent)
                    .is_none_or(|h| h.mode & S_IFMT != S_IFDIR)
            {
                bail!("the client sent {p:?} without its parent directory");
            }
        }
        if self.persistent {
            remove_any(&self.base.join("manifest.json"))?;
        }
        // Remove what is gone or changed its type (children first).
        for (p, old) in self.held.entries.iter().rev() {
            let keep = want.entries.get(p).is_some_and(|new| {
                new.mode & S_IFMT == old.mode & S_IFMT
                    && (old.mode & S_IFMT != S_IFLNK || new.linkname == old.linkname)
            });
            if !keep {
                remove_any(&self.tree.join(p))?;
            }
        }
        let mut needed = Vec::new();
        for (p, new) in &want.entries {
            let dst = self.tree.join(p);
            let old = self.held.entries.get(p);
            match new.mode & S_IFMT {
                S_IFDIR => {
                    if std::fs::symlink_metadata(&dst).map_or(true, |md| !md.is_dir()) {
                        remove_any(&dst)?;
                        fs_err::create_dir(&dst)?;
                    }
                    // Owner-writable while files arrive; the mode is set at
                    // the end.
                    fs_err::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
                }
                S_IFLNK => {
                    let same = old.is_some_and(|o| o.linkname == new.linkname)
                        && std::fs::symlink_metadata(&dst).is_ok_and(|md| md.is_symlink());
                    if !same {
                        remove_any(&dst)?;
                        std::os::unix::fs::symlink(&new.linkname, &dst)
                            .with_context(|| format!("creating the symlink {}", dst.display()))?;
                    }
                }
                _ => {
                    let same = old == Some(new)
                        && std::fs::symlink_metadata(&dst).is_ok_and(|md| md.is_file());
                    if !same {
                        needed.push(p.clone());
                    }
                }
            }
        }
        self.needed = needed.iter().cloned().collect();
        self.requested = needed.len();
        self.want = want;
        Ok(needed)
    }

    /// Writes one chunk of a needed file; the last chunk puts the file in
    /// place with its mode and mtime.
    pub(crate) fn write_chunk(&mut self, c: &proto::FileChunk) -> anyhow::Result<()> {
        if self.receiving.as_ref().is_some_and(|r| r.path != c.path) {
            bail!(
                "the client sent {:?} before finishing {:?}",
                c.path,
                self.receiving.as_ref().map(|r| r.path.clone())
            );
        }
        if self.receiving.is_none() {
            if !self.needed.contains(&c.path) {
                bail!("the client sent {:?}, which was not asked for", c.path);
            }
            let file = tempfile::Builder::new()
                .prefix("recv-")
                .tempfile_in(self.base.join("tmp"))
                .context("creating a file for the transfer")?;
            self.receiving = Some(Receiving {
                path: c.path.clone(),
                file,
                written: 0,
            });
        }
        let r = self.receiving.as_mut().expect("set above");
        r.file
            .write_all(&c.data)
            .with_context(|| format!("writing {}", r.file.path().display()))?;
        r.written += c.data.len() as u64;
        self.sent_bytes += c.data.len() as u64;
        if !c.last {
            return Ok(());
        }
        let r = self.receiving.take().expect("set above");
        let want = self
            .want
            .entries
            .get_mut(&r.path)
            .context("a needed file is in the manifest")?;
        let f = r.file.as_file();
        f.set_permissions(std::fs::Permissions::from_mode(want.mode & 0o7777))
            .context("setting the mode of a received file")?;
        f.set_modified(time_of(want.mtime_ns))
            .context("setting the mtime of a received file")?;
        if r.written != want.size {
            // The file changed while the client read it: what arrived is
            // kept, and the next build sends it again.
            want.size = u64::MAX;
        }
        let dst = self.tree.join(&r.path);
        r.file
            .persist(&dst)
            .with_context(|| format!("moving a received file to {}", dst.display()))?;
        self.needed.remove(&r.path);
        Ok(())
    }

    /// After the last file: modes and mtimes of directories and symlinks,
    /// and the manifest for the next build.
    pub(crate) fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(r) = &self.receiving {
            bail!(
                "the client ended the transfer in the middle of {:?}",
                r.path
            );
        }
        if let Some(p) = self.needed.iter().next() {
            bail!(
                "the client ended the transfer of local {:?} without sending {p:?}",
                self.name
            );
        }
        for (p, h) in self.want.entries.iter().rev() {
            let dst = self.tree.join(p);
            match h.mode & S_IFMT {
                S_IFDIR => {
                    fs_err::set_permissions(
                        &dst,
                        std::fs::Permissions::from_mode(h.mode & 0o7777),
                    )?;
                    set_mtime_nofollow(&dst, h.mtime_ns)?;
                }
                S_IFLNK => set_mtime_nofollow(&dst, h.mtime_ns)?,
                _ => {}
            }
        }
        if self.want.root_mode != 0 {
            fs_err::set_permissions(
                &self.tree,
                std::fs::Permissions::from_mode(self.want.root_mode & 0o7777),
            )?;
        }
        set_mtime_nofollow(&self.tree, self.want.root_mtime_ns)?;
        self.held = std::mem::take(&mut self.want);
        self.want.entries = self.held.entries.clone();
        if self.persistent {
            let tmp = self.base.join("tmp/manifest.json");
            fs_err::write(&tmp, serde_json::to_vec(&self.held)?)?;
            fs_err::rename(&tmp, self.base.join("manifest.json"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, mode: u32, size: u64, mtime_ns: i64, link: &str) -> proto::Entry {
        proto::Entry {
            path: path.into(),
            mode,
            size,
            mtime_ns,
            linkname: link.into(),
        }
    }

    fn send(m: &mut Mirror, path: &str, data: &[u8]) {
        m.write_chunk(&proto::FileChunk {
            name: "context".into(),
            path: path.into(),
            data: data.to_vec(),
            last: true,
        })
        .unwrap();
    }

    #[test]
    fn a_second_transfer_asks_only_for_changed_files() {
        let state = tempfile::tempdir().unwrap();
        let session = tempfile::tempdir().unwrap();
        let mirrors = Mirrors::new(state.path().join("locals"));
        let manifest = |b_size, b_mtime| proto::LocalManifest {
            name: "context".into(),
            root_mode: S_IFDIR | 0o755,
            root_mtime_ns: 0,
            entries: vec![
                entry("a", S_IFREG | 0o644, 1, 10, ""),
                entry("d", S_IFDIR | 0o750, 0, 20, ""),
                entry("d/b", S_IFREG | 0o600, b_size, b_mtime, ""),
                entry("l", S_IFLNK | 0o777, 0, 30, "d/b"),
            ],
        };
        {
            let mut m = mirrors
                .acquire("context", "host:/src", session.path())
                .unwrap();
            let need = m.apply(&manifest(2, 40)).unwrap();
            assert_eq!(need, ["a", "d/b"]);
            send(&mut m, "a", b"A");
            send(&mut m, "d/b", b"BB");
            m.finish().unwrap();
            let t = m.tree().to_path_buf();
            assert_eq!(std::fs::read(t.join("d/b")).unwrap(), b"BB");
            assert_eq!(std::fs::read_link(t.join("l")).unwrap(), Path::new("d/b"));
            let md = std::fs::metadata(t.join("d")).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        }
        {
            let mut m = mirrors
                .acquire("context", "host:/src", session.path())
                .unwrap();
            let need = m.apply(&manifest(3, 50)).unwrap();
            assert_eq!(need, ["d/b"], "only the changed file");
            // A second session from the same dir gets a private mirror.
            let mut other = mirrors
                .acquire("context", "host:/src", session.path())
                .unwrap();
            assert_eq!(other.apply(&manifest(3, 50)).unwrap(), ["a", "d/b"]);
            // A file not asked for, and a path escaping the tree, are refused.
            assert!(
                m.write_chunk(&proto::FileChunk {
                    path: "a".into(),
                    last: true,
                    ..Default::default()
                })
                .is_err()
            );
            send(&mut m, "d/b", b"BBB");
            m.finish().unwrap();
        }
        let mut m = mirrors
            .acquire("context", "host:/src", session.path())
            .unwrap();
        let mut gone = manifest(3, 50);
        gone.entries.retain(|e| e.path == "a");
        assert!(m.apply(&gone).unwrap().is_empty());
        m.finish().unwrap();
        assert!(
            !m.tree().join("d").exists(),
            "removed on the client, removed here"
        );
        let mut bad = manifest(3, 50);
        bad.entries.push(entry("../x", S_IFREG | 0o644, 1, 1, ""));
        assert!(m.apply(&bad).is_err());
        let mut orphan = manifest(3, 50);
        orphan
            .entries
            .push(entry("nodir/x", S_IFREG | 0o644, 1, 1, ""));
        assert!(m.apply(&orphan).is_err());
    }
}
