//! The `oci` and `docker` exporters.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::{Dest, ImageExportOptions, ImageFormat, config::finalize_config};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{self, Compression, LayerBlob, PackOptions};
use crate::snapshot::{SnapshotId, SnapshotStore};

/// What an image export produced (BuildKit's `containerimage.*` metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageExportResult {
    /// `containerimage.digest`: the manifest digest.
    pub manifest_digest: Digest,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// The manifest media type.
    pub manifest_media_type: &'static str,
    /// `containerimage.config.digest`.
    pub config_digest: Digest,
    /// `containerimage.descriptor`: the manifest descriptor as JSON.
    pub descriptor: String,
    /// The exported layers, base first (empty diffs left out).
    pub layers: Vec<LayerBlob>,
    /// Names written into the index / `RepoTags`, normalised.
    pub names: Vec<String>,
}

/// Media type set for OCI (`true`) or Docker schema 2 (`false`).
pub mod media_types {
    /// Manifest media type.
    pub fn manifest(oci: bool) -> &'static str {
        if oci {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/vnd.docker.distribution.manifest.v2+json"
        }
    }
    /// Config media type.
    pub fn config(oci: bool) -> &'static str {
        if oci {
            "application/vnd.oci.image.config.v1+json"
        } else {
            "application/vnd.docker.container.image.v1+json"
        }
    }
    /// Index media type (an OCI layout's index.json is always an OCI index).
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Layer media type for a compression.
    pub fn layer(oci: bool, c: crate::layer::Compression) -> &'static str {
        use crate::layer::Compression::*;
        match (oci, c) {
            (true, Uncompressed) => "application/vnd.oci.image.layer.v1.tar",
            (true, Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (false, Uncompressed) => "application/vnd.docker.image.rootfs.diff.tar",
            (false, Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// A normalised image name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedName {
    /// `docker.io/library/foo:latest` (the `io.containerd.image.name`).
    pub full: String,
    /// The tag (`latest`), if the name is not digest-only.
    pub tag: Option<String>,
    /// `foo:latest`, as `docker save` writes `RepoTags`.
    pub familiar: Option<String>,
}

/// Normalise like Docker: a missing registry is `docker.io`, a one-part
/// Docker Hub path gets `library/`, a missing tag is `latest` (unless a
/// digest is given).
pub fn normalize_name(name: &str) -> Result<NormalizedName> {
    let bad = |reason| Error::InvalidOption {
        key: "name".into(),
        value: name.into(),
        reason,
    };
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (
            r,
            Some(crate::digest::parse(d).map_err(|_| bad("invalid digest"))?),
        ),
        None => (name, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if repo.is_empty() || tag.is_some_and(str::is_empty) {
        return Err(bad("empty repository or tag"));
    }
    let ok = |s: &str, extra: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if !ok(repo, "._-/:")
        || tag.is_some_and(|t| !ok(t, "._-"))
        || repo.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(bad("invalid characters in image name"));
    }
    let (domain, path) = match repo.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d.to_owned(), p.to_owned())
        }
        _ => ("docker.io".to_owned(), repo.to_owned()),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_owned()),
        (None, None) => Some("latest".to_owned()),
        (None, Some(_)) => None,
    };
    let mut full = format!("{domain}/{path}");
    if let Some(t) = &tag {
        full.push(':');
        full.push_str(t);
    }
    if let Some(d) = &digest {
        full.push('@');
        full.push_str(d.as_str());
    }
    let short = if domain == "docker.io" {
        path.strip_prefix("library/").unwrap_or(&path).to_owned()
    } else {
        format!("{domain}/{path}")
    };
    let familiar = tag.as_ref().map(|t| format!("{short}:{t}"));
    Ok(NormalizedName {
        full,
        tag,
        familiar,
    })
}

/// The blobs of one built image, all in the content store.
struct Built {
    result: ImageExportResult,
    config: Vec<u8>,
    manifest: Vec<u8>,
    names: Vec<NormalizedName>,
    platform: Value,
}

