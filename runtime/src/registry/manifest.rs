//! The parts of manifests and indexes the client reads, parsed leniently
//! (Docker schema 2 and OCI) and checked strictly (digests, sizes).

use std::collections::BTreeMap;

use kiln_store::Digest;
use serde::Deserialize;

use super::{Error, Platform, Result};

/// Media types kiln understands.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI layers.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker foreign (non-distributable) layer.
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker schema 1 (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What kiln asks for when resolving a reference.
    pub const ACCEPTED_MANIFESTS: &[&str] =
        &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

    /// Layer media types the store can unpack.
    pub const LAYERS: &[&str] = &[
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        DOCKER_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    ];
}

/// A checked content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest (sha256).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    pub platform: Option<Platform>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub(crate) enum Parsed {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Image {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

fn check(reference: &str, raw: RawDescriptor) -> Result<Descriptor> {
    let digest: Digest = raw.digest.parse().map_err(|_| Error::BadManifestField {
        reference: reference.to_string(),
        field: "digest",
        value: raw.digest.clone(),
    })?;
    let size = u64::try_from(raw.size).map_err(|_| Error::BadManifestField {
        reference: reference.to_string(),
        field: "size",
        value: raw.size.to_string(),
    })?;
    Ok(Descriptor {
        media_type: raw.media_type,
        digest,
        size,
        platform: raw.platform.map(|p| Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant.filter(|v| !v.is_empty()),
        }),
        annotations: raw.annotations.unwrap_or_default(),
    })
}

/// Parse manifest or index bytes. `header_type` is the Content-Type the
/// registry sent, used when the body carries no `mediaType`.
pub(crate) fn parse(reference: &str, bytes: &[u8], header_type: Option<&str>) -> Result<Parsed> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|source| Error::InvalidManifest {
            reference: reference.to_string(),
            what: "manifest",
            source,
        })?;
    let media_type = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| header_type.map(str::to_string))
        .unwrap_or_default();
    if raw.schema_version == Some(1) || media_type == media_types::DOCKER_SCHEMA1 {
        return Err(Error::UnsupportedMediaType {
            reference: reference.to_string(),
            media_type: "Docker schema 1 manifest".to_string(),
        });
    }
    if let Some(list) = raw.manifests {
        let media_type = if media_type.is_empty() {
            media_types::OCI_INDEX.to_string()
        } else {
            media_type
        };
        let manifests = list
            .into_iter()
            .map(|d| check(reference, d))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Parsed::Index {
            media_type,
            manifests,
        });
    }
    let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
        return Err(Error::UnsupportedMediaType {
            reference: reference.to_string(),
            media_type: if media_type.is_empty() {
                "manifest without config or layers".to_string()
            } else {
                media_type
            },
        });
    };
    let media_type = if media_type.is_empty() {
        media_types::OCI_MANIFEST.to_string()
    } else {
        media_type
    };
    Ok(Parsed::Image {
        media_type,
        config: check(reference, config)?,
        layers: layers
            .into_iter()
            .map(|d| check(reference, d))
            .collect::<Result<Vec<_>>>()?,
    })
}

/// Pick the manifest for `platform` from an index. Attestation manifests
/// (`unknown/unknown`) never match.
pub(crate) fn select_platform<'a>(
    reference: &str,
    manifests: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform.as_ref().is_some_and(|p| platform.matches(p))
                && d.annotations
                    .get("vnd.docker.reference.type")
                    .is_none_or(|t| t != "attestation-manifest")
        })
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn index_and_platform_choice() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
            {{"mediaType":"{}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{}","digest":"{}","size":11,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{}","digest":"{}","size":12,"platform":{{"os":"unknown","architecture":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            media_types::DOCKER_LIST,
            media_types::DOCKER_MANIFEST,
            d('a'),
            media_types::DOCKER_MANIFEST,
            d('b'),
            media_types::OCI_MANIFEST,
            d('c')
        );
        let Parsed::Index { manifests, .. } = parse("r", idx.as_bytes(), None).unwrap() else {
            panic!("not an index");
        };
        let amd = select_platform("r", &manifests, &Platform::default()).unwrap();
        assert_eq!(amd.digest.as_str(), d('b'));
        let arm = select_platform("r", &manifests, &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(arm.size, 10);
        let e = select_platform("r", &manifests, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8, linux/amd64"), "{e}");
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let neg = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":-1}},"layers":[]}}"#,
            d('a')
        );
        assert!(parse("r", neg.as_bytes(), None).is_err());
        let bad = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../etc","size":1},"layers":[]}"#;
        assert!(parse("r", bad.as_bytes(), None).is_err());
        assert!(parse("r", br#"{"schemaVersion":1,"fsLayers":[]}"#, None).is_err());
        assert!(parse("r", b"not json", None).is_err());
    }
}
