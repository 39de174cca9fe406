//! Frontends distributed through OCI registries.
//!
//! A frontend artifact is an OCI image manifest with
//! `artifactType: application/vnd.kiln.frontend.v1`, the empty config
//! descriptor, and exactly one layer: the component, with media type
//! `application/vnd.kiln.frontend.component.v1+wasm`. The manifest
//! annotation `dev.kiln.gateway.version` names the `kiln:gateway` version the
//! component was built against. `oras push --artifact-type
//! application/vnd.kiln.frontend.v1 REF frontend.wasm:application/vnd.kiln.frontend.component.v1+wasm`
//! produces the same shape.
//!
//! Pulled components land in the content store; the manifest digest a
//! reference resolved to is remembered under `<root>/frontends/refs/`, so a
//! reference pinned by digest, or one seen before, loads with the registry
//! unreachable.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kiln_runtime::registry::{Descriptor, ImageRef, Platform, RegistryClient};
use kiln_store::{ContentStore, Digest};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `artifactType` of a frontend manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.frontend.v1";
/// Media type of the component layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.kiln.frontend.component.v1+wasm";
/// Manifest annotation with the gateway version.
pub const VERSION_ANNOTATION: &str = "dev.kiln.gateway.version";
/// The OCI empty config.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Largest component accepted from a registry.
const MAX_COMPONENT: u64 = 256 << 20;

/// Whether `s` looks like a registry reference rather than a path or a
/// built-in name.
pub fn looks_like_reference(s: &str) -> bool {
    if s.starts_with('/') || s.starts_with('.') || s.ends_with(".wasm") || Path::new(s).exists() {
        return false;
    }
    let first = s.split('/').next().unwrap_or("");
    s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost")
        || s.contains("@sha256:")
}

/// The manifest for a component, and its bytes.
pub fn manifest_for(wasm: &[u8]) -> Vec<u8> {
    let layer = Digest::of_bytes(wasm);
    let config = Digest::of_bytes(EMPTY_CONFIG);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": config.to_string(),
            "size": EMPTY_CONFIG.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer.to_string(),
            "size": wasm.len(),
            "annotations": { "org.opencontainers.image.title": "frontend.wasm" },
        }],
        "annotations": { VERSION_ANNOTATION: super::GATEWAY_VERSION },
    });
    serde_json::to_vec(&m).expect("JSON of plain values")
}

/// Publish a component under `reference`. Returns the manifest digest.
pub async fn push(
    registry: &RegistryClient,
    store: &ContentStore,
    wasm: &[u8],
    reference: &str,
) -> anyhow::Result<Digest> {
    let r: ImageRef = reference
        .parse()
        .with_context(|| format!("invalid reference {reference:?}"))?;
    store
        .write_bytes(wasm, None)
        .context("storing the component")?;
    store
        .write_bytes(EMPTY_CONFIG, None)
        .context("storing the empty config")?;
    let manifest = manifest_for(wasm);
    store
        .write_bytes(&manifest, None)
        .context("storing the manifest")?;
    let digest = registry
        .push(&r, &manifest, store)
        .await
        .with_context(|| format!("pushing frontend to {reference}"))?;
    Ok(digest)
}

fn ref_cache(cache_dir: &Path, reference: &str) -> PathBuf {
    cache_dir
        .join("refs")
        .join(hex::encode(Sha256::digest(reference.as_bytes())))
}

/// Fetch the component a reference names: from the registry, or from what an
/// earlier pull left in the store when the registry is unreachable.
/// Returns the component bytes and how they were found.
pub async fn pull(
    registry: &RegistryClient,
    store: &ContentStore,
    cache_dir: &Path,
    reference: &str,
) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let r: ImageRef = reference
        .parse()
        .with_context(|| format!("invalid frontend reference {reference:?}"))?;
    let remembered = ref_cache(cache_dir, reference);

    // A digest-pinned reference whose manifest is in the store needs no
    // registry at all.
    if let Some(d) = r.digest() {
        let d: Digest = d
            .parse()
            .with_context(|| format!("bad digest in {reference}"))?;
        if store.exists(&d) {
            let manifest = store.read(&d)?;
            let wasm = component_from_manifest(store, &manifest, reference)?;
            return Ok((wasm, "cached"));
        }
    }

    match registry.resolve(&r, &Platform::host()).await {
        Ok(resolved) => {
            if let Some(want) = r.digest()
                && resolved.manifest_digest.as_str() != want
                && resolved.digest.as_str() != want
            {
                bail!(
                    "frontend {reference}: the registry served manifest {} instead of {want}",
                    resolved.manifest_digest
                );
            }
            let layer = check_artifact(&resolved.manifest, reference)?;
            let wasm = if store.exists(&layer.digest) {
                store.read(&layer.digest)?
            } else {
                let bytes = registry
                    .fetch_blob_bytes(&r, &layer, MAX_COMPONENT, "frontend component")
                    .await
                    .with_context(|| format!("pulling frontend {reference}"))?;
                store
                    .write_bytes(&bytes, Some(&layer.digest))
                    .with_context(|| format!("frontend {reference}: component digest mismatch"))?;
                bytes
            };
            store.write_bytes(&resolved.manifest, Some(&resolved.manifest_digest))?;
            // Kept through `kiln prune`, for offline rebuilds.
            store.pin(
                &format!("frontend {reference}"),
                &[resolved.manifest_digest.clone(), layer.digest.clone()],
            )?;
            if let Some(parent) = remembered.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&remembered, resolved.manifest_digest.as_str())?;
            Ok((wasm, "pulled"))
        }
        Err(e) => {
            // Offline: use the manifest this reference resolved to last time.
            let Ok(d) = std::fs::read_to_string(&remembered) else {
                return Err(anyhow::Error::new(e).context(format!("pulling frontend {reference}")));
            };
            let d: Digest = d
                .trim()
                .parse()
                .context("corrupt frontend reference cache")?;
            let manifest = store
                .read(&d)
                .with_context(|| format!("frontend {reference}: cached manifest {d} is gone"))?;
            let wasm = component_from_manifest(store, &manifest, reference)?;
            Ok((wasm, "cached (registry unreachable)"))
        }
    }
}