fn build(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    top: Option<&SnapshotId>,
    config: Option<&[u8]>,
    opts: &ImageExportOptions,
) -> Result<Built> {
    let names = opts
        .names
        .iter()
        .map(|n| normalize_name(n))
        .collect::<Result<Vec<_>>>()?;
    let chain = match top {
        Some(t) => snapshots.chain(t)?,
        None => Vec::new(),
    };
    let oci = opts.oci_mediatypes || opts.compression == Compression::Zstd;
    let pack = PackOptions {
        compression: opts.compression,
        level: opts.compression_level,
        source_date_epoch: opts.source_date_epoch,
    };
    let blob_for = |id: &SnapshotId| -> Result<LayerBlob> {
        layer::layer_blob_for(snapshots, content, id, &pack, |b| {
            !opts.force_compression
                && (oci || b.blob.compression != Compression::Zstd)
                // kiln's own packing of a cached layer, made with another
                // epoch: pack it as a build without the cache would.
                && (!b.packed || b.epoch == opts.source_date_epoch)
        })
        .map(|b| b.blob)
    };
    // Layers compress in parallel; each result lands in its own slot, so the
    // output does not depend on scheduling.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(chain.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<LayerBlob>>>> =
        chain.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = chain.get(i) else { break };
                    let r = blob_for(id);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let mut per_snapshot: Vec<Option<LayerBlob>> = Vec::new();
    for (slot, id) in slots.into_iter().zip(&chain) {
        let r = slot.into_inner().ok().flatten().unwrap_or_else(|| {
            Err(Error::InvalidImage(format!(
                "packing the layer of snapshot {id} did not finish"
            )))
        });
        let blob = r?;
        per_snapshot.push((blob.entries > 0).then_some(blob));
    }
    let diff_ids: Vec<Option<Digest>> = per_snapshot
        .iter()
        .map(|b| b.as_ref().map(|b| b.diff_id.clone()))
        .collect();
    let mut config = finalize_config(config, &diff_ids, opts.source_date_epoch)?;
    if let Some((field, doc)) = &opts.inline_cache {
        config = embed_field(&config, field, doc)?;
    }
    let (config_digest, config_size) = content.write_bytes(&config, None)?;
    let layers: Vec<LayerBlob> = per_snapshot.into_iter().flatten().collect();
    let manifest_mt = media_types::manifest(oci);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_mt,
        "config": {"mediaType": media_types::config(oci), "digest": config_digest.as_str(), "size": config_size},
        "layers": layers.iter().map(|l| json!({
            "mediaType": media_types::layer(oci, l.compression),
            "digest": l.digest.as_str(),
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let mut manifest = manifest;
    if !opts.manifest_annotations.is_empty()
        && let Value::Object(m) = &mut manifest
    {
        m.insert("annotations".into(), json!(opts.manifest_annotations));
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|source| Error::Json {
        what: "manifest",
        source,
    })?;
    let (manifest_digest, manifest_size) = content.write_bytes(&manifest, None)?;
    let descriptor = json!({"mediaType": manifest_mt, "digest": manifest_digest.as_str(), "size": manifest_size});
    Ok(Built {
        result: ImageExportResult {
            manifest_digest,
            manifest_size,
            manifest_media_type: manifest_mt,
            config_digest,
            descriptor: descriptor.to_string(),
            layers,
            names: names.iter().map(|n| n.full.clone()).collect(),
        },
        platform: platform_of(&config),
        config,
        manifest,
        names,
    })
}

/// Adds the JSON document `doc` to the config object under `field`.
fn embed_field(config: &[u8], field: &str, doc: &str) -> Result<Vec<u8>> {
    let json_err = |what| move |source| Error::Json { what, source };
    let mut v: Value = serde_json::from_slice(config).map_err(json_err("image config"))?;
    let d: Value = serde_json::from_str(doc).map_err(json_err("inline cache"))?;
    if let Value::Object(m) = &mut v {
        m.insert(field.to_owned(), d);
    }
    serde_json::to_vec(&v).map_err(json_err("image config"))
}

/// The OCI platform object of a config (`architecture`, `os`, `variant`).
fn platform_of(config: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(config).unwrap_or(Value::Null);
    let mut p = serde_json::Map::new();
    for k in ["architecture", "os", "os.version", "variant"] {
        if let Some(x) = v.get(k).and_then(Value::as_str) {
            p.insert(k.into(), Value::String(x.into()));
        }
    }
    Value::Object(p)
}

fn index_json(b: &Built, opts: &ImageExportOptions) -> Vec<u8> {
    let r = &b.result;
    let entry = |name: Option<&NormalizedName>| {
        let mut e = json!({
            "mediaType": r.manifest_media_type,
            "digest": r.manifest_digest.as_str(),
            "size": r.manifest_size,
        });
        let mut a: BTreeMap<String, String> = opts.descriptor_annotations.clone();
        if let Some(n) = name {
            a.insert("io.containerd.image.name".into(), n.full.clone());
            if let Some(t) = &n.tag {
                a.insert("org.opencontainers.image.ref.name".into(), t.clone());
            }
        }
        if let Value::Object(m) = &mut e {
            if !a.is_empty() {
                m.insert("annotations".into(), json!(a));
            }
            m.insert("platform".into(), b.platform.clone());
        }
        e
    };
    let manifests: Vec<Value> = if b.names.is_empty() {
        vec![entry(None)]
    } else {
        b.names.iter().map(|n| entry(Some(n))).collect()
    };
    let mut idx =
        json!({"schemaVersion": 2, "mediaType": media_types::INDEX, "manifests": manifests});
    if !opts.index_annotations.is_empty()
        && let Value::Object(m) = &mut idx
    {
        m.insert("annotations".into(), json!(opts.index_annotations));
    }
    serde_json::to_vec(&idx).unwrap_or_default()
}

fn docker_manifest_json(b: &Built) -> Vec<u8> {
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let tags: Vec<&String> = b.names.iter().filter_map(|n| n.familiar.as_ref()).collect();
    let m = json!([{
        "Config": blob(&b.result.config_digest),
        "RepoTags": tags,
        "Layers": b.result.layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
    }]);
    serde_json::to_vec(&m).unwrap_or_default()
}

const OCI_LAYOUT: &[u8] = crate::ocilayout::LAYOUT_VERSION;

enum Src {
    Bytes(Vec<u8>),
    Blob(Digest),
    Dir,
}

fn tarball_files(b: &Built, opts: &ImageExportOptions) -> BTreeMap<String, Src> {
    let mut files = BTreeMap::new();
    files.insert("blobs/".to_owned(), Src::Dir);
    files.insert("blobs/sha256/".to_owned(), Src::Dir);
    let mut blob = |d: &Digest, s: Src| {
        files.insert(format!("blobs/sha256/{}", d.hex()), s);
    };
    blob(&b.result.config_digest, Src::Bytes(b.config.clone()));
    blob(&b.result.manifest_digest, Src::Bytes(b.manifest.clone()));
    for l in &b.result.layers {
        blob(&l.digest, Src::Blob(l.digest.clone()));
    }
    files.insert("oci-layout".into(), Src::Bytes(OCI_LAYOUT.to_vec()));
    files.insert("index.json".into(), Src::Bytes(index_json(b, opts)));
    if opts.format == ImageFormat::Docker {
        files.insert("manifest.json".into(), Src::Bytes(docker_manifest_json(b)));
    }
    files
}

fn write_tarball(
    content: &ContentStore,
    b: &Built,
    opts: &ImageExportOptions,
    w: &mut dyn Write,
) -> Result<()> {
    let mtime = opts.source_date_epoch.unwrap_or(0).max(0) as u64;
    let mut tar = tar::Builder::new(w);
    let werr = || Error::io("write image tarball");
    for (path, src) in tarball_files(b, opts) {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        match src {
            Src::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, &path, io::empty())
                    .map_err(werr())?;
            }
            Src::Bytes(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, &path, &data[..]).map_err(werr())?;
            }
            Src::Blob(d) => {
                let f = content.open(&d)?;
                let len = f.metadata().map_err(Error::io("stat blob"))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(len);
                tar.append_data(&mut h, &path, f.take(len))
                    .map_err(werr())?;
            }
        }
    }
    tar.into_inner().map_err(werr())?.flush().map_err(werr())
}

