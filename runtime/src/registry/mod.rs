//! OCI distribution client: resolve tags, pick a platform, pull verified
//! blobs into the content store, push images.
//!
//! Built on `oci-client` (token and basic auth, chunked uploads) with kiln's
//! own policy on top: reference normalisation ([`ImageRef`]), plain HTTP for
//! loopback and configured insecure registries, credentials from the Docker
//! `config.json`, platform choice from an index, and a check of every byte a
//! registry sends (sizes bounded by the descriptors, digests verified before
//! anything becomes visible in the store). Registry replies are untrusted.
//!
//! Layer 1: uses `kiln-store`'s [`ContentStore`](kiln_store::ContentStore)
//! for blobs, nothing above it.

mod auth;
mod client;
mod error;
mod manifest;
mod push;
mod reference;

pub use auth::{Credentials, docker_config_path, load_credentials, load_credentials_with_helpers};
pub use client::{
    ImageConfig, NoProgress, PullProgress, PulledImage, RegistryClient, RegistryOptions,
    ResolvedManifest,
};
pub use error::{Error, Result};
pub use manifest::{Descriptor, media_types};
pub use reference::{ImageRef, Platform};
