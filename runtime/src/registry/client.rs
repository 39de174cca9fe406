//! [`RegistryClient`]: resolve and pull.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt, stream};
use kiln_store::{ContentStore, Digest};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::manifest::{Descriptor, Parsed, media_types, parse, select_platform};
use super::reference::is_loopback_host;
use super::{Credentials, Error, ImageRef, Platform, Result, docker_config_path, load_credentials};

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registry hosts (`host` or `host:port`) spoken to over plain HTTP, in
    /// addition to loopback ones (`localhost`, `127.0.0.0/8`, `::1`).
    pub insecure: Vec<String>,
    /// The Docker config holding credentials; `None` uses
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Credentials given directly, by registry host; they win over the
    /// Docker config.
    pub credentials: HashMap<String, Credentials>,
    /// Blob transfers in flight at once, per image.
    pub max_concurrent: usize,
    /// Largest manifest or index accepted.
    pub max_manifest_size: u64,
    /// Largest image config accepted.
    pub max_config_size: u64,
    /// Give up connecting after this long.
    pub connect_timeout: std::time::Duration,
    /// Give up when a response stalls (no bytes) this long.
    pub read_timeout: std::time::Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            docker_config: None,
            credentials: HashMap::new(),
            max_concurrent: 4,
            max_manifest_size: 4 * 1024 * 1024,
            max_config_size: 16 * 1024 * 1024,
            connect_timeout: std::time::Duration::from_secs(30),
            read_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// A reference resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// The reference pinned to [`digest`](Self::digest).
    pub reference: ImageRef,
    /// What the tag points at: the index digest for multi-platform images,
    /// else the manifest digest. Pin with this.
    pub digest: Digest,
    /// The index bytes, when `digest` is an index.
    pub index: Option<Vec<u8>>,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The platform manifest's bytes, exactly as served.
    pub manifest: Vec<u8>,
    /// Its media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The config descriptor.
    pub config: Descriptor,
    /// Layer descriptors, bottom first.
    pub layers: Vec<Descriptor>,
}

/// What the frontend gateway's `resolve_image_config` returns.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// The reference pinned to `digest`.
    pub reference: ImageRef,
    /// What the tag points at (index or manifest digest).
    pub digest: Digest,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The image config JSON, verified against its digest.
    pub config: Vec<u8>,
}

/// An image whose manifest, config and layers are all in the content store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Resolution details (digests, descriptors).
    pub resolved: ResolvedManifest,
    /// The config JSON.
    pub config: Vec<u8>,
}

