//! Exporters: turn a snapshot chain (plus the frontend's image config) into
//! an artifact.
//!
//! Layer 1: uses `content`, `snapshot`, `layer`.
//!
//! | type | function | output |
//! | --- | --- | --- |
//! | `oci` | [`export_image`] with [`ImageFormat::Oci`] | OCI image layout, as a tarball or (`tar=false`) a directory |
//! | `docker` | [`export_image`] with [`ImageFormat::Docker`] | `docker save` tarball (manifest.json + OCI layout) |
//! | `local` | [`export_local`] | the merged filesystem copied into a directory |
//! | `tar` | [`export_tar`] | the merged filesystem as one tar |
//!
//! Everything is reproducible: the same snapshots, config and options give
//! byte-identical output (sorted entries, fixed owners and times, `created`
//! from `SOURCE_DATE_EPOCH` or fixed at the epoch).

mod config;
mod image;
mod local;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// The image export attribute carrying an inline cache document (set by
/// the engine for `--export-cache type=inline`).
pub const INLINE_CACHE_ATTR: &str = "kiln.inline-cache";
/// The image config field an inline cache document is embedded under.
pub const INLINE_CACHE_FIELD: &str = "kiln.cache.v1";

pub use config::{
    FIXED_CREATED, HISTORY_COMMENT, empty_config, finalize_config, host_arch, parse_rfc3339,
    rfc3339,
};
pub use image::{
    ImageExportResult, ImageFileExport, TarballStamp, export_image, export_image_file,
    export_image_to_writer, media_types, normalize_name,
};
pub use local::{export_local, export_tar, export_tar_to_writer};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::layer::Compression;

/// Where an exporter writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The process's stdout (`dest=-` or no `dest`).
    Stdout,
    /// A file (tarballs) or directory (`local`, `oci` with `tar=false`).
    Path(PathBuf),
}

impl Dest {
    fn from_attr(v: Option<&String>) -> Dest {
        match v.map(String::as_str) {
            None | Some("-") | Some("") => Dest::Stdout,
            Some(p) => Dest::Path(PathBuf::from(p)),
        }
    }

    /// Open the destination for a tarball: the file is written to a temp name
    /// next to it and renamed by [`DestWriter::finish`].
    pub fn create(&self) -> Result<DestWriter> {
        match self {
            Dest::Stdout => Ok(DestWriter::Stdout(std::io::BufWriter::with_capacity(
                256 * 1024,
                std::io::stdout(),
            ))),
            Dest::Path(p) => {
                // A device, FIFO or socket (`/dev/null`, a pipe) is written
                // to, never replaced by a rename.
                if let Ok(m) = std::fs::metadata(p) {
                    if m.is_dir() {
                        return Err(Error::IoAt {
                            op: "write a tarball to",
                            path: p.clone(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::IsADirectory,
                                "dest is a directory; give a file name",
                            ),
                        });
                    }
                    if !m.is_file() {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(p)
                            .map_err(Error::io_at("open export destination", p))?;
                        return Ok(DestWriter::Special(std::io::BufWriter::with_capacity(
                            256 * 1024,
                            f,
                        )));
                    }
                }
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let tmp = tempfile::Builder::new()
                    .prefix(".kiln-export-")
                    .tempfile_in(&dir)
                    .map_err(Error::io_at("create export file in", &dir))?;
                Ok(DestWriter::File {
                    tmp: std::io::BufWriter::new(tmp),
                    dest: p.clone(),
                })
            }
        }
    }
}

/// An open tarball destination.
pub enum DestWriter {
    /// Writing to stdout.
    Stdout(std::io::BufWriter<std::io::Stdout>),
    /// Writing straight into a device, FIFO or socket.
    Special(std::io::BufWriter<std::fs::File>),
    /// Writing to a temp file renamed into place on finish.
    File {
        /// The temp file.
        tmp: std::io::BufWriter<tempfile::NamedTempFile>,
        /// The final path.
        dest: PathBuf,
    },
}

impl DestWriter {
    /// Device and inode of the temp file a file destination is written to
    /// (the file that [`DestWriter::finish`] renames into place).
    pub fn file_inode(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        match self {
            DestWriter::File { tmp, .. } => {
                let m = tmp.get_ref().as_file().metadata().ok()?;
                Some((m.dev(), m.ino()))
            }
            _ => None,
        }
    }

