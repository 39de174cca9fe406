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
        let r = parse_reference(s).map_err(|e| invalid(e.to_string()))?;
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

/// Longest repository name the distribution spec allows.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Parses `[domain/]path[:tag][@digest]` by the distribution reference
/// grammar, with the same results as `oci_client::Reference`'s parser
/// (including its Docker Hub defaults), without compiling that parser's
/// large regular expression, which costs tens of milliseconds of CPU on
/// the first parse in every process.
fn parse_reference(s: &str) -> Result<Reference, oci_client::ParseError> {
    use oci_client::ParseError as E;
    if s.is_empty() {
        return Err(E::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A tag is a `:` in the last `/`-separated part (a port sits before a `/`).
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
        None => (rest, None),
    };
    if !valid_name(name)
        || tag.is_some_and(|t| !valid_tag(t))
        || digest.is_some_and(|d| !valid_digest_syntax(d))
    {
        return Err(E::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(E::NameTooLong);
    }
    if let Some(d) = digest {
        let want = match d.split_once(':') {
            Some(("sha256", _)) => 64,
            Some(("sha384", _)) => 96,
            Some(("sha512", _)) => 128,
            Some(_) => return Err(E::DigestUnsupported),
            None => return Err(E::DigestInvalidFormat),
        };
        if d.len() - d.find(':').map_or(0, |i| i + 1) != want {
            return Err(E::DigestInvalidLength);
        }
    }
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (t, _) => t,
    };
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (Some(t), None) => Reference::with_tag(registry, repository, t.into()),
        (None, None) => unreachable!("a reference without a digest gets the default tag"),
    })
}

/// A name is path components separated by `/`, optionally after a domain
/// (`host[.host…][:port]`) as the first part.
fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let all_paths = |p: &[&str]| !p.is_empty() && p.iter().all(|c| valid_path_component(c));
    all_paths(&parts) || (parts.len() > 1 && valid_domain(parts[0]) && all_paths(&parts[1..]))
}

/// `label(.label)*(:port)?`, a label being letters, digits and inner `-`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(&b[0])
        && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
}

/// `algorithm:hex` with at least 32 hex digits, the algorithm being
/// letter-led words joined by `-`, `_`, `+` or `.`.
fn valid_digest_syntax(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let words_ok = alg.split(['-', '_', '+', '.']).all(|w| {
        let b = w.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    words_ok && hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit())
}

/// Docker's rule for where the registry ends: a first part with a `.` or a
/// `:`, or `localhost`; otherwise Docker Hub (`library/` for one-part
/// names).
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((d, r)) if d.contains('.') || d.contains(':') || d == "localhost" => (d, r),
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    (domain.to_owned(), rest)
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
    fn grammar_agrees_with_oci_client() {
        let h64 = "f".repeat(64);
        let long = "a".repeat(256);
        let cases = [
            "busybox".to_owned(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            format!("test:5000/repo@sha256:{h64}"),
            format!("test:5000/repo:tag@sha256:{h64}"),
            "lowercase:Uppercase".into(),
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            format!(
                "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{}",
                "f".repeat(128)
            ),
            "foo_bar.com:8080".into(),
            "foo/foo_bar.com:8080".into(),
            "index.docker.io/busybox".into(),
            "localhost/app".into(),
            "localhost:5000/a/b__c/d---e:v_1.2-3".into(),
            "127.0.0.1:5000/library/busybox:latest".into(),
            String::new(),
            ":justtag".into(),
            format!("@sha256:{h64}"),
            "repo@sha256:ffffffffffffffffffffffffffffffffff".into(),
            format!("validname@invaliddigest:{h64}"),
            format!("validname@sha256{h64}"),
            "Uppercase:tag".into(),
            "Uppercase/lowercase:tag".into(),
            "test:5000/Uppercase/lowercase:tag".into(),
            long,
            "aa/asdf$$^/aa".into(),
            "a:b:c".into(),
            "a/b:c:d".into(),
            "a//b".into(),
            "a/".into(),
            "-a.com/b".into(),
            "a.com:/b".into(),
            "a.com:50x0/b".into(),
            "a._b".into(),
            "a__b".into(),
            "a___b".into(),
            format!("a:{}", "t".repeat(128)),
            format!("a:{}", "t".repeat(129)),
            "a:.t".into(),
            format!("a@sha256:{h64}@x"),
        ];
        for c in &cases {
            let ours = parse_reference(c);
            let theirs = Reference::try_from(c.as_str());
            assert_eq!(ours, theirs, "{c:?}");
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
