//! Content-addressed blob store: `<root>/content/blobs/sha256/<hex>`.
//!
//! Layer 1 (leaf): uses only `digest` and `error`.
//!
//! Lifecycle of a write: [`ContentStore::writer`] opens a temp file in
//! `<root>/content/ingest/`; bytes written to the [`Ingest`] are hashed as they
//! go; [`Ingest::commit`] checks the digest against the expected one (if any),
//! fsyncs the file and renames it to its final name, then fsyncs the blob dir.
//! A dropped or failed ingest removes its temp file, so a digest mismatch
//! keeps nothing. A crash leaves at most a stray file in `ingest/`, which
//! [`ContentStore::cleanup_ingest`] removes; a blob is never visible under its
//! digest before it is complete.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};

/// The blob store. Cheap to clone; several handles on one root may be used at
/// once (from several threads too): writes go through unique temp files and a
/// rename, and writing a blob that already exists is a no-op.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Open (creating if needed) the content store under `<state_root>/content`.
    pub fn new(state_root: impl AsRef<Path>) -> Result<Self> {
        let root = state_root.as_ref().join("content");
        fs::create_dir_all(root.join("blobs").join("sha256"))
            .map_err(Error::io("create content store"))?;
        fs::create_dir_all(root.join("ingest")).map_err(Error::io("create content store"))?;
        Ok(ContentStore { root })
    }

    /// The directory holding `blobs/` and `ingest/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob for `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Start writing a blob. Write the bytes, then call [`Ingest::commit`].
    pub fn writer(&self) -> Result<Ingest> {
        let dir = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&dir)
            .map_err(Error::io_at("create ingest file in", &dir))?;
        Ok(Ingest {
            store: self.clone(),
            tmp: HashingWriter::new(tmp),
        })
    }

    /// Copy `reader` into the store. With `expected`, a mismatch is an error
    /// and nothing is kept. Returns the digest and size.
    pub fn write_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.writer()?;
        io::copy(&mut reader, &mut w).map_err(Error::io("copy into the content store"))?;
        w.commit(expected)
    }

    /// Store `bytes`. See [`ContentStore::write_reader`].
    pub fn write_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.write_reader(bytes, expected)
    }

    /// Open a blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<fs::File> {
        let p = self.path(digest);
        match fs::File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::Io {
                op: "open blob",
                source: e,
            }),
        }
    }

    /// Read a whole (small) blob, e.g. a manifest or config.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(digest)?
            .read_to_end(&mut v)
            .map_err(Error::io("read blob"))?;
        Ok(v)
    }

    /// Whether the blob is present.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::Io {
                op: "stat blob",
                source: e,
            }),
        }
    }

    /// Delete a blob. Returns false if it was not there. Readers that already
    /// opened it keep reading the old inode.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io {
                op: "delete blob",
                source: e,
            }),
        }
    }

    /// Every blob in the store, sorted (for garbage collection).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io("list blobs"))? {
            let e = e.map_err(Error::io("list blobs"))?;
            if let Some(name) = e.file_name().to_str()
                && let Ok(d) = crate::digest::from_sha256_hex(name)
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Pin blobs under `name` (replacing what that name pinned before):
    /// garbage collection never removes a pinned blob. Used for data the
    /// store keeps for its own sake, e.g. pulled frontends.
    pub fn pin(&self, name: &str, digests: &[Digest]) -> Result<()> {
        let dir = self.root.join("pins");
        fs::create_dir_all(&dir).map_err(Error::io("create pins dir"))?;
        let file = dir.join(crate::digest::Digest::of_bytes(name.as_bytes()).hex());
        let body: String = digests.iter().map(|d| format!("{d}\n")).collect();
        let tmp = file.with_extension(format!("tmp{}", crate::fsutil::random_hex()?));
        fs::write(&tmp, body).map_err(Error::io("write pin"))?;
        fs::rename(&tmp, &file).map_err(Error::io("write pin"))
    }

    /// Every pinned blob.
    pub fn pins(&self) -> std::collections::BTreeSet<Digest> {
        let mut out = std::collections::BTreeSet::new();
        let Ok(rd) = fs::read_dir(self.root.join("pins")) else {
            return out;
        };
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<Digest>().ok()));
            }
        }
        out
    }

    /// Remove temp files left in `ingest/` by a crash. Call it only when no
    /// write is in flight (at start-up, or from GC holding the store lock).
    pub fn cleanup_ingest(&self) -> Result<usize> {
        let dir = self.root.join("ingest");
        let mut n = 0;
        for e in fs::read_dir(&dir).map_err(Error::io("clean ingest dir"))? {
            let e = e.map_err(Error::io("clean ingest dir"))?;
            fs::remove_file(e.path()).map_err(Error::io("clean ingest dir"))?;
            n += 1;
        }
        Ok(n)
    }
}

/// An in-progress blob write. Dropping it without [`Ingest::commit`] discards
/// the bytes.
pub struct Ingest {
    store: ContentStore,
    tmp: HashingWriter<tempfile::NamedTempFile>,
}

impl Ingest {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.tmp.len()
    }

    /// Finish the blob: verify against `expected` (a mismatch deletes the temp
    /// file and returns [`Error::DigestMismatch`]), fsync, and rename into place.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (tmp, digest, size) = self.tmp.finish();
        if let Some(exp) = expected
            && *exp != digest
        {
            drop(tmp);
            return Err(Error::DigestMismatch {
                expected: exp.clone(),
                actual: digest,
            });
        }
        let dest = self.store.path(&digest);
        if dest.is_file() {
            // Same content already stored; the temp file goes away on drop.
            return Ok((digest, size));
        }
        tmp.as_file()
            .sync_all()
            .map_err(Error::io_at("fsync", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| Error::IoAt {
            op: "rename blob into",
            path: dest.clone(),
            source: e.error,
        })?;
        sync_dir(dest.parent().unwrap_or(&self.store.root))?;
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// fsync a directory so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir).map_err(Error::io("open dir to fsync"))?;
    f.sync_all().map_err(Error::io_at("fsync dir", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let t = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(t.path()).unwrap();
        let (d, n) = cs.write_bytes(b"hello", None).unwrap();
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(cs.exists(&d));
        assert_eq!(cs.size(&d).unwrap(), 5);
        assert_eq!(cs.read(&d).unwrap(), b"hello");
        assert_eq!(
            cs.path(&d),
            t.path().join("content/blobs/sha256").join(d.hex())
        );
        // Writing the same content again is fine.
        assert_eq!(cs.write_bytes(b"hello", Some(&d)).unwrap().0, d);
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        assert!(cs.delete(&d).unwrap());
        assert!(!cs.delete(&d).unwrap());
        assert!(matches!(cs.open(&d), Err(Error::BlobNotFound(_))));
        assert!(cs.list().unwrap().is_empty());
    }

    #[test]
    fn digest_mismatch_keeps_nothing() {
        let t = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(t.path()).unwrap();
        let wrong = Digest::of_bytes(b"other");
        let err = cs.write_bytes(b"hello", Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(cs.list().unwrap().is_empty());
        assert!(!cs.exists(&Digest::of_bytes(b"hello")));
        assert_eq!(fs::read_dir(cs.root().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_ingest_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(t.path()).unwrap();
        let mut w = cs.writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(cs.root().join("ingest")).unwrap().count(), 0);
        assert!(cs.list().unwrap().is_empty());
    }
}
