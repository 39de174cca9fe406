//! Read images from an OCI image layout directory (the `oci-layout://`
//! source): `index.json` → (nested indexes) → manifest for a platform →
//! config + layers, each blob verified against its digest, the layers
//! unpacked safely into snapshots. [`put_blob`] and [`update_index`] write
//! into a layout that may hold other images already (image exports, cache
//! exports).
//!
//! Layer 1: uses `content`, `snapshot`, `layer`.

use std::io::Read;
use std::path::{Path, PathBuf};

use fs_err as fs;
use serde_json::Value;

use crate::content::ContentStore;
use crate::digest::{self, Digest};
use crate::error::{Error, Result};
use crate::exporter::host_arch;
use crate::layer::{self, Compression};
use crate::snapshot::{SnapshotId, SnapshotStore};

/// The `oci-layout` file's content.
pub const LAYOUT_VERSION: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Where [`put_blob`] takes a blob from.
#[derive(Clone, Copy, Debug)]
pub enum BlobFrom<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// A copy of this file.
    Copy(&'a Path),
    /// This file, renamed (same filesystem).
    Move(&'a Path),
}

/// Puts blob `d` into the layout at `dir` unless it is there, through a
/// temp file renamed into place (a reader never sees half a blob).
pub fn put_blob(dir: &Path, d: &Digest, from: BlobFrom<'_>) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    let p = blobs.join(d.hex());
    if p.is_file() {
        return Ok(());
    }
    fs::create_dir_all(&blobs).map_err(Error::io("create OCI layout"))?;
    let tmp = blobs.join(format!(".{}.tmp", d.hex()));
    match from {
        BlobFrom::Bytes(b) => fs::write(&tmp, b).map_err(Error::io("write OCI layout blob"))?,
        BlobFrom::Copy(src) => {
            fs::copy(src, &tmp).map_err(Error::io("copy OCI layout blob"))?;
        }
        BlobFrom::Move(src) => {
            return fs::rename(src, &p).map_err(Error::io("move OCI layout blob"));
        }
    }
    fs::rename(&tmp, &p).map_err(Error::io("write OCI layout blob"))
}

/// Rewrites `index.json` of the layout at `dir` (and its `oci-layout`
/// file): the entries already there that `keep` accepts, then `new`, with
/// the index annotations `annotations`. Call it after the blobs are in, so
/// the index never names a blob the layout lacks.
pub fn update_index(
    dir: &Path,
    new: Vec<Value>,
    annotations: Option<Value>,
    keep: impl Fn(&Value) -> bool,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io("create OCI layout"))?;
    fs::write(dir.join("oci-layout"), LAYOUT_VERSION).map_err(Error::io("write oci-layout"))?;
    let idx_path = dir.join("index.json");
    let mut manifests: Vec<Value> = fs::read(&idx_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    manifests.retain(|e| keep(e));
    manifests.extend(new);
    let mut idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::exporter::media_types::INDEX,
        "manifests": manifests,
    });
    if let (Some(a), Value::Object(m)) = (annotations, &mut idx) {
        m.insert("annotations".into(), a);
    }
    let tmp = dir.join(".index.json.tmp");
    fs::write(&tmp, serde_json::to_vec(&idx).unwrap_or_default())
        .map_err(Error::io("write index.json"))?;
    fs::rename(&tmp, &idx_path).map_err(Error::io("write index.json"))
}

/// An OS/architecture pair to select from a multi-platform index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … (matched only when both sides give one).
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on.
    pub fn host() -> Self {
        Platform {
            os: "linux".into(),
            architecture: host_arch().into(),
            variant: None,
        }
    }

    fn matches(&self, v: &Value) -> bool {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        s("os").is_none_or(|o| o == self.os)
            && s("architecture").is_none_or(|a| a == self.architecture)
            && match (s("variant"), &self.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// One layer of a resolved image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDesc {
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
}

/// An image found in a layout.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The config's digest.
    pub config_digest: Digest,
    /// The config bytes (the image config JSON the frontend sees).
    pub config: Vec<u8>,
    /// Layers, base first.
    pub layers: Vec<LayerDesc>,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<Digest>,
}

