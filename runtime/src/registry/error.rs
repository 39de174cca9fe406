//! The registry client's error type.

use std::path::PathBuf;

use kiln_store::Digest;

/// Result alias for the registry client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a registry. Each variant names
/// the image reference; registry answers are quoted by the source error
/// (status and body excerpt).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a valid image reference.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// What was given.
        input: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Not a valid platform string.
    #[error("invalid platform {input:?}: expected os/arch[/variant]")]
    InvalidPlatform {
        /// What was given.
        input: String,
    },
    /// A request to the registry failed.
    #[error("{op} {reference}: registry answered{}: {answer}", status_text(status))]
    Registry {
        /// What was being done ("resolve", "pull blob", "push manifest"...).
        op: &'static str,
        /// The image.
        reference: String,
        /// The HTTP status, when the failure was an HTTP answer.
        status: Option<u16>,
        /// The registry's answer (status, error envelope or body excerpt),
        /// or the transport error.
        answer: String,
    },
    /// The registry sent something other than what was asked for.
    #[error("{what} of {reference} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The image.
        reference: String,
        /// "manifest", "config", "layer"...
        what: &'static str,
        /// Expected digest.
        expected: String,
        /// Digest of the received bytes.
        actual: String,
    },
    /// A blob was larger than its descriptor or a limit.
    #[error("{what} of {reference} is larger than {limit} bytes")]
    TooLarge {
        /// The image.
        reference: String,
        /// What.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// A blob ended before its descriptor's size.
    #[error("{what} of {reference} is truncated: got {got} of {want} bytes")]
    Truncated {
        /// The image.
        reference: String,
        /// What.
        what: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        want: u64,
    },
    /// A manifest or index that does not parse.
    #[error("invalid {what} for {reference}")]
    InvalidManifest {
        /// The image.
        reference: String,
        /// "manifest", "index"...
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest field that is not acceptable (bad digest, negative size...).
    #[error("bad {field} in the manifest of {reference}: {value:?}")]
    BadManifestField {
        /// The image.
        reference: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A media type kiln cannot handle (schema 1, unknown artifacts...).
    #[error("unsupported media type {media_type:?} for {reference}")]
    UnsupportedMediaType {
        /// The image.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// The index has no manifest for the requested platform.
    #[error("no image for platform {platform} in {reference} (available: {})", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// Requested platform.
        platform: String,
        /// What the index offers.
        available: Vec<String>,
    },
    /// The Docker config file could not be read or parsed.
    #[error("cannot read registry credentials from {}", path.display())]
    DockerConfig {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content store refused a blob.
    #[error("cannot store {digest} of {reference}")]
    Store {
        /// The image.
        reference: String,
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: kiln_store::Error,
    },
}

impl Error {
    /// Wrap an `oci-client` failure, keeping the status and a bounded
    /// excerpt of the registry's answer.
    pub(crate) fn registry(
        op: &'static str,
        reference: &impl std::fmt::Display,
    ) -> impl FnOnce(oci_client::errors::OciDistributionError) -> Self {
        let reference = reference.to_string();
        move |e| {
            use oci_client::errors::OciDistributionError as E;
            let status = match &e {
                E::ServerError { code, .. } => Some(*code),
                E::UnauthorizedError { .. } => Some(401),
                E::AuthenticationFailure(_) => Some(401),
                E::ImageManifestNotFoundError(_) => Some(404),
                E::RequestError(r) => r.status().map(|s| s.as_u16()),
                // The distribution spec fixes the status of each error code;
                // oci-client keeps only the envelope.
                E::RegistryError { envelope, .. } => envelope
                    .errors
                    .first()
                    .map(|err| envelope_status(&err.code)),
                _ => None,
            };
            Error::Registry {
                op,
                reference,
                status,
                answer: excerpt(&error_chain(&e)),
            }
        }
    }

    /// The HTTP status of a registry failure, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } => *status,
            _ => None,
        }
    }
}

fn status_text(status: &Option<u16>) -> String {
    status.map(|s| format!(" HTTP {s}")).unwrap_or_default()
}

fn envelope_status(code: &oci_client::errors::OciErrorCode) -> u16 {
    use oci_client::errors::OciErrorCode as C;
    match code {
        C::BlobUnknown
        | C::BlobUploadUnknown
        | C::ManifestUnknown
        | C::NameUnknown
        | C::NotFound => 404,
        C::Unauthorized => 401,
        C::Denied => 403,
        C::Toomanyrequests => 429,
        C::Unsupported => 405,
        _ => 400,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Shortened so a huge HTML error page stays readable.
fn excerpt(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