    /// Flush, and for files rename into place.
    pub fn finish(self) -> Result<()> {
        match self {
            DestWriter::Stdout(mut s) => s.flush().map_err(Error::io("flush stdout")),
            DestWriter::Special(mut f) => f.flush().map_err(Error::io("flush export destination")),
            DestWriter::File { tmp, dest } => {
                let tmp = tmp.into_inner().map_err(|e| Error::IoAt {
                    op: "write export file",
                    path: dest.clone(),
                    source: e.into_error(),
                })?;
                // Temp files are created 0600; an exported file is for sharing.
                // (Reading the umask would mean setting it, which races with
                // other threads, so the mode is fixed.)
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                    .map_err(Error::io_at("chmod", tmp.path()))?;
                tmp.persist(&dest).map_err(|e| Error::IoAt {
                    op: "rename export file to",
                    path: dest,
                    source: e.error,
                })?;
                Ok(())
            }
        }
    }
}

impl Write for DestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            DestWriter::Stdout(s) => s.write(buf),
            DestWriter::Special(f) => f.write(buf),
            DestWriter::File { tmp, .. } => tmp.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            DestWriter::Stdout(s) => s.flush(),
            DestWriter::Special(f) => f.flush(),
            DestWriter::File { tmp, .. } => tmp.flush(),
        }
    }
}

/// `oci` or `docker`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// OCI image layout.
    Oci,
    /// `docker save` tarball.
    Docker,
}

/// Options of the `oci` and `docker` exporters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageExportOptions {
    /// Which tarball to write.
    pub format: ImageFormat,
    /// Image names (`name=`, comma separated), as given.
    pub names: Vec<String>,
    /// Where to write.
    pub dest: Dest,
    /// `tar=false` (oci only): write a layout directory instead of a tarball.
    pub tar: bool,
    /// Layer compression for layers kiln packs.
    pub compression: Compression,
    /// `compression-level`.
    pub compression_level: Option<i32>,
    /// Repack layers that were unpacked from a blob in another compression.
    pub force_compression: bool,
    /// OCI media types (default true for oci, false for docker). zstd layers
    /// always use OCI media types; Docker has none for them.
    pub oci_mediatypes: bool,
    /// `SOURCE_DATE_EPOCH` (`source-date-epoch=`): clamps layer mtimes and
    /// sets `created`.
    pub source_date_epoch: Option<i64>,
    /// `annotation.K` / `annotation-manifest.K`: manifest annotations.
    pub manifest_annotations: BTreeMap<String, String>,
    /// `annotation-manifest-descriptor.K`: annotations on the manifest's
    /// entry in `index.json`.
    pub descriptor_annotations: BTreeMap<String, String>,
    /// `annotation-index.K`: annotations of `index.json` itself.
    pub index_annotations: BTreeMap<String, String>,
    /// Options that were given but have no effect here (for a warning).
    pub ignored: Vec<String>,
    /// A cache document to embed in the image config under `field`
    /// (`--export-cache type=inline`): (field, JSON).
    pub inline_cache: Option<(String, String)>,
}

impl ImageExportOptions {
    /// Defaults for `format`, writing to stdout.
    pub fn new(format: ImageFormat) -> Self {
        ImageExportOptions {
            format,
            names: Vec::new(),
            dest: Dest::Stdout,
            tar: true,
            compression: Compression::Gzip,
            compression_level: None,
            force_compression: false,
            oci_mediatypes: format == ImageFormat::Oci,
            source_date_epoch: None,
            manifest_annotations: BTreeMap::new(),
            descriptor_annotations: BTreeMap::new(),
            index_annotations: BTreeMap::new(),
            ignored: Vec::new(),
            inline_cache: None,
        }
    }

