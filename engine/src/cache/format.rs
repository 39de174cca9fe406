//! The cache config: kiln's description of exported cache records.
//!
//! One JSON document lists layers (blobs with their diff ids, each naming
//! its parent layer by index) and records (a cache key, its record type and
//! description, and per output the index of the top layer of its chain, or
//! `null` for the empty filesystem). It is stored as the config blob of an
//! OCI image manifest whose layers are the non-empty layer blobs (`local`
//! and `registry` caches), or embedded under [`INLINE_KEY`] in an image
//! config (`inline`).
//!
//! The document is deterministic: records are sorted by key and layers
//! appear in the order the records first reach them, so the same cache
//! gives the same bytes (and an inline cache does not change the image
//! digest between builds).

use std::collections::HashMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::cachekey::CacheKey;

/// Media type of the config blob of a `local`/`registry` cache manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// `artifactType` of a cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// The image config field an inline cache lives in.
pub const INLINE_KEY: &str = kiln_store::exporter::INLINE_CACHE_FIELD;
/// Length of an empty layer tar (two zero blocks).
pub const EMPTY_TAR_LEN: usize = 1024;

/// The whole document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Format version (1).
    pub version: u32,
    /// Layers, parents before children.
    pub layers: Vec<CacheLayer>,
    /// Records, sorted by key.
    pub records: Vec<CacheRecord>,
}

/// One layer of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Digest of the uncompressed tar.
    #[serde(rename = "diffID")]
    pub diff_id: String,
    /// Blob media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Index of the parent layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
    /// An empty diff: no blob is stored, the importer makes an empty tar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
    /// kiln packed this blob from a build step's result (rather than
    /// taking an image's layer as it was pulled): an image exported with
    /// another `source-date-epoch` than `epoch` packs such a layer again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
    /// The `source-date-epoch` a packed blob was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// One cache record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The cache key.
    pub key: String,
    /// Record type (`regular`, `source.git.checkout`, …).
    pub kind: String,
    /// The vertex that made it.
    pub description: String,
    /// Per output: the top layer of its chain, or `None` for an empty
    /// filesystem.
    pub outputs: Vec<Option<usize>>,
}

impl CacheConfig {
    /// Parses and checks a document: digests and keys well formed, parents
    /// before children, output indices in range.
    pub fn parse(bytes: &[u8]) -> Result<CacheConfig> {
        let c: CacheConfig = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("the cache config is not valid JSON: {e}"))?;
        c.check()?;
        Ok(c)
    }

    /// Checks a document (see [`CacheConfig::parse`]).
    pub fn check(&self) -> Result<()> {
        if self.version != 1 {
            bail!(
                "cache config version {} is not supported (kiln reads 1)",
                self.version
            );
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.digest.parse::<kiln_store::Digest>().is_err() {
                bail!("cache layer {i}: bad digest {:?}", l.digest);
            }
            if l.diff_id.parse::<kiln_store::Digest>().is_err() {
                bail!("cache layer {i}: bad diffID {:?}", l.diff_id);
            }
            if let Some(p) = l.parent
                && p >= i
            {
                bail!("cache layer {i}: parent {p} does not come before it");
            }
        }
        for r in &self.records {
            if CacheKey::parse(&r.key).is_none() {
                bail!("cache record {:?}: bad key", r.key);
            }
            for o in r.outputs.iter().flatten() {
                if *o >= self.layers.len() {
                    bail!(
                        "cache record {}: output layer {o} is out of range ({} layers)",
                        r.key,
                        self.layers.len()
                    );
                }
            }
        }
        Ok(())
    }

    /// The chain ending at layer `top`, root first.
    pub fn chain(&self, top: usize) -> Vec<usize> {
        let mut out = vec![top];
        let mut cur = top;
        while let Some(p) = self.layers.get(cur).and_then(|l| l.parent) {
            out.push(p);
            cur = p;
        }
        out.reverse();
        out
    }

    /// Record index by key.
    pub fn index(&self) -> HashMap<String, usize> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.clone(), i))
            .collect()
    }

    /// Digests of the stored (non-empty) layer blobs, each once, in layer
    /// order.
    pub fn blobs(&self) -> Vec<&CacheLayer> {
        let mut seen = std::collections::HashSet::new();
        self.layers
            .iter()
            .filter(|l| !l.empty && seen.insert(l.digest.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(parent: Option<usize>) -> CacheLayer {
        CacheLayer {
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            diff_id: format!("sha256:{}", "b".repeat(64)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            parent,
            empty: false,
            packed: false,
            epoch: None,
        }
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let key = format!("sha256:{}", "c".repeat(64));
        let ok = CacheConfig {
            version: 1,
            layers: vec![layer(None), layer(Some(0))],
            records: vec![CacheRecord {
                key: key.clone(),
                kind: "regular".into(),
                description: "d".into(),
                outputs: vec![Some(1), None],
            }],
        };
        let bytes = serde_json::to_vec(&ok).unwrap();
        assert_eq!(CacheConfig::parse(&bytes).unwrap(), ok);
        assert_eq!(ok.chain(1), vec![0, 1]);

        let mut cyc = ok.clone();
        cyc.layers[0].parent = Some(1);
        let e = CacheConfig::parse(&serde_json::to_vec(&cyc).unwrap()).unwrap_err();
        assert!(e.to_string().contains("parent 1"), "{e}");

        let mut range = ok.clone();
        range.records[0].outputs = vec![Some(7)];
        let e = CacheConfig::parse(&serde_json::to_vec(&range).unwrap()).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");

        let mut badkey = ok;
        badkey.records[0].key = "nope".into();
        assert!(CacheConfig::parse(&serde_json::to_vec(&badkey).unwrap()).is_err());
        assert!(CacheConfig::parse(b"{").is_err());
    }
}
