//! Diff dir (overlay upper form) → OCI layer tar.
//!
//! Entries come depth first with each directory's children sorted by their
//! emitted name, numeric owners only, no atime/ctime, mtimes clamped to
//! `SOURCE_DATE_EPOCH` when given. A 0/0 char device becomes `.wh.NAME`
//! (only when NAME exists in a lower layer, if the lowers are given), an
//! opaque dir becomes the dir entry followed by `.wh..wh..opq`, hardlinks
//! become link entries to the first path, xattrs become PAX
//! `SCHILY.xattr.*` records (overlay's own are dropped).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::error::{Error, Result};
use crate::fsutil::{self, DiffName, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Options for writing a layer tar.
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// Clamp every mtime to at most this (unix seconds).
    pub source_date_epoch: Option<i64>,
}

/// Write the diff dir `diff` as a layer tar into `out`. `lowers` are the
/// parent chain's diff dirs, topmost first: a whiteout for a name none of
/// them has is dropped (overlay leaves such whiteouts after create+delete).
/// Pass an empty slice to keep every whiteout. Returns the entry count.
pub fn write_layer_tar<W: Write>(
    diff: &Path,
    lowers: &[PathBuf],
    opts: &TarOptions,
    out: W,
) -> Result<(W, u64)> {
    let mut p = Packer {
        tar: tar::Builder::new(out),
        opts,
        lowers,
        links: HashMap::new(),
        entries: 0,
        whiteouts: true,
    };
    p.walk(diff, &[])?;
    let w = p.tar.into_inner().map_err(Error::io("finish layer tar"))?;
    Ok((w, p.entries))
}

/// Write a plain directory tree (no whiteout handling) as a tar: the `tar`
/// exporter's output. Same ordering and normalisation as layers.
pub fn write_tree_tar<W: Write>(dir: &Path, opts: &TarOptions, out: W) -> Result<(W, u64)> {
    let mut p = Packer {
        tar: tar::Builder::new(out),
        opts,
        lowers: &[],
        links: HashMap::new(),
        entries: 0,
        whiteouts: false,
    };
    p.walk(dir, &[])?;
    let w = p.tar.into_inner().map_err(Error::io("finish tar"))?;
    Ok((w, p.entries))
}

struct Packer<'a, W: Write> {
    tar: tar::Builder<W>,
    opts: &'a TarOptions,
    lowers: &'a [PathBuf],
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    whiteouts: bool,
}

enum Item {
    Entry(OsString),
    Whiteout,
}

