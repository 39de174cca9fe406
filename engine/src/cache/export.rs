//! Building a [`CacheConfig`] from a session's trace and writing it out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_runtime::registry::ImageRef;
use kiln_store::exporter::{ImageExportOptions, ImageFormat, media_types};
use kiln_store::layer::{Compression, PackOptions, SourceBlob, layer_blob_for};
use kiln_store::ocilayout::{BlobFrom, put_blob, update_index};
use kiln_store::{Digest, SnapshotId};
use serde_json::json;

use super::format::{self, CacheConfig, CacheLayer, CacheRecord};
use super::{CacheSpec, SessionState, TraceEntry, fetch_layer};
use crate::ops::{Ref, Worker, blocking};

/// How layers of an exported cache are chosen.
#[derive(Clone, Debug)]
pub struct CacheExportOptions {
    /// `mode=max`: every record, not only the final result's chain.
    pub max: bool,
    /// Compression of blobs packed for the export.
    pub pack: PackOptions,
    /// Repack even layers that came from a registry blob.
    pub force_compression: bool,
}

impl CacheExportOptions {
    /// From `--export-cache` attributes.
    pub fn from_spec(spec: &CacheSpec) -> Result<CacheExportOptions> {
        let mut o = CacheExportOptions {
            max: false,
            pack: PackOptions::default(),
            force_compression: false,
        };
        for (k, v) in &spec.attrs {
            match k.as_str() {
                "mode" => {
                    o.max = match v.as_str() {
                        "min" => false,
                        "max" => true,
                        _ => bail!("cache option mode={v:?}: expected min or max"),
                    }
                }
                "compression" => {
                    o.pack.compression = Compression::from_option(v).with_context(|| {
                        format!(
                            "cache option compression={v:?}: expected gzip, zstd or uncompressed"
                        )
                    })?
                }
                "compression-level" => {
                    o.pack.level = Some(v.parse().with_context(|| {
                        format!("cache option compression-level={v:?}: expected an integer")
                    })?)
                }
                "force-compression" => o.force_compression = v == "true" || v == "1",
                // kiln always writes an OCI image manifest with OCI media types.
                "ref" | "dest" | "tag" | "ignore-error" | "image-manifest" | "oci-mediatypes" => {}
                other => bail!("cache option {other:?} is not known for type={}", spec.kind),
            }
        }
        Ok(o)
    }
}

/// The layer descriptors of each snapshot, computed once per export.
struct Layers<'a> {
    worker: &'a Worker,
    opts: &'a CacheExportOptions,
    by_snapshot: HashMap<SnapshotId, CacheLayer>,
}

impl Layers<'_> {
    fn of_blob(s: &SourceBlob) -> CacheLayer {
        let b = &s.blob;
        CacheLayer {
            digest: b.digest.to_string(),
            size: b.size,
            diff_id: b.diff_id.to_string(),
            media_type: media_types::layer(true, b.compression).to_owned(),
            parent: None,
            empty: b.entries == 0,
            packed: s.packed,
            epoch: s.epoch,
        }
    }

    /// The chain of a real snapshot, root first.
    fn chain(&mut self, top: &SnapshotId) -> Result<Vec<CacheLayer>> {
        let mut out = Vec::new();
        for id in self.worker.snapshots.chain(top)? {
            if let Some(l) = self.by_snapshot.get(&id) {
                out.push(l.clone());
                continue;
            }
            let force = self.opts.force_compression;
            let b = layer_blob_for(
                &self.worker.snapshots,
                &self.worker.content,
                &id,
                &self.opts.pack,
                |_| !force,
            )
            .with_context(|| format!("packing the layer of snapshot {id}"))?;
            let l = Self::of_blob(&b);
            self.by_snapshot.insert(id, l.clone());
            out.push(l);
        }
        Ok(out)
    }

    /// The chain of any result (`None`: the empty filesystem).
    fn of_ref(&mut self, state: &SessionState, r: &Ref) -> Result<Option<Vec<CacheLayer>>> {
        let Some(id) = &r.0 else {
            return Ok(None);
        };
        match state.lazy_get(id) {
            Some(lazy) => match lazy.materialized() {
                Some(real) => self.chain(&real).map(Some),
                None => Ok(Some(lazy.layers())),
            },
            None => self.chain(id).map(Some),
        }
    }
}

