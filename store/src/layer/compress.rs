//! Layer compression: gzip (reproducible header), zstd, or none; and
//! detection of a stream's compression by its magic bytes.

use std::io::{self, Cursor, Read, Write};

use crate::error::{Error, Result};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    Uncompressed,
    /// gzip (the default for images).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Parse an exporter's `compression=` value.
    pub fn from_option(s: &str) -> Option<Self> {
        match s {
            "uncompressed" => Some(Compression::Uncompressed),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The option spelling (`uncompressed`, `gzip`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The default level kiln uses when none is given.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Uncompressed => 0,
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }

    /// The valid range of `compression-level`.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Compression::Uncompressed => (0, 0),
            Compression::Gzip => (0, 9),
            Compression::Zstd => (0, 22),
        }
    }

    /// Identify a compression from an OCI/Docker layer media type.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        if mt.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with(".tar") || mt.ends_with("diff.tar") {
            Some(Compression::Uncompressed)
        } else {
            None
        }
    }
}

/// A compressing writer; [`Compressor::finish`] writes the trailer and returns
/// the inner writer.
pub enum Compressor<W: Write> {
    /// Pass-through.
    None(W),
    /// gzip with an empty header (no name, mtime 0) so output is reproducible.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd, single-threaded so output is reproducible.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// Start compressing into `w`. `level` is clamped to the valid range.
    pub fn new(w: W, c: Compression, level: Option<i32>) -> io::Result<Self> {
        let (lo, hi) = c.level_range();
        let level = level.unwrap_or(c.default_level()).clamp(lo, hi);
        Ok(match c {
            Compression::Uncompressed => Compressor::None(w),
            Compression::Gzip => Compressor::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::new(level as u32)),
            ),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, level)?),
        })
    }

    /// Flush the compressed trailer and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// What the first bytes of a stream say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A compression kiln reads.
    Known(Compression),
    /// bzip2 (not supported).
    Bzip2,
    /// xz (not supported).
    Xz,
}

/// Detect by magic bytes; anything unrecognised counts as uncompressed.
pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Known(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Known(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Detected::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Detected::Xz
    } else {
        Detected::Known(Compression::Uncompressed)
    }
}

/// Wrap `r` in the decompressor its magic bytes call for. Returns the
/// detected compression too.
pub fn decompress<'a>(mut r: impl Read + 'a) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = Vec::with_capacity(6);
    (&mut r)
        .take(6)
        .read_to_end(&mut head)
        .map_err(Error::archive("read archive header"))?;
    let c = match detect(&head) {
        Detected::Known(c) => c,
        Detected::Bzip2 => return Err(Error::UnsupportedCompression("bzip2")),
        Detected::Xz => return Err(Error::UnsupportedCompression("xz")),
    };
    let joined = Cursor::new(head).chain(r);
    Ok((
        c,
        match c {
            Compression::Uncompressed => Box::new(joined),
            // Multi-member gzip streams are valid layers too.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(joined)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(joined)
                    .map_err(Error::archive("start zstd decoder"))?,
            ),
        },
    ))
}

/// Whether the first 512 bytes look like a tar header (valid checksum).
pub fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block[..512].iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .skip_while(|b| **b == b' ' || **b == 0)
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .map(|b| *b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(&text, 8) else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == want
}

/// Like [`decompress`] but for any archive `ADD` accepts: also bzip2 and
/// xz (xz is decoded into an unnamed temp file first, as its decoder only
/// pushes). Layers must use [`decompress`]: OCI layers are gzip, zstd or
/// plain.
pub fn decompress_archive<'a>(mut r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(6);
    (&mut r)
        .take(6)
        .read_to_end(&mut head)
        .map_err(Error::archive("read archive header"))?;
    let joined = Cursor::new(head.clone()).chain(r);
    match detect(&head) {
        Detected::Bzip2 => Ok(Box::new(bzip2::read::MultiBzDecoder::new(joined))),
        Detected::Xz => {
            let mut tmp = tempfile::tempfile().map_err(Error::io("create temp file for xz"))?;
            let mut input = io::BufReader::new(joined);
            lzma_rs::xz_decompress(&mut input, &mut tmp).map_err(|e| Error::Archive {
                what: "decode xz",
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            io::Seek::rewind(&mut tmp).map_err(Error::io("rewind xz temp file"))?;
            Ok(Box::new(io::BufReader::new(tmp)))
        }
        Detected::Known(_) => Ok(decompress(joined)?.1),
    }
}

/// Sniff whether `r` is a (possibly gzip/zstd/bzip2/xz-compressed) tar
/// archive, as `ADD` must decide for a local file. Returns what was found.
pub fn sniff_archive(mut r: impl Read) -> Result<Option<Detected>> {
    let mut head = Vec::with_capacity(6);
    (&mut r)
        .take(6)
        .read_to_end(&mut head)
        .map_err(Error::archive("read archive header"))?;
    let found = detect(&head);
    let joined = Cursor::new(head).chain(r);
    // Only the first block is needed; for xz that still decodes everything,
    // which is acceptable for a local ADD source.
    let mut d = match decompress_archive(joined) {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    let mut block = Vec::with_capacity(512);
    if d.by_ref().take(512).read_to_end(&mut block).is_err() {
        return Ok(None);
    }
    Ok(is_tar_header(&block).then_some(found))
}
