//! Cache beyond one build: export the records a build used (`local`,
//! `registry`, `inline`) and import them into another state root, lazily.
//!
//! - A solve appends every record it hit or stored to the session's trace
//!   ([`SessionState`]). Export turns the trace into a [`CacheConfig`]
//!   plus layer blobs: `mode=max` keeps every record, `mode=min` only those
//!   whose results are part of the final result's layer chain. Local
//!   sources are never exported (they are the client's files, re-read on
//!   every build anyway).
//! - Import reads the config documents of every `--import-cache` source at
//!   the first solve of a session. A key missing locally but present in an
//!   import is a hit whose results are *lazy*: placeholder snapshot ids
//!   that are only unpacked (and their blobs only downloaded) when an op
//!   runs on them, reads their content for a key, or the result is
//!   exported. A hit whose dependents are hits too never downloads.
//!
//! Layers unpack through the same `layerchain:` facts image pulls use, and
//! record the blob they came from, so an image exported from an imported
//! result reuses the very same blobs and keeps its digest.

mod export;
pub mod format;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use kiln_runtime::registry::{Descriptor, ImageRef, Platform};
use kiln_store::ocilayout::OciLayout;
use kiln_store::{Digest, SnapshotId};

pub use export::{CacheExportOptions, export_cache, inline_cache, merge_cache_layout};
pub use format::{CacheConfig, CacheLayer, CacheRecord};

use crate::cachekey::CacheKey;
use crate::ops::{Ref, Worker, blocking};

/// One `--export-cache` / `--import-cache` entry: `type=…` and the other
/// `k=v` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheSpec {
    /// `local`, `registry` or `inline`.
    pub kind: String,
    /// The other attributes.
    pub attrs: BTreeMap<String, String>,
}

impl CacheSpec {
    /// Parses buildctl's `type=TYPE,k=v,…`.
    pub fn parse(s: &str) -> Result<CacheSpec> {
        let mut spec = CacheSpec::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("cache option {part:?} is not key=value (in {s:?})"))?;
            if k == "type" {
                spec.kind = v.to_owned();
            } else {
                spec.attrs.insert(k.to_owned(), v.to_owned());
            }
        }
        match spec.kind.as_str() {
            "local" | "registry" | "inline" => Ok(spec),
            "" => bail!("cache option {s:?} has no type= (local, registry or inline)"),
            other => {
                bail!("cache type {other:?} is not supported (kiln has local, registry and inline)")
            }
        }
    }

    /// `ignore-error=true`.
    pub fn ignore_error(&self) -> bool {
        self.attrs
            .get("ignore-error")
            .is_some_and(|v| v == "true" || v == "1")
    }
}

/// One record a solve of this session used.
#[derive(Clone, Debug)]
pub(crate) struct TraceEntry {
    pub key: CacheKey,
    pub outputs: Vec<Ref>,
    pub kind: String,
    pub description: String,
}

/// Per-session cache state: the trace for export, the loaded imports and
/// the lazy results handed out from them.
#[derive(Default)]
pub struct SessionState {
    lease: Mutex<crate::lease::Lease>,
    trace: Mutex<Vec<TraceEntry>>,
    imports: tokio::sync::OnceCell<Vec<Arc<Imported>>>,
    lazy: Mutex<HashMap<SnapshotId, Arc<LazyRef>>>,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState").finish_non_exhaustive()
    }
}

impl SessionState {
    /// Keeps the snapshots of `refs` (lazy ones have none yet) safe from
    /// `prune` until the session ends.
    pub(crate) fn hold(&self, worker: &Worker, refs: &[Ref]) {
        let ids = refs
            .iter()
            .filter_map(|r| r.0.clone())
            .filter(|id| !id.as_str().starts_with("lazy-"));
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold(&worker.leases, ids);
    }

