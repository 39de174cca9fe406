//! Image references and platforms.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

use super::Error;

/// A normalised image reference: `busybox` is
/// `docker.io/library/busybox:latest`; `127.0.0.1:5000/library/busybox`
/// keeps its registry and gets `:latest`; `name@sha256:…` pins a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(Reference);

impl ImageRef {
    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The repository (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// This reference pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> Self {
        ImageRef(match self.0.tag() {
            Some(t) => Reference::with_tag_and_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                t.to_string(),
                digest.to_string(),
            ),
            None => Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        })
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Self {
        ImageRef(Reference::with_tag(
            self.registry().to_string(),
            self.repository().to_string(),
            tag.to_string(),
        ))
    }

    /// Whether the registry is this machine (`localhost`, `127.0.0.0/8`,
    /// `::1`), which kiln talks to over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.registry())
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.0
    }

    /// The reference used for a request by digest (a digest wins over a tag
    /// in the URL).
    pub(crate) fn oci_by_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        )
    }
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidReference {
            input: s.to_string(),
            reason,
        };
        if s.contains("://") {
            return Err(invalid("a reference has no URL scheme".to_string()));
        }
        let r: Reference = s
            .parse()
            .map_err(|e: oci_client::ParseError| invalid(e.to_string()))?;
        // Normalise the legacy Docker Hub name so credentials, caches and
        // digests agree on one spelling.
        let r = if r.registry() == "index.docker.io" || r.registry() == "registry-1.docker.io" {
            let repo = r.repository().to_string();
            let repo = if repo.contains('/') {
                repo
            } else {
                format!("library/{repo}")
            };
            match (r.tag(), r.digest()) {
                (Some(t), Some(d)) => {
                    Reference::with_tag_and_digest("docker.io".into(), repo, t.into(), d.into())
                }
                (None, Some(d)) => Reference::with_digest("docker.io".into(), repo, d.into()),
                (t, None) => {
                    Reference::with_tag("docker.io".into(), repo, t.unwrap_or("latest").into())
                }
            }
        } else {
            r
        };
        if let Some(bad) = r.repository().split('/').find(|c| !valid_path_component(c)) {
            return Err(invalid(format!(
                "repository component {bad:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"
            )));
        }
        if let Some(d) = r.digest()
            && !d.starts_with("sha256:")
        {
            return Err(invalid(format!(
                "only sha256 digests are supported, not {d}"
            )));
        }
        Ok(ImageRef(r))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's rule.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.whole())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({})", self.0.whole())
    }
}

/// A target platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture in Go naming (`amd64`, `arm64`, `arm`, `386`...).
    pub architecture: String,
    /// Variant (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl Platform {
    /// The platform this program runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    fn normalized(&self) -> (String, String, Option<String>) {
        let arch = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "i386" | "i686" => "386",
            a => a,
        }
        .to_string();
        let variant = match (arch.as_str(), self.variant.as_deref()) {
            // arm64 images usually omit their only variant.
            ("arm64", Some("v8")) | (_, None) => None,
            (_, Some(v)) => Some(v.to_string()),
        };
        (self.os.to_lowercase(), arch, variant)
    }

    /// Whether an index entry for `other` serves this platform.
    pub fn matches(&self, other: &Platform) -> bool {
        let (os, arch, var) = self.normalized();
        let (o_os, o_arch, o_var) = other.normalized();
        os == o_os && arch == o_arch && (var.is_none() || var == o_var)
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform {
            input: s.to_string(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(ImageRef);
string_serde!(Platform);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn references_are_normalised() {
        assert_eq!(r("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(r("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(r("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            r("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            r("127.0.0.1:5000/library/busybox"),
            "127.0.0.1:5000/library/busybox:latest"
        );
        assert_eq!(r("localhost/app:v1"), "localhost/app:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned: ImageRef = format!("ghcr.io/o/app@{d}").parse().unwrap();
        assert_eq!(pinned.digest(), Some(d.as_str()));
        assert_eq!(pinned.tag(), None);
        assert!(
            "127.0.0.1:5000/x"
                .parse::<ImageRef>()
                .unwrap()
                .is_loopback()
        );
        assert!(
            "localhost:5000/x"
                .parse::<ImageRef>()
                .unwrap()
                .is_loopback()
        );
        assert!(!"ghcr.io/x".parse::<ImageRef>().unwrap().is_loopback());
        assert!(is_loopback_host("[::1]:5000"));
    }

    #[test]
    fn bad_references_are_refused() {
        for s in [
            "",
            "UPPER/case",
            "http://x/y",
            "a@sha256:abc",
            ":tag",
            "x@md5:00",
        ] {
            let e = s.parse::<ImageRef>().unwrap_err();
            assert!(
                e.to_string().contains("invalid image reference"),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn serialized_as_strings() {
        let r: ImageRef = "busybox".parse().unwrap();
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, "\"docker.io/library/busybox:latest\"");
        assert_eq!(serde_json::from_str::<ImageRef>(&j).unwrap(), r);
        assert!(serde_json::from_str::<ImageRef>("\"Bad Ref\"").is_err());
        let p: Platform = serde_json::from_str("\"linux/arm/v7\"").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
    }

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches(&"linux/arm64".parse().unwrap()));
        assert!(Platform::default().matches(&"linux/amd64".parse().unwrap()));
        assert!(!Platform::default().matches(&"linux/arm64".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
    }
}