fn same_layer(a: &CacheLayer, b: &CacheLayer) -> bool {
    a.diff_id == b.diff_id
}

/// Builds the cache document for `head` from the session's trace.
fn build_config(
    worker: &Worker,
    state: &SessionState,
    head: Option<&SnapshotId>,
    opts: &CacheExportOptions,
) -> Result<CacheConfig> {
    let mut layers = Layers {
        worker,
        opts,
        by_snapshot: HashMap::new(),
    };
    let head_chain = match head {
        Some(h) => layers
            .of_ref(state, &Ref(Some(h.clone())))?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut seen = HashSet::new();
    let mut entries: Vec<(TraceEntry, Vec<Option<Vec<CacheLayer>>>)> = Vec::new();
    for e in state.trace() {
        // The client's files are read again by every build; exporting
        // them would only publish the build context.
        if e.kind == "source.local" || !seen.insert(e.key.clone()) {
            continue;
        }
        let mut outs = Vec::new();
        for r in &e.outputs {
            outs.push(layers.of_ref(state, r)?);
        }
        let in_head = outs.iter().flatten().all(|c| {
            c.len() <= head_chain.len() && c.iter().zip(&head_chain).all(|(a, b)| same_layer(a, b))
        });
        if opts.max || in_head {
            entries.push((e, outs));
        }
    }
    entries.sort_by(|a, b| a.0.key.cmp(&b.0.key));

    let mut config = CacheConfig {
        version: 1,
        ..CacheConfig::default()
    };
    // A layer is identified by the diff ids of its chain.
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for (e, outs) in entries {
        let mut outputs = Vec::new();
        for chain in outs {
            let Some(chain) = chain else {
                outputs.push(None);
                continue;
            };
            let mut path: Vec<String> = Vec::new();
            let mut parent = None;
            for l in chain {
                path.push(l.diff_id.clone());
                let i = match index.get(&path) {
                    Some(i) => *i,
                    None => {
                        let mut l = l.clone();
                        l.parent = parent;
                        config.layers.push(l);
                        index.insert(path.clone(), config.layers.len() - 1);
                        config.layers.len() - 1
                    }
                };
                parent = Some(i);
            }
            outputs.push(parent);
        }
        config.records.push(CacheRecord {
            key: e.key.as_str().to_owned(),
            kind: e.kind.clone(),
            description: e.description.clone(),
            outputs,
        });
    }
    config.check()?;
    Ok(config)
}

/// The cache document to embed in an image exported with `image_attrs`
/// (`--export-cache type=inline`; always `mode=min`). Its layers are
/// packed exactly as the image's are, so they are the image's own blobs.
pub async fn inline_cache(
    worker: &Arc<Worker>,
    state: Arc<SessionState>,
    head: Option<SnapshotId>,
    image_attrs: &BTreeMap<String, String>,
) -> Result<String> {
    let img = ImageExportOptions::from_attrs(ImageFormat::Oci, image_attrs)?;
    let opts = CacheExportOptions {
        max: false,
        pack: PackOptions {
            compression: img.compression,
            level: img.compression_level,
            source_date_epoch: img.source_date_epoch,
        },
        force_compression: img.force_compression,
    };
    let worker = worker.clone();
    blocking(move || {
        let c = build_config(&worker, &state, head.as_ref(), &opts)?;
        Ok(serde_json::to_string(&c)?)
    })
    .await
}

/// Exports the cache of `head` as `spec` says (`local` or `registry`).
/// Returns metadata: the cache manifest digest and counts.
pub async fn export_cache(
    worker: &Arc<Worker>,
    state: Arc<SessionState>,
    head: Option<SnapshotId>,
    spec: &CacheSpec,
) -> Result<BTreeMap<String, String>> {
    let opts = CacheExportOptions::from_spec(spec)?;
    let worker = worker.clone();
    let spec = spec.clone();
    blocking(move || {
        let config = build_config(&worker, &state, head.as_ref(), &opts)?;
        // Every blob the manifest names must be in the content store.
        for l in config.blobs() {
            let d: Digest = l.digest.parse()?;
            if !worker.content.exists(&d) {
                let import = state
                    .imports()
                    .iter()
                    .find(|s| s.config.layers.iter().any(|x| x.digest == l.digest))
                    .with_context(|| format!("cache blob {d} is in no store"))?;
                fetch_layer(&worker, &import.source, l)?;
            }
        }
        let config_bytes = serde_json::to_vec(&config)?;
        let (config_digest, config_size) = worker.content.write_bytes(&config_bytes, None)?;
        let blobs = config.blobs();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_types::manifest(true),
            "artifactType": format::ARTIFACT_TYPE,
            "config": {
                "mediaType": format::CONFIG_MEDIA_TYPE,
                "digest": config_digest.as_str(),
                "size": config_size,
            },
            "layers": blobs.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let (manifest_digest, manifest_size) = worker.content.write_bytes(&manifest, None)?;
        match spec.kind.as_str() {
            "local" => {
                let dest = spec
                    .attrs
                    .get("dest")
                    .context("--export-cache type=local needs dest=DIR")?;
                let tag = spec
                    .attrs
                    .get("tag")
                    .map(String::as_str)
                    .unwrap_or("latest");
                let mut names: Vec<Digest> = vec![config_digest.clone(), manifest_digest.clone()];
                for l in &blobs {
                    names.push(l.digest.parse()?);
                }
                write_layout(
                    &worker,
                    Path::new(dest),
                    &names,
                    &manifest_digest,
                    manifest_size,
                    tag,
                )?;
            }
            "registry" => {
                let r = spec
                    .attrs
                    .get("ref")
                    .context("--export-cache type=registry needs ref=REFERENCE")?;
                let reference: ImageRef = r
                    .parse()
                    .with_context(|| format!("bad cache reference {r:?}"))?;
                tokio::runtime::Handle::current()
                    .block_on(worker.registry.push(&reference, &manifest, &worker.content))
                    .with_context(|| format!("pushing the cache to {r}"))?;
            }
            other => bail!("cache type {other:?} cannot be exported this way"),
        }
        let mut meta = BTreeMap::new();
        meta.insert("cache.manifest.digest".into(), manifest_digest.to_string());
        meta.insert("cache.records".into(), config.records.len().to_string());
        meta.insert("cache.blobs".into(), blobs.len().to_string());
        Ok(meta)
    })
    .await
}

/// Writes blobs and an index entry tagged `tag` into an OCI layout,
/// keeping what else is there.
fn write_layout(
    worker: &Worker,
    dir: &Path,
    blobs: &[Digest],
    manifest: &Digest,
    manifest_size: u64,
    tag: &str,
) -> Result<()> {
    for d in blobs {
        put_blob(dir, d, BlobFrom::Copy(&worker.content.path(d)))?;
    }
    tag_manifest(
        dir,
        json!({
            "mediaType": media_types::manifest(true),
            "artifactType": format::ARTIFACT_TYPE,
            "digest": manifest.as_str(),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }),
    )
}

pub(super) fn ref_name(e: &serde_json::Value) -> Option<&str> {
    e.pointer("/annotations/org.opencontainers.image.ref.name")
        .and_then(|x| x.as_str())
}

/// Adds index entry `entry` to the OCI layout at `dir`, replacing an entry
/// with the same ref name and keeping the others.
fn tag_manifest(dir: &Path, entry: serde_json::Value) -> Result<()> {
    let tag = ref_name(&entry).map(str::to_owned);
    Ok(update_index(dir, vec![entry], None, |e| {
        tag.is_none() || ref_name(e) != tag.as_deref()
    })?)
}

/// Merges the cache layout at `from` (a `type=local` export written
/// elsewhere, as a daemon's client receives it) into the layout at `into`:
/// blobs `into` lacks are moved over, then `from`'s index entries replace
/// those with the same tag. Blobs go first, so an interrupted merge leaves
/// `into`'s index pointing only at blobs it has.
pub fn merge_cache_layout(from: &Path, into: &Path) -> Result<()> {
    let src = from.join("blobs").join("sha256");
    if src.is_dir() {
        for e in fs_err::read_dir(&src)? {
            let e = e?;
            let name = e.file_name();
            let d: Digest = name
                .to_str()
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| format!("sha256:{h}").parse().ok())
                .with_context(|| {
                    format!(
                        "{}: not a sha256 blob name in a cache layout",
                        e.path().display()
                    )
                })?;
            if !e.file_type()?.is_file() {
                bail!(
                    "{}: a cache blob that is not a regular file",
                    e.path().display()
                );
            }
            put_blob(into, &d, BlobFrom::Move(&e.path()))?;
        }
    }
    let idx = fs_err::read(from.join("index.json"))?;
    let idx: serde_json::Value = serde_json::from_slice(&idx)
        .with_context(|| format!("{}: not an OCI index", from.join("index.json").display()))?;
    let bdir = into.join("blobs").join("sha256");
    for m in idx
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default()
    {
        let d: Digest = m
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .parse()
            .context("an index entry of the received cache")?;
        if !bdir.join(d.hex()).is_file() {
            bail!("the received cache names blob {d}, which neither side has");
        }
        tag_manifest(into, m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path, blobs: &[&[u8]], tag: &str) -> Digest {
        let bdir = dir.join("blobs/sha256");
        fs_err::create_dir_all(&bdir).unwrap();
        let mut last = None;
        for b in blobs {
            let d = Digest::of_bytes(b);
            fs_err::write(bdir.join(d.hex()), b).unwrap();
            last = Some(d);
        }
        let m = last.unwrap();
        tag_manifest(
            dir,
            json!({"mediaType": "x", "digest": m.as_str(), "size": 1,
                   "annotations": {"org.opencontainers.image.ref.name": tag}}),
        )
        .unwrap();
        m
    }

    fn tags(dir: &Path) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&fs_err::read(dir.join("index.json")).unwrap()).unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{}={}", ref_name(m).unwrap(), m["digest"].as_str().unwrap()))
            .collect()
    }

    #[test]
    fn merge_moves_new_blobs_and_replaces_only_the_same_tag() {
        let t = tempfile::tempdir().unwrap();
        let (into, from) = (t.path().join("into"), t.path().join("from"));
        layout(&into, &[b"shared", b"old"], "latest");
        let other = layout(&into, &[b"other"], "other");
        let new = layout(&from, &[b"shared", b"new"], "latest");
        merge_cache_layout(&from, &into).unwrap();
        assert_eq!(
            tags(&into),
            [format!("other={other}"), format!("latest={new}")]
        );
        for b in [&b"shared"[..], b"old", b"new", b"other"] {
            assert!(
                into.join("blobs/sha256")
                    .join(Digest::of_bytes(b).hex())
                    .is_file()
            );
        }
    }

    #[test]
    fn merge_refuses_odd_blob_names_and_dangling_entries() {
        let t = tempfile::tempdir().unwrap();
        let (into, from) = (t.path().join("into"), t.path().join("from"));
        layout(&from, &[b"a"], "latest");
        fs_err::write(from.join("blobs/sha256/../sha256/..x"), b"").unwrap();
        let e = merge_cache_layout(&from, &into).unwrap_err();
        assert!(format!("{e:#}").contains("not a sha256 blob name"), "{e:#}");
        fs_err::remove_file(from.join("blobs/sha256/..x")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            from.join("blobs/sha256").join("0".repeat(64)),
        )
        .unwrap();
        let e = merge_cache_layout(&from, &into).unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        assert!(!into.join("blobs/sha256").join("0".repeat(64)).exists());

        let from2 = t.path().join("from2");
        let d = layout(&from2, &[b"b"], "latest");
        fs_err::remove_file(from2.join("blobs/sha256").join(d.hex())).unwrap();
        let e = merge_cache_layout(&from2, &into).unwrap_err();
        assert!(format!("{e:#}").contains("neither side has"), "{e:#}");
    }
}
