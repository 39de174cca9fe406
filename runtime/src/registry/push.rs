//! Pushing images from the content store: blobs (skipping those the
//! registry already has), child manifests of an index, then the tagged
//! manifest or index.

use std::io::Read;

use futures_util::stream;
use kiln_store::{ContentStore, Digest};

use super::manifest::{Descriptor, Parsed, parse};
use super::{Error, ImageRef, RegistryClient, Result};

/// Blobs up to this size are sent in one request; bigger ones are streamed
/// from the store in chunks.
const IN_MEMORY_PUSH: u64 = 8 * 1024 * 1024;
const CHUNK: usize = 4 * 1024 * 1024;

impl RegistryClient {
    /// Push the image or index whose manifest is `manifest` to `r` (its tag,
    /// or its digest when it has no tag). Every blob and child manifest it
    /// names must be in `store`. Returns the manifest's digest.
    pub async fn push(
        &self,
        r: &ImageRef,
        manifest: &[u8],
        store: &ContentStore,
    ) -> Result<Digest> {
        let refs = r.to_string();
        let parsed = parse(&refs, manifest, None)?;
        let client = self.client(r);
        client
            .store_auth_if_needed(r.oci().resolve_registry(), &self.auth(r)?)
            .await;
        match &parsed {
            Parsed::Index { manifests, .. } => {
                for child in manifests {
                    let bytes = read_small(store, r, &child.digest)?;
                    let Parsed::Image {
                        config,
                        layers,
                        media_type,
                    } = parse(&refs, &bytes, Some(&child.media_type))?
                    else {
                        return Err(Error::UnsupportedMediaType {
                            reference: refs,
                            media_type: "nested index".into(),
                        });
                    };
                    self.push_blobs(r, &config, &layers, store).await?;
                    let by_digest = r.oci_by_digest(child.digest.as_str());
                    self.put_manifest(r, &by_digest, bytes, &media_type).await?;
                }
            }
            Parsed::Image { config, layers, .. } => {
                self.push_blobs(r, config, layers, store).await?;
            }
        }
        let media_type = match &parsed {
            Parsed::Index { media_type, .. } | Parsed::Image { media_type, .. } => media_type,
        };
        let digest = Digest::of_bytes(manifest);
        let target = if r.tag().is_some() {
            r.with_tag(r.tag().unwrap_or("latest")).oci().clone()
        } else {
            r.oci_by_digest(digest.as_str())
        };
        self.put_manifest(r, &target, manifest.to_vec(), media_type)
            .await?;
        Ok(digest)
    }

    /// Push the same manifest under more tags (the blobs are already there).
    pub async fn tag(&self, r: &ImageRef, manifest: &[u8], tags: &[String]) -> Result<()> {
        let refs = r.to_string();
        let parsed = parse(&refs, manifest, None)?;
        let media_type = match &parsed {
            Parsed::Index { media_type, .. } | Parsed::Image { media_type, .. } => media_type,
        };
        for t in tags {
            let target = r.with_tag(t);
            self.put_manifest(&target, target.oci(), manifest.to_vec(), media_type)
                .await?;
        }
        Ok(())
    }

    async fn put_manifest(
        &self,
        r: &ImageRef,
        target: &oci_client::Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<()> {
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|_| Error::BadManifestField {
                reference: r.to_string(),
                field: "mediaType",
                value: media_type.to_string(),
            })?;
        self.client(r)
            .push_manifest_raw(target, bytes, content_type)
            .await
            .map_err(Error::registry("push manifest", r))?;
        Ok(())
    }

    async fn push_blobs(
        &self,
        r: &ImageRef,
        config: &Descriptor,
        layers: &[Descriptor],
        store: &ContentStore,
    ) -> Result<()> {
        for desc in layers.iter().chain(std::iter::once(config)) {
            self.push_blob(r, desc, store).await?;
        }
        Ok(())
    }

    /// Upload one blob from the store unless the registry has it already.
    pub async fn push_blob(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        store: &ContentStore,
    ) -> Result<()> {
        let client = self.client(r);
        let oref = r.oci_by_digest(desc.digest.as_str());
        // A failed check (some registries refuse HEAD with a pull-only token
        // on a repository that does not exist yet) just means "upload it".
        match client.blob_exists(&oref, desc.digest.as_str()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(reference = %r, digest = %desc.digest, error = %e, "blob check failed; uploading");
            }
        }
        let store_err = |source| Error::Store {
            reference: r.to_string(),
            digest: desc.digest.clone(),
            source,
        };
        let size = store.size(&desc.digest).map_err(store_err)?;
        if size <= IN_MEMORY_PUSH {
            let data = store.read(&desc.digest).map_err(store_err)?;
            client
                .push_blob(&oref, data, desc.digest.as_str())
                .await
                .map_err(Error::registry("push blob", r))?;
            return Ok(());
        }
        let file = store.open(&desc.digest).map_err(store_err)?;
        let chunks = stream::unfold(Some(file), |state| async move {
            let mut file = state?;
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Some((Err(e.into()), None)),
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            Some((Ok(bytes::Bytes::from(buf)), Some(file)))
        });
        client
            .push_blob_stream(&oref, chunks, desc.digest.as_str(), Some(size))
            .await
            .map_err(Error::registry("push blob", r))?;
        Ok(())
    }
}

/// A child manifest from the store, bounded.
fn read_small(store: &ContentStore, r: &ImageRef, digest: &Digest) -> Result<Vec<u8>> {
    let store_err = |source| Error::Store {
        reference: r.to_string(),
        digest: digest.clone(),
        source,
    };
    let size = store.size(digest).map_err(store_err)?;
    if size > 4 * 1024 * 1024 {
        return Err(Error::TooLarge {
            reference: r.to_string(),
            what: format!("manifest {digest}"),
            limit: 4 * 1024 * 1024,
        });
    }
    store.read(digest).map_err(store_err)
}
