//! Cache records and engine metadata in redb, under `<root>/v1/meta.redb`.
//!
//! Tables (names carry the format version):
//! - `cache.v1`: cache key → JSON [`Record`] (result snapshot ids, created,
//!   last used, usage count);
//! - `explain.v1`: op identity → JSON [`KeyParts`] of its last key, to say
//!   which part changed on a miss;
//! - `localsums.v1`: local source name → JSON map path → entry checksum of
//!   its last transfer;
//! - `localindex.v1`: local source name → JSON metadata index (size, mtime,
//!   inode, mode, hash) to skip re-hashing unchanged files;
//! - `kv.v1`: small engine facts (image reference → manifest digest,
//!   layer chain → snapshot id).
//!
//! The database is opened in redb's multi-writer mode so several `kiln`
//! processes can share one root, and one handle is shared by every engine of
//! this process on the same file (redb refuses a second handle in-process).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::cachekey::CacheKey;

const CACHE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("cache.v1");
const EXPLAIN: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("explain.v1");
const LOCALSUMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("localsums.v1");
const LOCALINDEX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("localindex.v1");
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv.v1");

/// A stored result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// One snapshot id per output; `None` is the empty filesystem.
    pub outputs: Vec<Option<String>>,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Last use, unix seconds.
    pub last_used: u64,
    /// How many solves used it.
    pub usage_count: u64,
    /// Description of the vertex that made it.
    #[serde(default)]
    pub description: String,
    /// Record type: `regular`, `source.local`, `source.git.checkout`, …
    #[serde(default = "regular")]
    pub kind: String,
}

fn regular() -> String {
    "regular".to_owned()
}

/// The parts a key was built from, kept to explain a later miss.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyParts {
    /// The resulting key.
    pub key: String,
    /// Named parts in a fixed order: (name, value).
    pub parts: Vec<(String, String)>,
}

/// One entry of a local source's metadata index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// Size in bytes.
    pub size: u64,
    /// mtime in nanoseconds.
    pub mtime_ns: i128,
    /// ctime in nanoseconds.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Mode bits.
    pub mode: u32,
    /// Content hash (files) or link target (symlinks).
    pub content: String,
}