/// Pull progress, reported from the pulling task. All methods default to
/// doing nothing.
pub trait PullProgress: Sync {
    /// A layer download starts (`cached`: already in the store, skipped).
    fn layer_started(&self, _layer: &Descriptor, _cached: bool) {}
    /// `total` bytes of `layer` have arrived so far.
    fn layer_bytes(&self, _layer: &Descriptor, _total: u64) {}
    /// The layer is verified and stored.
    fn layer_done(&self, _layer: &Descriptor) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl PullProgress for NoProgress {}

/// An OCI distribution client. Cheap to share (`Arc`); safe to use from many
/// tasks at once. Requires a tokio runtime.
pub struct RegistryClient {
    opts: RegistryOptions,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Credentials looked up once per registry host (a credential helper
    /// is a process spawn).
    auths: Mutex<HashMap<String, RegistryAuth>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.opts.insecure)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryClient {
    fn default() -> Self {
        Self::new(RegistryOptions::default())
    }
}

impl RegistryClient {
    /// A client with these options.
    pub fn new(opts: RegistryOptions) -> Self {
        Self {
            opts,
            clients: Mutex::new(HashMap::new()),
            auths: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        is_loopback_host(registry) || self.opts.insecure.iter().any(|h| h == registry)
    }

    /// One `oci-client` per registry host, so that token caches and the
    /// http/https choice stay per host.
    pub(crate) fn client(&self, r: &ImageRef) -> Arc<Client> {
        let host = r.oci().resolve_registry().to_string();
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(host.clone())
            .or_insert_with(|| {
                let protocol = if self.is_plain_http(r.registry()) {
                    ClientProtocol::HttpsExcept(vec![host.clone(), r.registry().to_string()])
                } else {
                    ClientProtocol::Https
                };
                Arc::new(Client::new(ClientConfig {
                    protocol,
                    max_concurrent_download: self.opts.max_concurrent,
                    max_concurrent_upload: self.opts.max_concurrent,
                    connect_timeout: Some(self.opts.connect_timeout),
                    read_timeout: Some(self.opts.read_timeout),
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// The auth to present to `r`'s registry.
    pub(crate) fn auth(&self, r: &ImageRef) -> Result<RegistryAuth> {
        let host = r.registry().to_string();
        if let Some(a) = self
            .auths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
        {
            return Ok(a.clone());
        }
        let creds = match self.opts.credentials.get(r.registry()) {
            Some(c) => Some(c.clone()),
            None => match self.opts.docker_config.clone().or_else(docker_config_path) {
                Some(path) => load_credentials(&path, r.registry())?,
                None => None,
            },
        };
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        self.auths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host, auth.clone());
        Ok(auth)
    }

    /// Fetch a manifest or index by tag or digest and check it: size bound,
    /// and the digest when one was asked for.
    async fn fetch_manifest(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        r: &ImageRef,
        by_digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest)> {
        let oref = match by_digest {
            Some(d) => r.oci_by_digest(d.as_str()),
            None => r.oci().clone(),
        };
        let (bytes, _) = client
            .pull_manifest_raw(&oref, auth, media_types::ACCEPTED_MANIFESTS)
            .await
            .map_err(Error::registry("resolve", r))?;
        if bytes.len() as u64 > self.opts.max_manifest_size {
            return Err(Error::TooLarge {
                reference: r.to_string(),
                what: "manifest".into(),
                limit: self.opts.max_manifest_size,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        let expected = by_digest
            .map(Digest::to_string)
            .or_else(|| r.digest().map(str::to_string));
        if let Some(exp) = expected
            && exp != actual.as_str()
        {
            return Err(Error::DigestMismatch {
                reference: r.to_string(),
                what: "manifest",
                expected: exp,
                actual: actual.to_string(),
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Resolve `r` to the manifest for `platform` (choosing from an index
    /// when the reference points at one).
    pub async fn resolve(&self, r: &ImageRef, platform: &Platform) -> Result<ResolvedManifest> {
        let client = self.client(r);
        let auth = self.auth(r)?;
        let (top, top_digest) = self.fetch_manifest(&client, &auth, r, None).await?;
        let refs = r.to_string();
        let (index, manifest, manifest_digest, parsed) = match parse(&refs, &top, None)? {
            Parsed::Index { manifests, .. } => {
                let chosen = select_platform(&refs, &manifests, platform)?.clone();
                if !is_manifest_type(&chosen.media_type) {
                    return Err(Error::UnsupportedMediaType {
                        reference: refs,
                        media_type: chosen.media_type,
                    });
                }
                let (bytes, digest) = self
                    .fetch_manifest(&client, &auth, r, Some(&chosen.digest))
                    .await?;
                if bytes.len() as u64 != chosen.size {
                    return Err(Error::Truncated {
                        reference: refs,
                        what: format!("manifest {}", chosen.digest),
                        got: bytes.len() as u64,
                        want: chosen.size,
                    });
                }
                let parsed = parse(&refs, &bytes, Some(&chosen.media_type))?;
                (Some(top), bytes, digest, parsed)
            }
            parsed @ Parsed::Image { .. } => (None, top, top_digest.clone(), parsed),
        };
        let Parsed::Image {
            media_type,
            config,
            layers,
        } = parsed
        else {
            return Err(Error::UnsupportedMediaType {
                reference: refs,
                media_type: "nested index".into(),
            });
        };
        Ok(ResolvedManifest {
            reference: r.with_digest(top_digest.as_str()),
            digest: top_digest,
            index,
            manifest_digest,
            manifest,
            media_type,
            config,
            layers,
        })
    }

    /// Resolve `r` for `platform` and fetch its image config (for the
    /// frontend gateway and the image source op).
    pub async fn resolve_image_config(
        &self,
        r: &ImageRef,
        platform: &Platform,
    ) -> Result<ImageConfig> {
        let resolved = self.resolve(r, platform).await?;
        let config = self
            .fetch_blob_bytes(r, &resolved.config, self.opts.max_config_size, "config")
            .await?;
        Ok(ImageConfig {
            reference: resolved.reference,
            digest: resolved.digest,
            manifest_digest: resolved.manifest_digest,
            config,
        })
    }

    /// Fetch a small blob into memory, bounded by `limit` and its
    /// descriptor, and verified against its digest.
    pub async fn fetch_blob_bytes(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge {
                reference: r.to_string(),
                what: format!("{what} {}", desc.digest),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(desc.size.min(1 << 20) as usize);
        self.stream_blob(r, desc, what, |chunk| {
            buf.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        let actual = Digest::of_bytes(&buf);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                reference: r.to_string(),
                what,
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(buf)
    }

    /// Stream a blob's bytes to `sink`, refusing more (or fewer) bytes than
    /// the descriptor announces.
    async fn stream_blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        what: &'static str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let client = self.client(r);
        client
            .store_auth_if_needed(r.oci().resolve_registry(), &self.auth(r)?)
            .await;
        let oref = r.oci_by_digest(desc.digest.as_str());
        let mut stream = client
            .pull_blob_stream(&oref, desc.digest.as_str())
            .await
            .map_err(Error::registry("pull blob", r))?;
        let mut got = 0u64;
        let transfer = |e: std::io::Error| Error::Registry {
            op: "pull blob",
            reference: format!("{r} ({what} {})", desc.digest),
            status: None,
            answer: e.to_string(),
        };
        while let Some(chunk) = stream.try_next().await.map_err(transfer)? {
            got += chunk.len() as u64;
            if got > desc.size {
                return Err(Error::TooLarge {
                    reference: r.to_string(),
                    what: format!("{what} {}", desc.digest),
                    limit: desc.size,
                });
            }
            sink(&chunk).map_err(transfer)?;
        }
        if got != desc.size {
            return Err(Error::Truncated {
                reference: r.to_string(),
                what: format!("{what} {}", desc.digest),
                got,
                want: desc.size,
            });
        }
        Ok(())
    }

    /// Download one blob into the store (skipped when already present). The
    /// store verifies the digest before the blob becomes visible.
    pub async fn fetch_blob_to_store(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        what: &'static str,
        store: &ContentStore,
    ) -> Result<()> {
        self.blob_to_store(r, desc, what, store, &NoProgress).await
    }

    async fn blob_to_store(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        what: &'static str,
        store: &ContentStore,
        progress: &dyn PullProgress,
    ) -> Result<()> {
        if store.exists(&desc.digest) {
            progress.layer_started(desc, true);
            return Ok(());
        }
        progress.layer_started(desc, false);
        let store_err = |source| Error::Store {
            reference: r.to_string(),
            digest: desc.digest.clone(),
            source,
        };
        let mut ingest = store.writer().map_err(store_err)?;
        let mut total = 0u64;
        self.stream_blob(r, desc, what, |chunk| {
            total += chunk.len() as u64;
            progress.layer_bytes(desc, total);
            ingest.write_all(chunk)
        })
        .await?;
        ingest.commit(Some(&desc.digest)).map_err(|e| match e {
            kiln_store::Error::DigestMismatch { expected, actual } => Error::DigestMismatch {
                reference: r.to_string(),
                what,
                expected: expected.to_string(),
                actual: actual.to_string(),
            },
            other => store_err(other),
        })?;
        progress.layer_done(desc);
        Ok(())
    }

    /// Pull `r` for `platform` into `store`: index (if any), manifest,
    /// config and layers, layers concurrently. Layers with media types the
    /// store cannot unpack are refused before anything is downloaded.
    pub async fn pull(
        &self,
        r: &ImageRef,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<PulledImage> {
        self.pull_with_progress(r, platform, store, &NoProgress)
            .await
    }

    /// [`pull`](Self::pull), reporting layer progress to `progress`.
    pub async fn pull_with_progress(
        &self,
        r: &ImageRef,
        platform: &Platform,
        store: &ContentStore,
        progress: &dyn PullProgress,
    ) -> Result<PulledImage> {
        let resolved = self.resolve(r, platform).await?;
        for l in &resolved.layers {
            if !media_types::LAYERS.contains(&l.media_type.as_str()) {
                return Err(Error::UnsupportedMediaType {
                    reference: r.to_string(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        let config = self
            .fetch_blob_bytes(r, &resolved.config, self.opts.max_config_size, "config")
            .await?;
        let put = |bytes: &[u8], digest: &Digest| -> Result<()> {
            store
                .write_bytes(bytes, Some(digest))
                .map(|_| ())
                .map_err(|source| Error::Store {
                    reference: r.to_string(),
                    digest: digest.clone(),
                    source,
                })
        };
        // The same blob can appear twice in one image (e.g. empty layers).
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<&Descriptor> = resolved
            .layers
            .iter()
            .filter(|l| seen.insert(l.digest.clone()))
            .collect();
        // Futures built up front (not in a stream closure) keep this future
        // `Send`: a closure over borrowed descriptors trips rustc's
        // higher-ranked lifetime check.
        let downloads: Vec<_> = unique
            .into_iter()
            .map(|l| self.blob_to_store(r, l, "layer", store, progress))
            .collect();
        stream::iter(downloads)
            .buffer_unordered(self.opts.max_concurrent.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        put(&config, &resolved.config.digest)?;
        put(&resolved.manifest, &resolved.manifest_digest)?;
        if let Some(index) = &resolved.index {
            put(index, &resolved.digest)?;
        }
        Ok(PulledImage { resolved, config })
    }
}

fn is_manifest_type(m: &str) -> bool {
    m == media_types::OCI_MANIFEST || m == media_types::DOCKER_MANIFEST || m.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Callers spawn these futures on multi-threaded runtimes.
    #[test]
    fn futures_are_send() {
        let c = RegistryClient::default();
        let r: ImageRef = "127.0.0.1:1/x".parse().unwrap();
        let p = Platform::default();
        let d = tempfile::tempdir().unwrap();
        let store = ContentStore::new(d.path()).unwrap();
        assert_send(&c.pull(&r, &p, &store));
        assert_send(&c.resolve_image_config(&r, &p));
        assert_send(&c.push(&r, b"{}", &store));
        assert!(c.is_plain_http("127.0.0.1:1") && !c.is_plain_http("ghcr.io"));
    }
}