impl<W: Write> Packer<'_, W> {
    /// The mtime written for an entry. Files keep theirs (clamped to
    /// `SOURCE_DATE_EPOCH` when given). Directories get the epoch, or 0
    /// when none is given: a directory's mtime records when some op last
    /// added to it, which differs between two otherwise identical builds,
    /// and would make their layers differ. (Never the directory's own
    /// mtime, even clamped: a layer unpacked from a cache has directories
    /// at 0, and packing it again with an epoch must give what a build
    /// without the cache gives.)
    fn mtime(&self, m: &std::fs::Metadata) -> u64 {
        let t = m.mtime().max(0);
        match self.opts.source_date_epoch {
            Some(e) if m.is_dir() => e.max(0) as u64,
            Some(e) => t.min(e.max(0)) as u64,
            None if m.is_dir() => 0,
            None => t as u64,
        }
    }

    fn walk(&mut self, dir: &Path, rel: &[OsString]) -> Result<()> {
        let mut items: Vec<(Vec<u8>, Item)> = Vec::new();
        for name in fsutil::sorted_children(dir)? {
            let m = fs::symlink_metadata(dir.join(&name)).map_err(Error::io("stat"))?;
            let class = if self.whiteouts {
                fsutil::classify(&name, &m)
            } else {
                DiffName::Entry
            };
            match class {
                DiffName::OpaqueMarker => {}
                DiffName::Whiteout(target) => {
                    let mut full: Vec<&OsStr> = rel.iter().map(|s| s.as_os_str()).collect();
                    full.push(&target);
                    if self.lowers.is_empty() || exists_below(self.lowers, &full) {
                        let mut emitted = WHITEOUT_PREFIX.as_bytes().to_vec();
                        emitted.extend_from_slice(target.as_bytes());
                        items.push((emitted, Item::Whiteout));
                    }
                }
                DiffName::Entry => items.push((name.as_bytes().to_vec(), Item::Entry(name))),
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|a, b| a.0 == b.0);
        for (emitted, item) in items {
            let mut path = join_rel(rel);
            path.extend_from_slice(&emitted);
            match item {
                Item::Whiteout => {
                    self.whiteout_entry(&path)?;
                }
                Item::Entry(name) => {
                    let abs = dir.join(&name);
                    let m = fs::symlink_metadata(&abs).map_err(Error::io("stat"))?;
                    let opaque = m.is_dir() && self.whiteouts && fsutil::is_opaque(&abs);
                    if !(m.is_dir() && !opaque && self.same_dir_below(rel, &name, &abs, &m)?) {
                        self.entry(&abs, &path, &m)?;
                    }
                    if m.is_dir() {
                        if opaque {
                            let mut marker = path.clone();
                            marker.push(b'/');
                            marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
                            self.whiteout_entry(&marker)?;
                        }
                        let mut sub = rel.to_vec();
                        sub.push(name);
                        self.walk(&abs, &sub)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the dir `abs` only exists in the diff because overlay copied
    /// it up for a child: a lower layer has the same dir with the same owner,
    /// mode and xattrs. Its entry is then left out (like BuildKit's
    /// `sameDirent`), so the layer does not restamp its mtime.
    fn same_dir_below(
        &self,
        rel: &[OsString],
        name: &OsStr,
        abs: &Path,
        m: &std::fs::Metadata,
    ) -> Result<bool> {
        if self.lowers.is_empty() {
            return Ok(false);
        }
        let mut full: Vec<&OsStr> = rel.iter().map(|s| s.as_os_str()).collect();
        full.push(name);
        let Some((lp, lm)) = find_below(self.lowers, &full) else {
            return Ok(false);
        };
        Ok(lm.is_dir()
            && lm.mode() == m.mode()
            && lm.uid() == m.uid()
            && lm.gid() == m.gid()
            && fsutil::layer_xattrs(&lp)? == fsutil::layer_xattrs(abs)?)
    }

    fn header(&self, m: Option<&std::fs::Metadata>) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        match m {
            Some(m) => {
                h.set_mode(m.mode() & 0o7777);
                h.set_uid(m.uid() as u64);
                h.set_gid(m.gid() as u64);
                h.set_mtime(self.mtime(m));
            }
            None => {
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
            }
        }
        h.set_size(0);
        h
    }

    fn whiteout_entry(&mut self, path: &[u8]) -> Result<()> {
        let mut h = self.header(None);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, bytes_path(path), io::empty())
            .map_err(Error::io("write whiteout entry"))?;
        self.entries += 1;
        Ok(())
    }

    fn entry(&mut self, abs: &Path, path: &[u8], m: &std::fs::Metadata) -> Result<()> {
        let xattrs = fsutil::layer_xattrs(abs)?;
        if !xattrs.is_empty() {
            let keys: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.tar
                .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(Error::io("write xattrs"))?;
        }
        let mut h = self.header(Some(m));
        let ft = m.file_type();
        self.entries += 1;
        if !ft.is_dir() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                h.set_entry_type(tar::EntryType::Link);
                return self
                    .tar
                    .append_link(&mut h, bytes_path(path), bytes_path(&first))
                    .map_err(Error::io("write hardlink entry"));
            }
            self.links.insert(key, path.to_vec());
        }
        let werr = Error::io("write tar entry");
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut p = path.to_vec();
            p.push(b'/');
            self.tar
                .append_data(&mut h, bytes_path(&p), io::empty())
                .map_err(werr)
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = fs::File::open(abs).map_err(Error::io("open file for layer"))?;
            self.tar
                .append_data(&mut h, bytes_path(path), f)
                .map_err(werr)
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let t = fs::read_link(abs).map_err(Error::io("read symlink"))?;
            self.tar
                .append_link(&mut h, bytes_path(path), &t)
                .map_err(werr)
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                // Sockets cannot be archived; tar tools skip them too.
                self.entries -= 1;
                return Ok(());
            };
            h.set_entry_type(kind);
            if kind != tar::EntryType::Fifo {
                let dev = m.rdev();
                h.set_device_major(rustix::fs::major(dev))
                    .map_err(Error::io("write device entry"))?;
                h.set_device_minor(rustix::fs::minor(dev))
                    .map_err(Error::io("write device entry"))?;
            }
            self.tar
                .append_data(&mut h, bytes_path(path), io::empty())
                .map_err(werr)
        }
    }
}

fn join_rel(rel: &[OsString]) -> Vec<u8> {
    let mut v = Vec::new();
    for c in rel {
        v.extend_from_slice(c.as_bytes());
        v.push(b'/');
    }
    v
}

fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Whether `rel` exists in the merged view of `lowers` (diff dirs, topmost
/// first), honouring their whiteouts and opaque dirs.
pub fn exists_below(lowers: &[PathBuf], rel: &[&OsStr]) -> bool {
    rel.is_empty() || find_below(lowers, rel).is_some()
}

/// Where `rel` comes from in the merged view of `lowers` (diff dirs, topmost
/// first): the path in the topmost diff that has it, and its metadata. No
/// symlink is followed: a symlink on the way hides what is below it, and a
/// symlink as the last component is returned as is.
pub fn find_below(lowers: &[PathBuf], rel: &[&OsStr]) -> Option<(PathBuf, std::fs::Metadata)> {
    if rel.is_empty() {
        return None;
    }
    'layers: for layer in lowers {
        let mut dir = layer.clone();
        for (i, comp) in rel.iter().enumerate() {
            let child = dir.join(comp);
            let mut wh = OsString::from(WHITEOUT_PREFIX);
            wh.push(comp);
            match std::fs::symlink_metadata(&child) {
                Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return None,
                Ok(m) if i + 1 == rel.len() => return Some((child, m)),
                Ok(m) if m.is_dir() => dir = child,
                Ok(_) => return None,
                Err(_) => {
                    let marker = std::fs::symlink_metadata(dir.join(&wh));
                    if marker.is_ok_and(|m| fsutil::is_marker_file(&m))
                        || (i > 0 && fsutil::is_opaque(&dir))
                    {
                        return None;
                    }
                    continue 'layers;
                }
            }
        }
    }
    None
}