    pub(crate) fn record(&self, e: TraceEntry) {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    pub(crate) fn trace(&self) -> Vec<TraceEntry> {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn imports(&self) -> &[Arc<Imported>] {
        self.imports.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Loads the session's `--import-cache` sources once. A source that
    /// cannot be read is reported and skipped, as a missing cache is not
    /// an error.
    pub(crate) async fn load_imports(
        &self,
        worker: &Arc<Worker>,
        specs: &[CacheSpec],
        warn: &(dyn Fn(&str) + Send + Sync),
    ) {
        self.imports
            .get_or_init(|| async {
                let mut out = Vec::new();
                for spec in specs {
                    match load_import(worker, spec).await {
                        Ok(i) => {
                            if let Some(w) = &i.warning {
                                warn(&format!("warning: importing cache type={}: {w}", spec.kind));
                            }
                            out.push(Arc::new(i))
                        }
                        Err(e) => warn(&format!(
                            "warning: importing cache type={}: {e:#}",
                            spec.kind
                        )),
                    }
                }
                out
            })
            .await;
    }

    /// A lazy result for output `top` of an import, or `Ref(None)`.
    pub(crate) fn lazy_ref(&self, import: &Arc<Imported>, top: Option<usize>) -> Result<Ref> {
        let Some(top) = top else {
            return Ok(Ref(None));
        };
        let id: SnapshotId = format!("lazy-{}", kiln_store::fsutil::random_hex()?).parse()?;
        self.lazy.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id.clone(),
            Arc::new(LazyRef {
                import: import.clone(),
                top,
                real: tokio::sync::OnceCell::new(),
            }),
        );
        Ok(Ref(Some(id)))
    }

    pub(crate) fn lazy_get(&self, id: &SnapshotId) -> Option<Arc<LazyRef>> {
        self.lazy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// The image export attribute carrying an inline cache document.
pub const INLINE_ATTR: &str = kiln_store::exporter::INLINE_CACHE_ATTR;

/// Saves local records for imported records whose results were all
/// unpacked, so the next build on this root hits them without the import.
pub(crate) fn keep_materialized(worker: &Worker, state: &SessionState) {
    for e in state.trace() {
        let mut outs = Vec::new();
        let mut any_lazy = false;
        for r in &e.outputs {
            match r.0.as_ref().map(|id| (id, state.lazy_get(id))) {
                Some((_, Some(lazy))) => {
                    any_lazy = true;
                    match lazy.materialized() {
                        Some(real) => outs.push(Some(real.as_str().to_owned())),
                        None => break,
                    }
                }
                Some((id, None)) => outs.push(Some(id.as_str().to_owned())),
                None => outs.push(None),
            }
        }
        if any_lazy && outs.len() == e.outputs.len() {
            // Bookkeeping only: the build is correct without it.
            let _ = worker.records.save(&e.key, outs, &e.description, &e.kind);
        }
    }
}

/// Where an imported cache's blobs come from.
#[derive(Clone, Debug)]
pub(crate) enum CacheSource {
    /// An OCI layout directory.
    Layout(OciLayout),
    /// A registry repository.
    Registry(ImageRef),
}

/// A loaded `--import-cache` source.
#[derive(Debug)]
pub(crate) struct Imported {
    pub source: CacheSource,
    pub config: CacheConfig,
    pub by_key: HashMap<String, usize>,
    /// Something to tell the user (records left out).
    pub warning: Option<String>,
}

/// A result handed out from an import, unpacked on first use.
#[derive(Debug)]
pub(crate) struct LazyRef {
    pub import: Arc<Imported>,
    pub top: usize,
    real: tokio::sync::OnceCell<SnapshotId>,
}

impl LazyRef {
    /// The layer descriptors of the chain, root first.
    pub(crate) fn layers(&self) -> Vec<CacheLayer> {
        let c = &self.import.config;
        c.chain(self.top)
            .into_iter()
            .map(|i| c.layers[i].clone())
            .collect()
    }

    /// The unpacked snapshot, if this result was needed already.
    pub(crate) fn materialized(&self) -> Option<SnapshotId> {
        self.real.get().cloned()
    }
}

/// Reads an import source's config document.
async fn load_import(worker: &Arc<Worker>, spec: &CacheSpec) -> Result<Imported> {
    let (source, bytes) = match spec.kind.as_str() {
        "local" => {
            let src = spec.attrs.get("src").context("type=local needs src=DIR")?;
            let layout =
                OciLayout::open(src).with_context(|| format!("{src} is not an OCI layout"))?;
            let bytes = read_layout_config(&layout, src, spec)?;
            (CacheSource::Layout(layout), bytes)
        }
        "registry" => {
            let r = spec
                .attrs
                .get("ref")
                .context("type=registry needs ref=REFERENCE")?;
            let reference: ImageRef = r
                .parse()
                .with_context(|| format!("bad cache reference {r:?}"))?;
            let client = worker.registry.clone();
            let rr = reference.clone();
            let handle = tokio::runtime::Handle::current();
            let bytes = blocking(move || {
                handle.block_on(async {
                    let m = client
                        .resolve(&rr, &Platform::host())
                        .await
                        .with_context(|| format!("resolving {rr}"))?;
                    let cfg = client
                        .fetch_blob_bytes(&rr, &m.config, 64 << 20, "cache config")
                        .await
                        .with_context(|| format!("fetching the config of {rr}"))?;
                    if m.config.media_type == format::CONFIG_MEDIA_TYPE {
                        Ok(cfg)
                    } else {
                        inline_of(&cfg).with_context(|| format!("{rr}"))
                    }
                })
            })
            .await?;
            (CacheSource::Registry(reference), bytes)
        }
        "inline" => bail!("type=inline is export-only; import it with type=registry,ref=IMAGE"),
        other => bail!("cache type {other:?} is not supported"),
    };
    let config = CacheConfig::parse(&bytes)?;
    let mut by_key = config.index();
    let mut warning = None;
    // A layout directory may have lost blobs (copied in part, cleaned by
    // hand): records whose layers are not all there are left out, so their
    // steps run instead of failing when a later step needs the layer. A
    // registry keeps every blob its manifests name.
    if let CacheSource::Layout(layout) = &source {
        let missing: Vec<bool> = config
            .layers
            .iter()
            .map(|l| {
                !l.empty
                    && l.digest.parse::<Digest>().is_ok_and(|d| {
                        !worker.content.exists(&d) && !layout.blob_path(&d).is_file()
                    })
            })
            .collect();
        let gone = missing.iter().filter(|m| **m).count();
        if gone > 0 {
            let before = by_key.len();
            by_key.retain(|_, i| {
                config.records[*i]
                    .outputs
                    .iter()
                    .flatten()
                    .all(|&top| config.chain(top).iter().all(|&j| !missing[j]))
            });
            warning = Some(format!(
                "{gone} layer blob(s) are missing from the cache directory: {} of {before} \
                 records left out (their steps will run)",
                before - by_key.len()
            ));
        }
    }
    Ok(Imported {
        source,
        config,
        by_key,
        warning,
    })
}

/// The cache document embedded in an image config.
fn inline_of(image_config: &[u8]) -> Result<Vec<u8>> {
    let v: serde_json::Value =
        serde_json::from_slice(image_config).context("the image config is not JSON")?;
    let c = v
        .get(format::INLINE_KEY)
        .context("the image carries no inline cache (build it with --export-cache type=inline)")?;
    Ok(serde_json::to_vec(c)?)
}

/// The config blob of the manifest tagged `tag` (or with `digest`) in an
/// OCI layout written by a `type=local` export.
fn read_layout_config(layout: &OciLayout, dir: &str, spec: &CacheSpec) -> Result<Vec<u8>> {
    let index_path = std::path::Path::new(dir).join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &fs_err::read(&index_path).context("reading the cache's index.json")?,
    )
    .with_context(|| format!("{} is not JSON", index_path.display()))?;
    let tag = spec
        .attrs
        .get("tag")
        .map(String::as_str)
        .unwrap_or("latest");
    let want_digest = spec.attrs.get("digest");
    let entry = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .find(|e| match want_digest {
            Some(d) => e.get("digest").and_then(|x| x.as_str()) == Some(d.as_str()),
            None => export::ref_name(e) == Some(tag),
        })
        .with_context(|| format!("{dir} has no cache tagged {tag:?}"))?;
    let manifest_digest: Digest = entry
        .get("digest")
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .parse()
        .context("bad manifest digest in index.json")?;
    let manifest = small_blob(layout, &manifest_digest, 4 << 20)?;
    let m: serde_json::Value = serde_json::from_slice(&manifest).context("bad cache manifest")?;
    let config_digest: Digest = m
        .pointer("/config/digest")
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .parse()
        .context("bad config digest in the cache manifest")?;
    let cfg = small_blob(layout, &config_digest, 64 << 20)?;
    if m.pointer("/config/mediaType").and_then(|x| x.as_str()) == Some(format::CONFIG_MEDIA_TYPE) {
        Ok(cfg)
    } else {
        inline_of(&cfg)
    }
}

/// A small blob of an OCI layout, verified, refused above `limit` bytes.
fn small_blob(layout: &OciLayout, d: &Digest, limit: u64) -> Result<Vec<u8>> {
    let len = fs_err::metadata(layout.blob_path(d))?.len();
    if len > limit {
        bail!("cache blob {d} is larger than {limit} bytes");
    }
    Ok(layout.read_blob(d)?)
}

/// Puts a cache layer's blob into the content store (from the source, or
/// an empty tar for an empty layer) and returns the digest to unpack.
fn fetch_layer(worker: &Worker, source: &CacheSource, l: &CacheLayer) -> Result<Digest> {
    if l.empty {
        let (d, _) = worker
            .content
            .write_bytes(&[0u8; format::EMPTY_TAR_LEN], None)?;
        return Ok(d);
    }
    let digest: Digest = l.digest.parse()?;
    if worker.content.exists(&digest) {
        return Ok(digest);
    }
    match source {
        CacheSource::Layout(layout) => {
            let f = fs_err::File::open(layout.blob_path(&digest))?;
            worker
                .content
                .write_reader(std::io::BufReader::new(f), Some(&digest))
                .with_context(|| format!("copying cache blob {digest}"))?;
        }
        CacheSource::Registry(r) => {
            let desc = Descriptor {
                media_type: l.media_type.clone(),
                digest: digest.clone(),
                size: l.size,
                platform: None,
                annotations: BTreeMap::new(),
            };
            tokio::runtime::Handle::current()
                .block_on(worker.registry.fetch_blob_to_store(
                    r,
                    &desc,
                    "cache layer",
                    &worker.content,
                ))
                .with_context(|| format!("fetching cache blob {digest} from {r}"))?;
        }
    }
    Ok(digest)
}

/// Notes on the snapshots of a chain unpacked from an import which of
/// their blobs kiln packed (see [`CacheLayer::packed`]).
fn mark_packed(worker: &Worker, top: &SnapshotId, layers: &[CacheLayer]) -> Result<()> {
    use kiln_store::layer::{record_source_blob, source_blob};
    let chain = worker.snapshots.chain(top)?;
    for (id, l) in chain.iter().zip(layers).filter(|(_, l)| l.packed) {
        if let Some(mut b) = source_blob(&worker.snapshots, &worker.content, id)
            && !b.packed
            && b.blob.digest.as_str() == l.digest
        {
            b.packed = true;
            b.epoch = l.epoch;
            record_source_blob(&worker.snapshots, id, &b)?;
        }
    }
    Ok(())
}

/// The real result behind `r`: lazy results are unpacked (once per
/// session), others returned as they are.
pub(crate) async fn materialize(
    worker: &Arc<Worker>,
    state: &SessionState,
    r: &Ref,
) -> Result<Ref> {
    let Some(id) = &r.0 else {
        return Ok(r.clone());
    };
    let Some(lazy) = state.lazy_get(id) else {
        return Ok(r.clone());
    };
    let real = lazy
        .real
        .get_or_try_init(|| {
            let worker = worker.clone();
            let lazy = lazy.clone();
            async move {
                blocking(move || {
                    let mut digests = Vec::new();
                    let mut diff_ids = Vec::new();
                    let layers = lazy.layers();
                    for l in &layers {
                        digests.push(fetch_layer(&worker, &lazy.import.source, l)?);
                        diff_ids.push(l.diff_id.parse::<Digest>()?);
                    }
                    let top = crate::ops::unpack_chain(&worker, &digests, &diff_ids, None)?
                        .context("an imported cache chain has no layers")?;
                    mark_packed(&worker, &top, &layers)?;
                    Ok(top)
                })
                .await
            }
        })
        .await?;
    let r = Ref(Some(real.clone()));
    state.hold(worker, std::slice::from_ref(&r));
    Ok(r)
}