/// An OCI image layout directory, read only.
#[derive(Clone, Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl OciLayout {
    /// Open a layout (it must have an `oci-layout` file and `index.json`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let marker = fs::read(dir.join("oci-layout")).map_err(Error::io("read OCI layout"))?;
        let v: Value = serde_json::from_slice(&marker).map_err(|source| Error::Json {
            what: "oci-layout",
            source,
        })?;
        if v.get("imageLayoutVersion")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(Error::InvalidImage(format!(
                "{}: oci-layout lacks imageLayoutVersion",
                dir.display()
            )));
        }
        Ok(OciLayout { dir })
    }

    /// Where a blob of the layout lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(d.hex())
    }

    /// Read a small blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let b = fs::read(self.blob_path(d)).map_err(Error::io("read OCI layout blob"))?;
        let actual = Digest::of_bytes(&b);
        if actual != *d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(b)
    }

    /// Find an image. `reference` is a tag (matched against the
    /// `org.opencontainers.image.ref.name` annotation or the tag of
    /// `io.containerd.image.name`) or a manifest/index digest; `None` takes
    /// the layout's only (or first) entry. Indexes are followed down to the
    /// manifest for `platform` (default: the host's).
    pub fn resolve(
        &self,
        reference: Option<&str>,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage> {
        let host = Platform::host();
        let platform = platform.unwrap_or(&host);
        let idx_bytes =
            fs::read(self.dir.join("index.json")).map_err(Error::io("read index.json"))?;
        let idx: Value = serde_json::from_slice(&idx_bytes).map_err(|source| Error::Json {
            what: "index.json",
            source,
        })?;
        let entries = idx["manifests"].as_array().cloned().unwrap_or_default();
        let by_digest = reference.and_then(|r| digest::parse(r).ok());
        let chosen: Vec<&Value> = entries
            .iter()
            .filter(|e| match (reference, &by_digest) {
                (None, _) => true,
                (Some(_), Some(d)) => e["digest"].as_str() == Some(d.as_str()),
                (Some(r), None) => {
                    let ann = |k: &str| {
                        e.pointer(&format!("/annotations/{}", k.replace('/', "~1")))
                            .and_then(Value::as_str)
                    };
                    ann("org.opencontainers.image.ref.name") == Some(r)
                        || ann("io.containerd.image.name").is_some_and(|n| {
                            n == r || n.rsplit_once(':').is_some_and(|(_, t)| t == r)
                        })
                }
            })
            .collect();
        let desc = match chosen
            .iter()
            .find(|e| e.get("platform").is_none_or(|p| platform.matches(p)))
        {
            Some(d) => (*d).clone(),
            None if by_digest.is_some() => {
                serde_json::json!({"digest": by_digest.as_ref().map(|d| d.to_string())})
            }
            None => {
                return Err(Error::InvalidImage(format!(
                    "{}: no image {} in index.json",
                    self.dir.display(),
                    reference.unwrap_or("(any)")
                )));
            }
        };
        self.resolve_desc(&desc, platform, 0)
    }

    fn resolve_desc(&self, desc: &Value, platform: &Platform, depth: u32) -> Result<ResolvedImage> {
        if depth > 4 {
            return Err(Error::InvalidImage("indexes nested too deeply".into()));
        }
        let d = digest::parse(desc["digest"].as_str().unwrap_or_default())?;
        let bytes = self.read_blob(&d)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "manifest",
            source,
        })?;
        let mt = v["mediaType"]
            .as_str()
            .or(desc["mediaType"].as_str())
            .unwrap_or_default();
        if INDEX_TYPES.contains(&mt) || (mt.is_empty() && v.get("manifests").is_some()) {
            let list = v["manifests"].as_array().cloned().unwrap_or_default();
            let m = list
                .iter()
                .find(|e| e.get("platform").is_none_or(|p| platform.matches(p)))
                .ok_or_else(|| {
                    Error::InvalidImage(format!(
                        "index {d} has no manifest for {}/{}",
                        platform.os, platform.architecture
                    ))
                })?;
            return self.resolve_desc(m, platform, depth + 1);
        }
        let cd = digest::parse(v["config"]["digest"].as_str().unwrap_or_default())?;
        let config = self.read_blob(&cd)?;
        let cv: Value = serde_json::from_slice(&config).map_err(|source| Error::Json {
            what: "image config",
            source,
        })?;
        let diff_ids = cv["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| digest::parse(x.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        let mut layers = Vec::new();
        for l in v["layers"].as_array().into_iter().flatten() {
            let media_type = l["mediaType"].as_str().unwrap_or_default().to_owned();
            if Compression::from_media_type(&media_type).is_none() {
                return Err(Error::InvalidImage(format!(
                    "unsupported layer media type {media_type:?}"
                )));
            }
            layers.push(LayerDesc {
                digest: digest::parse(l["digest"].as_str().unwrap_or_default())?,
                size: l["size"].as_u64().unwrap_or(0),
                media_type,
            });
        }
        if layers.len() != diff_ids.len() {
            return Err(Error::InvalidImage(format!(
                "manifest {d} has {} layers but its config lists {} diff ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        Ok(ResolvedImage {
            manifest_digest: d,
            manifest: bytes,
            config_digest: cd,
            config,
            layers,
            diff_ids,
        })
    }

    /// Copy the image's blobs into `content` (verified) and unpack each
    /// layer into a snapshot on the previous one, checking diff ids. Returns
    /// the top snapshot (`None` for an image without layers). Config and
    /// manifest are stored in `content` too.
    pub fn unpack(
        &self,
        img: &ResolvedImage,
        content: &ContentStore,
        snapshots: &SnapshotStore,
    ) -> Result<Option<SnapshotId>> {
        content.write_bytes(&img.manifest, Some(&img.manifest_digest))?;
        content.write_bytes(&img.config, Some(&img.config_digest))?;
        let mut parent: Option<SnapshotId> = None;
        for (l, diff_id) in img.layers.iter().zip(&img.diff_ids) {
            if !content.exists(&l.digest) {
                let f = fs::File::open(self.blob_path(&l.digest))
                    .map_err(Error::io("open OCI layout blob"))?;
                content.write_reader(std::io::BufReader::new(f).take(u64::MAX), Some(&l.digest))?;
            }
            let u = layer::unpack_layer_blob(
                content,
                snapshots,
                parent.as_ref(),
                &l.digest,
                Some(diff_id),
            )?;
            parent = Some(u.id);
        }
        Ok(parent)
    }
}
