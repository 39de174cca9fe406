//! `docker-image://` and `oci-layout://` sources.
//!
//! Both key on the image's manifest digest for the requested platform, so
//! a moved tag is a miss and a re-tag of the same image is a hit. Layers
//! are unpacked into a snapshot chain; every chain prefix is remembered
//! (`layerchain:` facts) so images sharing base layers share snapshots.
//!
//! `image.resolvemode`: `pull` always asks the registry; `local` uses only
//! what an earlier pull recorded; `default` asks the registry unless the
//! reference is pinned by digest and already known, and falls back to the
//! recorded digest when the registry cannot be reached.

use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use kiln_llb::pb;
use kiln_runtime::registry::{ImageRef, Platform as RegPlatform};
use kiln_store::ocilayout::{OciLayout, Platform as LayoutPlatform};
use kiln_store::{Digest, SnapshotId};

use super::{OpCtx, Ref, Worker, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::solver::{BoxFuture, Input, Op, OpContext, ProgressSink, VertexInfo};

enum Kind {
    Registry { reference: ImageRef, mode: String },
    Layout { store: String, reference: String },
}

/// What `cache_key` resolved, for `execute`.
struct Resolved {
    manifest: Digest,
    layers: Vec<Digest>,
    diff_ids: Vec<Digest>,
}

pub(crate) struct ImageOp {
    ctx: OpCtx,
    identifier: String,
    kind: Kind,
    platform: (String, String, Option<String>),
    resolved: Mutex<Option<Resolved>>,
}

impl ImageOp {
    pub(crate) fn new(
        ctx: OpCtx,
        src: &pb::SourceOp,
        platform: Option<pb::Platform>,
    ) -> std::result::Result<ImageOp, String> {
        let id = src.identifier.as_str();
        let kind = if let Some(r) = id.strip_prefix("docker-image://") {
            let reference: ImageRef = r
                .parse()
                .map_err(|e| format!("bad image reference {r:?}: {e}"))?;
            let mode = src
                .attrs
                .get("image.resolvemode")
                .cloned()
                .unwrap_or_else(|| "default".into());
            if !["default", "pull", "local"].contains(&mode.as_str()) {
                return Err(format!("bad image.resolvemode {mode:?}"));
            }
            Kind::Registry { reference, mode }
        } else if let Some(r) = id.strip_prefix("oci-layout://") {
            let (name, reference) = r
                .split_once('@')
                .ok_or_else(|| format!("oci-layout source {r:?} needs NAME@sha256:…"))?;
            let store = src
                .attrs
                .get("oci.store")
                .cloned()
                .unwrap_or_else(|| name.to_owned());
            Kind::Layout {
                store,
                reference: reference.to_owned(),
            }
        } else {
            return Err(format!("not an image source: {id}"));
        };
        let host = LayoutPlatform::host();
        let p = platform.unwrap_or_default();
        let platform = (
            if p.os.is_empty() { host.os } else { p.os },
            if p.architecture.is_empty() {
                host.architecture
            } else {
                p.architecture
            },
            (!p.variant.is_empty()).then_some(p.variant),
        );
        Ok(ImageOp {
            ctx,
            identifier: id.to_owned(),
            kind,
            platform,
            resolved: Mutex::new(None),
        })
    }

    fn platform_str(&self) -> String {
        let (os, arch, var) = &self.platform;
        match var {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        }
    }

    async fn resolve(&self) -> Result<Resolved> {
        let worker = &self.ctx.worker;
        match &self.kind {
            Kind::Layout { store, reference } => {
                let dir = self
                    .ctx
                    .session
                    .oci_layouts
                    .get(store)
                    .cloned()
                    .with_context(|| {
                        format!("OCI layout store {store:?} is not provided by the session")
                    })?;
                let reference = reference.clone();
                let (os, arch, var) = self.platform.clone();
                blocking(move || {
                    let layout = OciLayout::open(&dir)?;
                    let p = LayoutPlatform {
                        os,
                        architecture: arch,
                        variant: var,
                    };
                    let img = layout.resolve(Some(&reference), Some(&p))?;
                    Ok(Resolved {
                        manifest: img.manifest_digest.clone(),
                        layers: img.layers.iter().map(|l| l.digest.clone()).collect(),
                        diff_ids: img.diff_ids.clone(),
                    })
                })
                .await
            }
            Kind::Registry { reference, mode } => {
                let fact = format!("image:{}:{}", reference, self.platform_str());
                let known = worker.records.kv_get(&fact)?;
                let use_known =
                    mode == "local" || (mode == "default" && reference.digest().is_some());
                if let (true, Some(k)) = (use_known, &known)
                    && let Some(r) = parse_fact(k)
                {
                    return Ok(r);
                }
                if mode == "local" {
                    bail!("image {reference} is not available locally (image.resolvemode=local)");
                }
                let client = worker.registry.clone();
                let (os, arch, var) = self.platform.clone();
                let platform = RegPlatform {
                    os,
                    architecture: arch,
                    variant: var,
                };
                let pulled = pull(&client, reference, platform, &worker.content).await;
                let pulled = match (pulled, known.as_deref().and_then(parse_fact)) {
                    (Ok(p), _) => p,
                    (Err(e), Some(r)) if mode == "default" => {
                        self.ctx.session.progress.message(&format!(
                            "warning: could not reach the registry for {reference} ({e}); using the local copy"
                        ));
                        return Ok(r);
                    }
                    (Err(e), _) => return Err(e).with_context(|| format!("pulling {reference}")),
                };
                let config: serde_json::Value =
                    serde_json::from_slice(&pulled.config).context("image config is not JSON")?;
                let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                let layers: Vec<Digest> = pulled
                    .resolved
                    .layers
                    .iter()
                    .map(|l| l.digest.clone())
                    .collect();
                if diff_ids.len() != layers.len() {
                    bail!(
                        "image {reference}: {} layers but {} diff ids",
                        layers.len(),
                        diff_ids.len()
                    );
                }
                let r = Resolved {
                    manifest: pulled.resolved.manifest_digest.clone(),
                    layers,
                    diff_ids,
                };
                worker.records.kv_put(&fact, &render_fact(&r))?;
                Ok(r)
            }
        }
    }
}

/// Pulls on a blocking thread: the registry client's future is not `Send`
/// friendly enough to live inside a boxed op future.
async fn pull(
    client: &std::sync::Arc<kiln_runtime::registry::RegistryClient>,
    reference: &ImageRef,
    platform: RegPlatform,
    content: &kiln_store::ContentStore,
) -> Result<kiln_runtime::registry::PulledImage> {
    let client = client.clone();
    let reference = reference.clone();
    let content = content.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        handle.block_on(client.pull(&reference, &platform, &content))
    })
    .await
    .context("the pull task panicked")?
    .map_err(Into::into)
}

