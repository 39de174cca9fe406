//! `Engine::export`: hands the result's snapshot chain to kiln-store's
//! exporters (`oci`, `docker`, `local`, `tar`); `image` builds the image in
//! the content store and, with `push=true`, pushes it to every `name` with
//! kiln-runtime's registry client.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_runtime::registry::ImageRef;
use kiln_store::SnapshotId;
use kiln_store::exporter::{
    self, Dest, FsExportOptions, ImageExportOptions, ImageFormat, TarballStamp,
};

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
                let stamps = TarballStamps::new(&worker.dir);
                let dest = match &opts.dest {
                    Dest::Path(p) if opts.tar => stamp_key(p),
                    _ => None,
                };
                let previous = dest.as_deref().and_then(|d| stamps.get(d));
                let e = exporter::export_image_file(
                    snaps,
                    &worker.content,
                    snapshot.as_ref(),
                    config.as_deref(),
                    &opts,
                    previous.as_ref(),
                )?;
                if let Some(d) = &dest
                    && e.stamp != previous
                {
                    stamps.put(d, e.stamp.as_ref());
                }
                let r = e.result;
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

/// The stamps of image tarballs exported to files, by absolute destination
/// path (`engine/v1/tarball-stamps.json`), so that a rebuild exporting the
/// same image to the same untouched file does not write it again. It is a
/// cache: it keeps the most recent [`MAX_STAMPS`] destinations, is written
/// without fsync, and a lost or stale entry only costs a rewrite.
struct TarballStamps {
    file: std::path::PathBuf,
    tmp_dir: std::path::PathBuf,
}

const MAX_STAMPS: usize = 32;

#[derive(serde::Serialize, serde::Deserialize)]
struct StampEntry {
    stamp: TarballStamp,
    /// Unix seconds of the last export to this destination.
    used: u64,
}

/// The absolute path a stamp is kept under (its directory resolved, as
/// the file itself may not exist yet).
fn stamp_key(p: &std::path::Path) -> Option<String> {
    let abs = std::path::absolute(p).ok()?;
    let dir = abs.parent()?.canonicalize().ok()?;
    Some(dir.join(abs.file_name()?).to_string_lossy().into_owned())
}

impl TarballStamps {
    fn new(dir: &std::path::Path) -> TarballStamps {
        TarballStamps {
            file: dir.join("tarball-stamps.json"),
            tmp_dir: dir.join("tmp"),
        }
    }

    fn load(&self) -> BTreeMap<String, StampEntry> {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn get(&self, dest: &str) -> Option<TarballStamp> {
        self.load().remove(dest).map(|e| e.stamp)
    }

    /// Records (or with `None`, forgets) the stamp of `dest`.
    fn put(&self, dest: &str, stamp: Option<&TarballStamp>) {
        let mut all = self.load();
        match stamp {
            Some(s) => {
                let used = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                all.insert(
                    dest.to_owned(),
                    StampEntry {
                        stamp: s.clone(),
                        used,
                    },
                );
            }
            None => {
                all.remove(dest);
            }
        }
        while all.len() > MAX_STAMPS {
            let oldest = all
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => all.remove(&k),
                None => break,
            };
        }
        let Ok(bytes) = serde_json::to_vec(&all) else {
            return;
        };
        let tmp = self.tmp_dir.join(format!(
            "tarball-stamps-{}",
            kiln_store::fsutil::random_hex().unwrap_or_default()
        ));
        if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &self.file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