fn component_from_manifest(
    store: &ContentStore,
    manifest: &[u8],
    reference: &str,
) -> anyhow::Result<Vec<u8>> {
    let layer = check_artifact(manifest, reference)?;
    let wasm = store.read(&layer.digest).with_context(|| {
        format!(
            "frontend {reference}: component {} not in the store",
            layer.digest
        )
    })?;
    if Digest::of_bytes(&wasm) != layer.digest {
        bail!(
            "frontend {reference}: stored component does not match digest {}",
            layer.digest
        );
    }
    Ok(wasm)
}

/// Check that a manifest is a kiln frontend artifact of a compatible
/// version, and return its component layer.
pub fn check_artifact(manifest: &[u8], reference: &str) -> anyhow::Result<Descriptor> {
    let v: Value = serde_json::from_slice(manifest)
        .with_context(|| format!("frontend {reference}: manifest is not JSON"))?;
    let layers = v["layers"].as_array().cloned().unwrap_or_default();
    let wasm_layers: Vec<&Value> = layers
        .iter()
        .filter(|l| {
            let mt = l["mediaType"].as_str().unwrap_or("");
            mt == LAYER_MEDIA_TYPE || mt == "application/wasm"
        })
        .collect();
    let [layer] = wasm_layers.as_slice() else {
        let artifact_type = v["artifactType"].as_str().unwrap_or("(none)");
        bail!(
            "{reference} is not a kiln frontend: expected one layer of media type \
             {LAYER_MEDIA_TYPE} (artifact type {ARTIFACT_TYPE}), found artifact type \
             {artifact_type} with {} layer(s)",
            layers.len()
        );
    };
    if let Some(version) = v["annotations"][VERSION_ANNOTATION].as_str() {
        super::check_version_compatible(version)
            .with_context(|| format!("frontend {reference}"))?;
    }
    let digest: Digest = layer["digest"]
        .as_str()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("frontend {reference}: bad layer digest"))?;
    let size = layer["size"].as_u64().unwrap_or(0);
    if size > MAX_COMPONENT {
        bail!(
            "frontend {reference}: component is {size} bytes, over the {MAX_COMPONENT}-byte limit"
        );
    }
    Ok(Descriptor {
        media_type: LAYER_MEDIA_TYPE.to_string(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_paths() {
        assert!(looks_like_reference("127.0.0.1:5000/kiln/hello:1"));
        assert!(looks_like_reference("registry.example.com/fe"));
        assert!(looks_like_reference("localhost/fe:1"));
        assert!(!looks_like_reference("./x.wasm"));
        assert!(!looks_like_reference("/abs/x.wasm"));
        assert!(!looks_like_reference("dockerfile.v0"));
        assert!(!looks_like_reference("docker/dockerfile:1"));
    }

    #[test]
    fn our_manifest_passes_our_check() {
        let m = manifest_for(b"\0asm\x0d\0\x01\0");
        let l = check_artifact(&m, "x").unwrap();
        assert_eq!(l.digest, Digest::of_bytes(b"\0asm\x0d\0\x01\0"));
    }

    #[test]
    fn wrong_version_and_wrong_shape_are_refused() {
        let m = String::from_utf8(manifest_for(b"x"))
            .unwrap()
            .replace("\"0.1.0\"", "\"0.9.0\"");
        let e = format!("{:#}", check_artifact(m.as_bytes(), "r").unwrap_err());
        assert!(e.contains("0.9.0"), "{e}");
        let img = br#"{"schemaVersion":2,"config":{},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:00","size":1}]}"#;
        let e = format!("{:#}", check_artifact(img, "r").unwrap_err());
        assert!(e.contains("not a kiln frontend"), "{e}");
    }
}