fn render_fact(r: &Resolved) -> String {
    let mut s = r.manifest.to_string();
    for (l, d) in r.layers.iter().zip(&r.diff_ids) {
        s.push_str(&format!(" {l}={d}"));
    }
    s
}

fn parse_fact(s: &str) -> Option<Resolved> {
    let mut it = s.split(' ');
    let manifest = it.next()?.parse().ok()?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for p in it {
        let (l, d) = p.split_once('=')?;
        layers.push(l.parse().ok()?);
        diff_ids.push(d.parse().ok()?);
    }
    Some(Resolved {
        manifest,
        layers,
        diff_ids,
    })
}

/// Unpacks layers into a chain, reusing chain prefixes unpacked before.
pub(crate) fn unpack_chain(
    worker: &Worker,
    layers: &[Digest],
    diff_ids: &[Digest],
    layout: Option<&OciLayout>,
) -> Result<Option<SnapshotId>> {
    let mut parent: Option<SnapshotId> = None;
    let mut chain = KeyBuilder::new("layerchain");
    for (l, d) in layers.iter().zip(diff_ids) {
        chain.str(d.as_str());
        let fact = format!("layerchain:{}", chain.finish());
        if let Some(id) = worker
            .records
            .kv_get(&fact)?
            .and_then(|s| s.parse::<SnapshotId>().ok())
            && worker.snapshots.exists(&id)
        {
            parent = Some(id);
            continue;
        }
        if !worker.content.exists(l) {
            let Some(layout) = layout else {
                bail!("layer {l} is missing from the content store");
            };
            let f = fs_err::File::open(layout.blob_path(l))?;
            worker
                .content
                .write_reader(std::io::BufReader::new(f), Some(l))?;
        }
        let u = kiln_store::layer::unpack_layer_blob(
            &worker.content,
            &worker.snapshots,
            parent.as_ref(),
            l,
            Some(d),
        )?;
        worker.records.kv_put(&fact, u.id.as_str())?;
        parent = Some(u.id);
    }
    Ok(parent)
}

impl Op<Ref> for ImageOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            let r = self.resolve().await?;
            let key = KeyBuilder::new("source.image")
                .str(r.manifest.as_str())
                .str(&self.platform_str())
                .finish();
            *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            Ok(key)
        })
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let (layers, diff_ids) = {
                let g = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                let r = g
                    .as_ref()
                    .context("image source executed before it was resolved")?;
                (r.layers.clone(), r.diff_ids.clone())
            };
            let worker = self.ctx.worker.clone();
            let layout = match &self.kind {
                Kind::Layout { store, .. } => {
                    let dir = self
                        .ctx
                        .session
                        .oci_layouts
                        .get(store)
                        .cloned()
                        .context("OCI layout store vanished")?;
                    Some(dir)
                }
                Kind::Registry { reference, .. } => {
                    // Blobs may have been pruned since the key was computed.
                    if layers.iter().any(|l| !worker.content.exists(l)) {
                        let (os, arch, var) = self.platform.clone();
                        let platform = RegPlatform {
                            os,
                            architecture: arch,
                            variant: var,
                        };
                        pull(&worker.registry, reference, platform, &worker.content)
                            .await
                            .with_context(|| format!("pulling {reference}"))?;
                    }
                    None
                }
            };
            let v = VertexInfo {
                digest: cx.digest.clone(),
                name: cx.name.clone(),
                inputs: Vec::new(),
            };
            self.ctx.session.progress.log(
                &v,
                &format!("unpacking {} layer(s) of {}", layers.len(), self.identifier),
            );
            let id = blocking(move || {
                let layout = match layout {
                    Some(d) => Some(OciLayout::open(&d)?),
                    None => None,
                };
                unpack_chain(&worker, &layers, &diff_ids, layout.as_ref())
            })
            .await?;
            Ok(vec![Ref(id)])
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let m = self
                .resolved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|r| r.manifest.to_string());
            format!(
                "no record for {} at manifest {}",
                self.identifier,
                m.unwrap_or_default()
            )
        })
    }
}