/// Write into an OCI layout directory, adding to what is there: blobs are
/// added, and index entries for the same names are replaced.
fn write_layout_dir(
    content: &ContentStore,
    b: &Built,
    opts: &ImageExportOptions,
    dir: &Path,
) -> Result<()> {
    use crate::ocilayout::{BlobFrom, put_blob, update_index};
    put_blob(dir, &b.result.config_digest, BlobFrom::Bytes(&b.config))?;
    put_blob(dir, &b.result.manifest_digest, BlobFrom::Bytes(&b.manifest))?;
    for l in &b.result.layers {
        put_blob(dir, &l.digest, BlobFrom::Copy(&content.path(&l.digest)))?;
    }
    let new: Value = serde_json::from_slice(&index_json(b, opts)).unwrap_or(Value::Null);
    let name = |e: &Value| e.pointer("/annotations/io.containerd.image.name").cloned();
    let new_names: Vec<Value> = new["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(name)
        .collect();
    let digest = Value::String(b.result.manifest_digest.to_string());
    // An image of the same name, or the same unnamed manifest, is replaced.
    let keep = |e: &Value| match name(e) {
        Some(n) => !new_names.contains(&n),
        None => e.get("digest") != Some(&digest),
    };
    update_index(
        dir,
        new["manifests"].as_array().cloned().unwrap_or_default(),
        new.get("annotations").cloned(),
        keep,
    )
}

/// Identifies an image tarball that an export wrote to a regular file: what
/// it holds (`plan`, a digest over its entries) and which file it is, as
/// `stat` sees it right after the rename. ctime changes on every write,
/// chmod or rename and cannot be set by a program, so a file whose device,
/// inode, size, mtime and ctime all still match has not been touched since.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TarballStamp {
    /// Digest over the tarball's entries: names, content digests, times.
    pub plan: String,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// mtime, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// ctime, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl TarballStamp {
    fn of(plan: &str, m: &std::fs::Metadata) -> TarballStamp {
        use std::os::unix::fs::MetadataExt;
        TarballStamp {
            plan: plan.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

/// The digest of everything that decides a tarball's bytes. Bump the tag
/// when [`write_tarball`] changes how it lays entries out.
fn tarball_plan(b: &Built, opts: &ImageExportOptions) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"kiln.image-tarball.v1\0");
    h.update(opts.source_date_epoch.unwrap_or(0).max(0).to_le_bytes());
    for (path, src) in tarball_files(b, opts) {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        match src {
            Src::Dir => h.update(b"d"),
            Src::Bytes(data) => {
                h.update(b"b");
                h.update(Sha256::digest(&data));
            }
            Src::Blob(d) => {
                h.update(b"c");
                h.update(d.as_str().as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// What [`export_image_file`] did.
#[derive(Clone, Debug)]
pub struct ImageFileExport {
    /// The image.
    pub result: ImageExportResult,
    /// The stamp of the tarball now at `dest`, when it is a regular file
    /// this export wrote or found already written.
    pub stamp: Option<TarballStamp>,
    /// Whether the file at `dest` already held this tarball and was left
    /// as it was.
    pub reused: bool,
}

/// Export the chain ending at `top` (`None`: an image with no layers) with
/// the frontend's image config (`None`: a minimal default) as `opts.format`
/// to `opts.dest`. Blobs are also left in `content`.
pub fn export_image(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    top: Option<&SnapshotId>,
    config: Option<&[u8]>,
    opts: &ImageExportOptions,
) -> Result<ImageExportResult> {
    export_image_file(snapshots, content, top, config, opts, None).map(|e| e.result)
}

/// [`export_image`], which leaves a tarball at a regular-file `dest` alone
/// when `previous` (the stamp an earlier export returned for that path)
/// says the file holds exactly this tarball and has not been touched
/// since; its mtime then stays that of the first write. Returns the stamp
/// to keep for the next export.
pub fn export_image_file(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    top: Option<&SnapshotId>,
    config: Option<&[u8]>,
    opts: &ImageExportOptions,
    previous: Option<&TarballStamp>,
) -> Result<ImageFileExport> {
    let b = build(snapshots, content, top, config, opts)?;
    if !opts.tar {
        let Dest::Path(dir) = &opts.dest else {
            return Err(Error::InvalidOption {
                key: "dest".into(),
                value: String::new(),
                reason: "tar=false needs a destination directory",
            });
        };
        write_layout_dir(content, &b, opts, dir)?;
        return Ok(ImageFileExport {
            result: b.result,
            stamp: None,
            reused: false,
        });
    }
    let file_dest = match &opts.dest {
        Dest::Path(p) => Some(p),
        Dest::Stdout => None,
    };
    let plan = file_dest.map(|_| tarball_plan(&b, opts));
    if let (Some(p), Some(plan), Some(prev)) = (file_dest, &plan, previous)
        && let Ok(m) = std::fs::symlink_metadata(p)
        && m.is_file()
        && TarballStamp::of(plan, &m) == *prev
    {
        return Ok(ImageFileExport {
            result: b.result,
            stamp: Some(prev.clone()),
            reused: true,
        });
    }
    let mut w = opts.dest.create()?;
    write_tarball(content, &b, opts, &mut w)?;
    let written = w.file_inode();
    w.finish()?;
    // Stamp only the file this export renamed into place: another writer
    // may have replaced it since.
    let stamp = match (file_dest, plan, written) {
        (Some(p), Some(plan), Some((dev, ino))) => std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_file() && m.dev() == dev && m.ino() == ino
            })
            .map(|m| TarballStamp::of(&plan, &m)),
        _ => None,
    };
    Ok(ImageFileExport {
        result: b.result,
        stamp,
        reused: false,
    })
}

/// Like [`export_image`] with `tar=true`, but into any writer (e.g. a
/// stream to the client); `opts.dest` is ignored.
pub fn export_image_to_writer(
    snapshots: &SnapshotStore,
    content: &ContentStore,
    top: Option<&SnapshotId>,
    config: Option<&[u8]>,
    opts: &ImageExportOptions,
    w: &mut dyn Write,
) -> Result<ImageExportResult> {
    let b = build(snapshots, content, top, config, opts)?;
    write_tarball(content, &b, opts, w)?;
    Ok(b.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = normalize_name("foo").unwrap();
        assert_eq!(n.full, "docker.io/library/foo:latest");
        assert_eq!(n.tag.as_deref(), Some("latest"));
        assert_eq!(n.familiar.as_deref(), Some("foo:latest"));
        let n = normalize_name("localhost:5000/a/b:v1").unwrap();
        assert_eq!(n.full, "localhost:5000/a/b:v1");
        assert_eq!(n.familiar.as_deref(), Some("localhost:5000/a/b:v1"));
        let n = normalize_name("user/app:1.0").unwrap();
        assert_eq!(n.full, "docker.io/user/app:1.0");
        assert_eq!(n.familiar.as_deref(), Some("user/app:1.0"));
        assert!(normalize_name("Bad").is_err());
        assert!(normalize_name("a:").is_err());
    }
}