    /// Parse buildctl-style exporter attributes (`--output type=oci,k=v,…`
    /// minus `type`). `source-date-epoch` may come from the build's
    /// `SOURCE_DATE_EPOCH` build arg.
    pub fn from_attrs(format: ImageFormat, attrs: &BTreeMap<String, String>) -> Result<Self> {
        let mut o = ImageExportOptions::new(format);
        o.dest = Dest::from_attr(attrs.get("dest"));
        for (k, v) in attrs {
            let bad = |reason| Error::InvalidOption {
                key: k.clone(),
                value: v.clone(),
                reason,
            };
            match k.as_str() {
                "dest" | "type" => {}
                INLINE_CACHE_ATTR => {
                    o.inline_cache = Some((INLINE_CACHE_FIELD.to_owned(), v.clone()))
                }
                "name" => {
                    o.names = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "tar" => o.tar = parse_bool(v).ok_or_else(|| bad("expected true or false"))?,
                "compression" => {
                    o.compression = Compression::from_option(v)
                        .ok_or_else(|| bad("expected gzip, zstd or uncompressed"))?
                }
                "compression-level" => {
                    o.compression_level = Some(v.parse().map_err(|_| bad("expected an integer"))?)
                }
                "force-compression" => {
                    o.force_compression =
                        parse_bool(v).ok_or_else(|| bad("expected true or false"))?
                }
                "oci-mediatypes" => {
                    o.oci_mediatypes = parse_bool(v).ok_or_else(|| bad("expected true or false"))?
                }
                "source-date-epoch" => {
                    o.source_date_epoch = if v.is_empty() {
                        None
                    } else {
                        Some(
                            v.parse::<i64>()
                                .ok()
                                .filter(|e| *e >= 0)
                                .ok_or_else(|| bad("expected unix seconds"))?,
                        )
                    }
                }
                // rewrite-timestamp: kiln always clamps layer mtimes to the epoch.
                "rewrite-timestamp" => {}
                _ if k.starts_with("annotation") => match parse_annotation(k) {
                    Some((Some(target), key)) => {
                        let map = match target {
                            "manifest" => &mut o.manifest_annotations,
                            "manifest-descriptor" => &mut o.descriptor_annotations,
                            "index" => &mut o.index_annotations,
                            _ => {
                                o.ignored.push(k.clone());
                                continue;
                            }
                        };
                        map.insert(key.to_owned(), v.clone());
                    }
                    Some((None, key)) => {
                        o.manifest_annotations.insert(key.to_owned(), v.clone());
                    }
                    None => return Err(bad("expected annotation[-TYPE][PLATFORM].KEY")),
                },
                _ => o.ignored.push(k.clone()),
            }
        }
        if let Some(l) = o.compression_level {
            let (lo, hi) = o.compression.level_range();
            if l < lo || l > hi {
                return Err(Error::InvalidOption {
                    key: "compression-level".into(),
                    value: l.to_string(),
                    reason: "out of range for the compression (gzip 0-9, zstd 0-22)",
                });
            }
        }
        if !o.tar && format == ImageFormat::Docker {
            return Err(Error::InvalidOption {
                key: "tar".into(),
                value: "false".into(),
                reason: "the docker exporter only writes tarballs",
            });
        }
        if !o.tar && o.dest == Dest::Stdout {
            return Err(Error::InvalidOption {
                key: "dest".into(),
                value: String::new(),
                reason: "tar=false needs a destination directory",
            });
        }
        Ok(o)
    }
}

/// Split `annotation-TYPE[PLATFORM].KEY` (or `annotation.KEY`) into type and
/// key. A platform qualifier is accepted and ignored: kiln exports one
/// platform per image.
fn parse_annotation(k: &str) -> Option<(Option<&str>, &str)> {
    let rest = k.strip_prefix("annotation")?;
    let (head, key) = rest.split_once('.')?;
    let head = match head.find('[') {
        Some(i) if head.ends_with(']') => &head[..i],
        Some(_) => return None,
        None => head,
    };
    if key.is_empty() {
        return None;
    }
    match head {
        "" => Some((None, key)),
        h => Some((Some(h.strip_prefix('-')?), key)),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Options of the `local` and `tar` exporters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsExportOptions {
    /// Destination dir (`local`) or file (`tar`; stdout by default).
    pub dest: Dest,
    /// Clamp mtimes (tar only).
    pub source_date_epoch: Option<i64>,
}

impl FsExportOptions {
    /// Parse exporter attributes (`dest`, `source-date-epoch`).
    pub fn from_attrs(attrs: &BTreeMap<String, String>) -> Result<Self> {
        let source_date_epoch = match attrs.get("source-date-epoch") {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.parse::<i64>().ok().filter(|e| *e >= 0).ok_or_else(|| {
                Error::InvalidOption {
                    key: "source-date-epoch".into(),
                    value: v.clone(),
                    reason: "expected unix seconds",
                }
            })?),
        };
        Ok(FsExportOptions {
            dest: Dest::from_attr(attrs.get("dest")),
            source_date_epoch,
        })
    }
}

pub(crate) fn ensure_dir(p: &std::path::Path) -> Result<()> {
    if fsutil::lstat(p)?.is_none() {
        fs_err::create_dir_all(p).map_err(Error::io("create destination dir"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    #[test]
    fn special_files_are_written_into_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut w = Dest::Path(fifo.clone()).create().unwrap();
        w.write_all(b"tarball bytes").unwrap();
        w.finish().unwrap();
        assert_eq!(reader.join().unwrap(), b"tarball bytes");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

        // A directory is refused; a file is replaced whole.
        let e = Dest::Path(d.path().to_path_buf()).create().err().unwrap();
        assert!(e.to_string().contains("write a tarball to"), "{e}");
        let f = d.path().join("out.tar");
        std::fs::write(&f, b"old old old").unwrap();
        let mut w = Dest::Path(f.clone()).create().unwrap();
        w.write_all(b"new").unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
    }
}
