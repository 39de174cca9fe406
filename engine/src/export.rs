//! `Engine::export`: hands the result's snapshot chain to kiln-store's
//! exporters (`oci`, `docker`, `local`, `tar`); `image` builds the image in
//! the content store and, with `push=true`, pushes it to every `name` with
//! kiln-runtime's registry client.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_runtime::registry::ImageRef;
use kiln_store::SnapshotId;
use kiln_store::exporter::{self, FsExportOptions, ImageExportOptions, ImageFormat};

use crate::engine::ExportResult;
use crate::ops::{Worker, blocking};
use crate::session::Session;

pub(crate) async fn export(
    worker: &Arc<Worker>,
    snapshot: Option<SnapshotId>,
    image_config: Option<&[u8]>,
    output_type: &str,
    attrs: &BTreeMap<String, String>,
    _session: Arc<Session>,
) -> Result<ExportResult> {
    let worker = worker.clone();
    let attrs = attrs.clone();
    let config = image_config.map(<[u8]>::to_vec);
    let kind = output_type.to_owned();
    blocking(move || {
        let snaps = &worker.snapshots;
        let mut out = ExportResult::default();
        match kind.as_str() {
            "oci" | "docker" => {
                let fmt = if kind == "oci" {
                    ImageFormat::Oci
                } else {
                    ImageFormat::Docker
                };
                let opts = ImageExportOptions::from_attrs(fmt, &attrs)?;
                let r = exporter::export_image(
                    snaps,
                    &worker.content,
                    snapshot.as_ref(),
                    config.as_deref(),
                    &opts,
                )?;
                out.metadata.insert(
                    "containerimage.digest".into(),
                    r.manifest_digest.to_string(),
                );
                out.metadata.insert(
                    "containerimage.config.digest".into(),
                    r.config_digest.to_string(),
                );
                out.metadata
                    .insert("containerimage.descriptor".into(), r.descriptor.clone());
                if !r.names.is_empty() {
                    out.metadata.insert("image.name".into(), r.names.join(","));
                }
            }
            "local" => {
                let opts = FsExportOptions::from_attrs(&attrs)?;
                exporter::export_local(snaps, snapshot.as_ref(), opts.local_dir()?)?;
            }
            "tar" => {
                let opts = FsExportOptions::from_attrs(&attrs)?;
                exporter::export_tar(snaps, snapshot.as_ref(), &opts)?;
            }
            "image" => {
                let mut opts = ImageExportOptions::from_attrs(ImageFormat::Oci, &attrs)?;
                // The image lands in the content store; the tarball itself
                // is not wanted.
                opts.tar = true;
                let r = exporter::export_image_to_writer(
                    snaps,
                    &worker.content,
                    snapshot.as_ref(),
                    config.as_deref(),
                    &opts,
                    &mut std::io::sink(),
                )?;
                out.metadata.insert(
                    "containerimage.digest".into(),
                    r.manifest_digest.to_string(),
                );
                out.metadata.insert(
                    "containerimage.config.digest".into(),
                    r.config_digest.to_string(),
                );
                out.metadata
                    .insert("containerimage.descriptor".into(), r.descriptor.clone());
                if !r.names.is_empty() {
                    out.metadata.insert("image.name".into(), r.names.join(","));
                }
                let push = attrs
                    .get("push")
                    .is_some_and(|v| v.is_empty() || v == "true" || v == "1");
                if push {
                    if r.names.is_empty() {
                        bail!("image export with push=true needs name=");
                    }
                    let manifest = worker.content.read(&r.manifest_digest)?;
                    let handle = tokio::runtime::Handle::current();
                    for name in &r.names {
                        let reference: ImageRef = name
                            .parse()
                            .with_context(|| format!("bad image name {name:?}"))?;
                        handle
                            .block_on(worker.registry.push(&reference, &manifest, &worker.content))
                            .with_context(|| format!("pushing {name}"))?;
                    }
                }
            }
            other => bail!("unknown exporter {other:?} (known: image, oci, docker, local, tar)"),
        }
        Ok(out)
    })
    .await
}
