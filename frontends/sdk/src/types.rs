//! The plain data types of the gateway, independent of the bindings.

use std::fmt;

/// A 1-based, inclusive line range in a named input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// File name as the user knows it, e.g. `Dockerfile`.
    pub file: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
}

impl Location {
    /// A single line of `file`.
    pub fn line(file: impl Into<String>, line: u32) -> Self {
        Location {
            file: file.into(),
            start_line: line,
            end_line: line,
        }
    }
}

/// An error a frontend reports to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendError {
    /// What went wrong, in one sentence.
    pub message: String,
    /// Where in the user's input, when known.
    pub location: Option<Location>,
}

impl FrontendError {
    /// An error without a location.
    pub fn new(message: impl Into<String>) -> Self {
        FrontendError {
            message: message.into(),
            location: None,
        }
    }

    /// An error pointing at a location.
    pub fn at(message: impl Into<String>, location: Location) -> Self {
        FrontendError {
            message: message.into(),
            location: Some(location),
        }
    }
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) if l.start_line == l.end_line => {
                write!(f, "{}:{}: {}", l.file, l.start_line, self.message)
            }
            Some(l) => write!(
                f,
                "{}:{}-{}: {}",
                l.file, l.start_line, l.end_line, self.message
            ),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FrontendError {}

impl From<kiln_llb::builder::BuildError> for FrontendError {
    fn from(e: kiln_llb::builder::BuildError) -> Self {
        FrontendError::new(e.to_string())
    }
}

/// A target platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, …
    pub variant: Option<String>,
}

impl Platform {
    /// The platform as `os/arch[/variant]`.
    pub fn format(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?.to_string();
        let architecture = it.next().filter(|s| !s.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Platform {
            os,
            architecture,
            variant,
        })
    }
}

/// One entry of [`crate::Gateway::read_dir`] or [`crate::Gateway::stat_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Path, relative to the directory read (or the path asked for).
    pub path: String,
    /// Unix mode bits including the file type.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Symlink target, empty otherwise.
    pub linkname: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl FileStat {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// What [`crate::Gateway::resolve_image_config`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    /// `name@sha256:…`.
    pub canonical_ref: String,
    /// Manifest digest.
    pub digest: String,
    /// The image config JSON.
    pub config: Vec<u8>,
}

/// The result of a build: handles (one, or one per platform) and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildResult {
    /// `(platform, handle)` pairs; platform is empty for a single result.
    pub refs: Vec<(String, String)>,
    /// Metadata such as `containerimage.config`.
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl BuildResult {
    /// A result with one handle.
    pub fn single(handle: String) -> Self {
        BuildResult {
            refs: vec![(String::new(), handle)],
            metadata: Vec::new(),
        }
    }

    /// Attach the image config JSON (`containerimage.config`).
    pub fn with_image_config(mut self, config: Vec<u8>) -> Self {
        self.metadata
            .push(("containerimage.config".to_string(), config));
        self
    }

    /// Attach a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.metadata.push((key.into(), value));
        self
    }
}