/// Handle on the metadata database.
pub struct Records {
    db: Arc<Database>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Database>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Weak<Database>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Records {
    /// Opens (creating) the database at `path`, waiting for another process
    /// that holds it exclusively.
    pub fn open(path: &Path) -> Result<Records> {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        let canon = path
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .map(|p| p.join(path.file_name().unwrap_or_default()))
            .unwrap_or_else(|| path.to_owned());
        if let Some(db) = reg.get(&canon).and_then(Weak::upgrade) {
            return Ok(Records { db });
        }
        let mut delay = Duration::from_millis(20);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let db = loop {
            let mut b = Database::builder();
            b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
            match b.create(&canon) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("opening the metadata database {canon:?}"));
                }
            }
        };
        let db = Arc::new(db);
        // Creating the tables is a durable commit; a root that has them
        // (every open after the first) is only read.
        let tables_exist = (|| -> Result<bool> {
            let tx = db.begin_read()?;
            for t in [CACHE, EXPLAIN, LOCALSUMS, LOCALINDEX, KV] {
                match tx.open_table(t) {
                    Ok(_) => {}
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(true)
        })()?;
        if !tables_exist {
            let tx = db.begin_write()?;
            tx.open_table(CACHE)?;
            tx.open_table(EXPLAIN)?;
            tx.open_table(LOCALSUMS)?;
            tx.open_table(LOCALINDEX)?;
            tx.open_table(KV)?;
            tx.commit()?;
        }
        reg.insert(canon, Arc::downgrade(&db));
        Ok(Records { db })
    }

    fn get(&self, table: TableDefinition<'_, &str, &[u8]>, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn put(&self, table: TableDefinition<'_, &str, &[u8]>, key: &str, value: &[u8]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(table)?;
            t.insert(key, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Looks up a cache record.
    pub fn load(&self, key: &CacheKey) -> Result<Option<Record>> {
        match self.get(CACHE, key.as_str())? {
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    /// Marks records used (last-used time, usage count), in one
    /// transaction.
    pub fn touch(&self, keys: &[CacheKey]) -> Result<()> {
        self.touch_and_explain(keys, &BTreeMap::new())
    }

    /// Marks records used and stores explanation parts by op identity,
    /// in one transaction (none when there is nothing to write).
    pub fn touch_and_explain(
        &self,
        keys: &[CacheKey],
        explain: &BTreeMap<String, KeyParts>,
    ) -> Result<()> {
        if keys.is_empty() && explain.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        if !explain.is_empty() {
            let mut t = tx.open_table(EXPLAIN)?;
            for (id, parts) in explain {
                t.insert(id.as_str(), serde_json::to_vec(parts)?.as_slice())?;
            }
        }
        {
            let mut t = tx.open_table(CACHE)?;
            let n = now();
            for key in keys {
                let cur = t.get(key.as_str())?.map(|v| v.value().to_vec());
                if let Some(b) = cur
                    && let Ok(mut r) = serde_json::from_slice::<Record>(&b)
                {
                    r.last_used = n;
                    r.usage_count += 1;
                    t.insert(key.as_str(), serde_json::to_vec(&r)?.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a record for committed snapshots.
    pub fn save(
        &self,
        key: &CacheKey,
        outputs: Vec<Option<String>>,
        description: &str,
        kind: &str,
    ) -> Result<()> {
        let t = now();
        let r = Record {
            outputs,
            created: t,
            last_used: t,
            usage_count: 1,
            description: description.to_owned(),
            kind: kind.to_owned(),
        };
        self.put(CACHE, key.as_str(), &serde_json::to_vec(&r)?)
    }

    /// All records (for `du`/`prune`).
    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CACHE)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push((k.value().to_owned(), r));
            }
        }
        Ok(out)
    }

    /// Removes a record.
    pub fn remove(&self, key: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CACHE)?;
            t.remove(key)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The key parts last seen for an op identity.
    pub fn explain_get(&self, id: &str) -> Result<Option<KeyParts>> {
        Ok(self
            .get(EXPLAIN, id)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Remembers the key parts of an op identity.
    pub fn explain_put(&self, id: &str, parts: &KeyParts) -> Result<()> {
        self.put(EXPLAIN, id, &serde_json::to_vec(parts)?)
    }

    /// Per-file checksums of the last transfer of a local source.
    pub fn local_sums(&self, name: &str) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self
            .get(LOCALSUMS, name)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Stores the per-file checksums of a local source's transfer.
    pub fn set_local_sums(&self, name: &str, sums: &BTreeMap<String, String>) -> Result<()> {
        self.put(LOCALSUMS, name, &serde_json::to_vec(sums)?)
    }

    /// The metadata index of a local source.
    pub fn local_index(&self, name: &str) -> Result<BTreeMap<String, IndexEntry>> {
        Ok(self
            .get(LOCALINDEX, name)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// Stores the metadata index of a local source.
    pub fn set_local_index(&self, name: &str, idx: &BTreeMap<String, IndexEntry>) -> Result<()> {
        self.put(LOCALINDEX, name, &serde_json::to_vec(idx)?)
    }

    /// A small engine fact.
    pub fn kv_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.get(KV, key)?.and_then(|b| String::from_utf8(b).ok()))
    }

    /// Stores a small engine fact.
    pub fn kv_put(&self, key: &str, value: &str) -> Result<()> {
        self.put(KV, key, value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cachekey::KeyBuilder;

    #[test]
    fn records_roundtrip_and_share_a_handle() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("meta.redb");
        let a = Records::open(&p).unwrap();
        let b = Records::open(&p).unwrap();
        let k = KeyBuilder::new("t").str("x").finish();
        assert!(a.load(&k).unwrap().is_none());
        a.save(&k, vec![Some("s1".into()), None], "desc", "regular")
            .unwrap();
        b.touch(std::slice::from_ref(&k)).unwrap();
        let r = b.load(&k).unwrap().unwrap();
        assert_eq!(r.outputs, vec![Some("s1".into()), None]);
        assert_eq!(r.usage_count, 2);
        assert_eq!(a.all().unwrap().len(), 1);
    }
}
