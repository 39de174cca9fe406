//! Digests and hashing helpers.
//!
//! The digest type is `kiln_llb::Digest` (`sha256:<64 lowercase hex>`); this
//! module adds the store's parse helpers and hashing readers/writers.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

pub use kiln_llb::{Digest, DigestParseError};

/// Parse `sha256:<hex>` into a [`Digest`], as this crate's error.
pub fn parse(s: &str) -> Result<Digest> {
    s.parse().map_err(|_| Error::InvalidDigest(s.to_owned()))
}

/// The digest whose hex part is `hex`.
pub fn from_sha256_hex(hex: &str) -> Result<Digest> {
    parse(&format!("sha256:{hex}"))
}

fn from_hasher(h: Sha256) -> Digest {
    // A fresh sha256 always formats as a valid digest.
    format!("sha256:{}", hex::encode(h.finalize()))
        .parse()
        .unwrap_or_else(|_| Digest::of_bytes(b""))
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The inner writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Finish: the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let d = from_hasher(self.hasher);
        (self.inner, d, self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: io::Read> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Read the rest of the stream (so the digest covers all of it), then
    /// return the digest and byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((from_hasher(self.hasher), self.len))
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
    }
}
