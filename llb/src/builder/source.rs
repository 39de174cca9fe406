//! Source ops: image, local, git, http, OCI layout and scratch.

use std::collections::BTreeMap;

use super::state::{Output, State};
use super::{BuildError, Constraints, OpOptions, Vertex, VertexKind};
use crate::pb;

/// A source op as stored in the graph.
#[derive(Debug, Clone)]
pub(crate) struct SourceSpec {
    pub(crate) identifier: String,
    pub(crate) attrs: BTreeMap<String, String>,
}

impl SourceSpec {
    /// Only image-like sources keep their platform in the op.
    pub(crate) fn is_platform_specific(&self) -> bool {
        self.identifier.starts_with("docker-image://")
            || self.identifier.starts_with("oci-layout://")
    }
}

fn source_state(
    identifier: String,
    attrs: BTreeMap<String, String>,
    constraints: Constraints,
) -> State {
    let platform = constraints.platform.clone();
    let vertex = Vertex {
        kind: VertexKind::Source(SourceSpec { identifier, attrs }),
        constraints,
    };
    let state = State::from_output(Output::new(vertex, 0));
    match platform {
        Some(p) => state.platform(p),
        None => state,
    }
}

/// The empty filesystem.
pub fn scratch() -> State {
    State::scratch()
}

/// Go's `json.Marshal` of a string list (HTML-escaped like Go's encoder).
fn json_list(items: &[String]) -> String {
    crate::dump::go_json_escape(&serde_json::Value::from(items.to_vec()).to_string())
}

// ---------------------------------------------------------------------------
// docker-image://

/// Image resolve mode (`image.resolvemode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolveMode {
    /// Engine default; no attribute is written.
    #[default]
    Default,
    /// Always pull (`pull`).
    ForcePull,
    /// Prefer a local copy (`local`).
    PreferLocal,
}

/// Builder for a `docker-image://` source; see [`image`].
#[derive(Debug, Clone)]
pub struct Image {
    reference: String,
    resolve_mode: ResolveMode,
    record_type: String,
    layer_limit: Option<i64>,
    checksum: String,
    constraints: Constraints,
}

/// Starts an image source. The reference is normalised like Docker's
/// (`alpine` → `docker.io/library/alpine:latest`).
pub fn image(reference: &str) -> Result<Image, BuildError> {
    Ok(Image {
        reference: normalize_image_ref(reference)?,
        resolve_mode: ResolveMode::Default,
        record_type: String::new(),
        layer_limit: None,
        checksum: String::new(),
        constraints: Constraints::default(),
    })
}

impl Image {
    /// Sets the resolve mode.
    pub fn resolve_mode(mut self, mode: ResolveMode) -> Self {
        self.resolve_mode = mode;
        self
    }

    /// Sets `image.recordtype` (`regular`, `internal`, `frontend`).
    pub fn record_type(mut self, record_type: impl Into<String>) -> Self {
        self.record_type = record_type.into();
        self
    }

    /// Uses only the first `n` layers.
    pub fn layer_limit(mut self, n: i64) -> Self {
        self.layer_limit = Some(n);
        self
    }

    /// Requires the resolved manifest to have this digest.
    pub fn checksum(mut self, digest: &crate::Digest) -> Self {
        self.checksum = digest.to_string();
        self
    }

    /// Finishes the source.
    pub fn state(self) -> State {
        let mut c = self.constraints;
        c.add_cap("source.image");
        let mut attrs = BTreeMap::new();
        match self.resolve_mode {
            ResolveMode::Default => {}
            ResolveMode::ForcePull => {
                attrs.insert("image.resolvemode".into(), "pull".into());
                c.add_cap("source.image.resolvemode");
            }
            ResolveMode::PreferLocal => {
                attrs.insert("image.resolvemode".into(), "local".into());
            }
        }
        if !self.record_type.is_empty() {
            attrs.insert("image.recordtype".into(), self.record_type);
        }
        if let Some(n) = self.layer_limit {
            attrs.insert("image.layerlimit".into(), n.to_string());
            c.add_cap("source.image.layerlimit");
        }
        if !self.checksum.is_empty() {
            attrs.insert("image.checksum".into(), self.checksum);
            c.add_cap("source.image.checksum");
        }
        source_state(format!("docker-image://{}", self.reference), attrs, c)
    }
}

impl OpOptions for Image {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

/// Normalises a Docker image reference: adds `docker.io`, `library/` for
/// official images and `:latest` when there is neither tag nor digest.
pub fn normalize_image_ref(reference: &str) -> Result<String, BuildError> {
    let fail = |reason| BuildError::InvalidImageReference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.is_empty() {
        return Err(fail("empty reference"));
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => {
            if d.parse::<crate::Digest>().is_err() {
                return Err(fail("digest must be sha256:<64 hex>"));
            }
            (n, Some(d))
        }
        None => (reference, None),
    };
    // A tag is a `:` after the last `/`.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].find(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
            });
        if !valid {
            return Err(fail("invalid tag"));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_owned()
    } else {
        domain
    };
    if domain
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
    {
        return Err(fail("invalid registry host"));
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    for component in path.split('/') {
        if !valid_path_component(component) {
            return Err(fail(
                "repository path components must be lowercase [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // Separator: `.`, `_`, `__` or one or more `-`.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

// ---------------------------------------------------------------------------
// local://

/// Builder for a `local://` source; see [`local`].
#[derive(Debug, Clone)]
pub struct Local {
    name: String,
    session_id: String,
    unique_id: String,
    include: Vec<String>,
    exclude: Vec<String>,
    follow: Vec<String>,
    shared_key_hint: String,
    differ: Option<(String, bool)>,
    metadata_transfer: Option<Vec<String>>,
    constraints: Constraints,
}

/// Starts a local directory source (`context`, `dockerfile`, ...).
pub fn local(name: impl Into<String>) -> Local {
    Local {
        name: name.into(),
        session_id: String::new(),
        unique_id: String::new(),
        include: Vec::new(),
        exclude: Vec::new(),
        follow: Vec::new(),
        shared_key_hint: String::new(),
        differ: None,
        metadata_transfer: None,
        constraints: Constraints::default(),
    }
}

impl Local {
    /// Session that serves the directory (`local.session`).
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = id.into();
        self
    }

    /// Explicit `local.unique` value (used only without a session ID).
    pub fn unique_id(mut self, id: impl Into<String>) -> Self {
        self.unique_id = id.into();
        self
    }

    /// Transfer only paths matching these patterns.
    pub fn include_patterns(mut self, patterns: Vec<String>) -> Self {
        self.include = patterns;
        self
    }

    /// Skip paths matching these patterns.
    pub fn exclude_patterns(mut self, patterns: Vec<String>) -> Self {
        self.exclude = patterns;
        self
    }

    /// Transfer these paths, following symlinks.
    pub fn follow_paths(mut self, paths: Vec<String>) -> Self {
        self.follow = paths;
        self
    }

    /// Cache-sharing hint (`local.sharedkeyhint`).
    pub fn shared_key_hint(mut self, hint: impl Into<String>) -> Self {
        self.shared_key_hint = hint.into();
        self
    }

    /// Change detection (`local.differ`: `metadata` or `none`); `required`
    /// also requires the capability.
    pub fn differ(mut self, kind: impl Into<String>, required: bool) -> Self {
        self.differ = Some((kind.into(), required));
        self
    }

    /// Transfer metadata only, except for the listed paths.
    pub fn metadata_only(mut self, exceptions: Vec<String>) -> Self {
        self.metadata_transfer = Some(exceptions);
        self
    }

    /// Finishes the source.
    pub fn state(self) -> State {
        let mut c = self.constraints;
        let mut attrs = BTreeMap::new();
        if !self.session_id.is_empty() {
            attrs.insert("local.session".into(), self.session_id);
            c.add_cap("source.local.sessionid");
        } else if !self.unique_id.is_empty() {
            attrs.insert("local.unique".into(), self.unique_id);
            c.add_cap("source.local.unique");
        }
        if !self.include.is_empty() {
            attrs.insert("local.includepattern".into(), json_list(&self.include));
            c.add_cap("source.local.includepatterns");
        }
        if !self.follow.is_empty() {
            attrs.insert("local.followpaths".into(), json_list(&self.follow));
            c.add_cap("source.local.followpaths");
        }
        if !self.exclude.is_empty() {
            attrs.insert("local.excludepatterns".into(), json_list(&self.exclude));
            c.add_cap("source.local.excludepatterns");
        }
        if !self.shared_key_hint.is_empty() {
            attrs.insert("local.sharedkeyhint".into(), self.shared_key_hint);
            c.add_cap("source.local.sharedkeyhint");
        }
        if let Some((kind, required)) = self.differ {
            attrs.insert("local.differ".into(), kind);
            if required {
                c.add_cap("source.local.differ");
            }
        }
        if let Some(exceptions) = self.metadata_transfer {
            attrs.insert("local.metadatatransfer".into(), "true".into());
            if !exceptions.is_empty() {
                attrs.insert(
                    "local.metadatatransferexclude".into(),
                    json_list(&exceptions),
                );
            }
            c.add_cap("source.local.metadatatransfer");
        }
        c.add_cap("source.local");
        source_state(format!("local://{}", self.name), attrs, c)
    }
}

impl OpOptions for Local {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

// ---------------------------------------------------------------------------
// git://

/// Builder for a `git://` source; see [`git`].
#[derive(Debug, Clone)]
pub struct Git {
    remote: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
    auth_header_secret: String,
    auth_token_secret: String,
    known_ssh_hosts: String,
    mount_ssh_sock: String,
    checksum: String,
    skip_submodules: bool,
    extra: BTreeMap<String, String>,
    constraints: Constraints,
}

/// Starts a git source for `remote` (any git URL form) at `reference`
/// (branch, tag or commit; empty for the default branch).
pub fn git(remote: impl Into<String>, reference: impl Into<String>) -> Git {
    Git {
        remote: remote.into(),
        reference: reference.into(),
        subdir: String::new(),
        keep_git_dir: false,
        auth_header_secret: "GIT_AUTH_HEADER".into(),
        auth_token_secret: "GIT_AUTH_TOKEN".into(),
        known_ssh_hosts: String::new(),
        mount_ssh_sock: String::new(),
        checksum: String::new(),
        skip_submodules: false,
        extra: BTreeMap::new(),
        constraints: Constraints::default(),
    }
}

impl Git {
    /// Check out only this subdirectory.
    pub fn subdir(mut self, dir: impl Into<String>) -> Self {
        self.subdir = dir.into();
        self
    }

    /// Keep the `.git` directory.
    pub fn keep_git_dir(mut self) -> Self {
        self.keep_git_dir = true;
        self
    }

    /// Secret ID holding an HTTP auth header (default `GIT_AUTH_HEADER`).
    pub fn auth_header_secret(mut self, id: impl Into<String>) -> Self {
        self.auth_header_secret = id.into();
        self
    }

    /// Secret ID holding an auth token (default `GIT_AUTH_TOKEN`).
    pub fn auth_token_secret(mut self, id: impl Into<String>) -> Self {
        self.auth_token_secret = id.into();
        self
    }

    /// `known_hosts` content for SSH remotes.
    pub fn known_ssh_hosts(mut self, hosts: impl Into<String>) -> Self {
        self.known_ssh_hosts = hosts.into();
        self
    }

    /// SSH agent ID for SSH remotes (default `default`).
    pub fn mount_ssh_sock(mut self, id: impl Into<String>) -> Self {
        self.mount_ssh_sock = id.into();
        self
    }

    /// Require the checked-out commit to be this one.
    pub fn checksum(mut self, commit: impl Into<String>) -> Self {
        self.checksum = commit.into();
        self
    }

    /// Do not fetch submodules.
    pub fn skip_submodules(mut self) -> Self {
        self.skip_submodules = true;
        self
    }

    /// Sets any other `git.*` attribute (e.g. `git.mtime`).
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Finishes the source.
    pub fn state(self) -> State {
        let mut c = self.constraints;
        let remote = parse_git_remote(&self.remote);
        let mut id = format!("{}/{}", remote.host, remote.path.trim_start_matches('/'));
        if !self.reference.is_empty() || !self.subdir.is_empty() {
            id.push('#');
            id.push_str(&self.reference);
            if !self.subdir.is_empty() {
                id.push(':');
                id.push_str(&self.subdir);
                c.add_cap("source.git.subdir");
            }
        }
        let mut attrs = self.extra;
        if self.keep_git_dir {
            attrs.insert("git.keepgitdir".into(), "true".into());
            c.add_cap("source.git.keepgitdir");
        }
        attrs.insert("git.fullurl".into(), remote.full_url.clone());
        c.add_cap("source.git.fullurl");
        if !self.auth_token_secret.is_empty() {
            attrs.insert("git.authtokensecret".into(), self.auth_token_secret);
            c.add_cap("source.git.httpauth");
        }
        if !self.auth_header_secret.is_empty() {
            attrs.insert("git.authheadersecret".into(), self.auth_header_secret);
            c.add_cap("source.git.httpauth");
        }
        if remote.ssh {
            if !self.known_ssh_hosts.is_empty() {
                attrs.insert("git.knownsshhosts".into(), self.known_ssh_hosts);
                c.add_cap("source.git.knownsshhosts");
            }
            let sock = if self.mount_ssh_sock.is_empty() {
                "default".to_owned()
            } else {
                self.mount_ssh_sock
            };
            attrs.insert("git.mountsshsock".into(), sock);
            c.add_cap("source.git.mountsshsock");
        }
        if !self.checksum.is_empty() {
            attrs.insert("git.checksum".into(), self.checksum);
            c.add_cap("source.git.checksum");
        }
        if self.skip_submodules {
            attrs.insert("git.skipsubmodules".into(), "true".into());
            c.add_cap("source.git.skipsubmodules");
        }
        c.add_cap("source.git");
        source_state(format!("git://{id}"), attrs, c)
    }
}

impl OpOptions for Git {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

struct GitRemote {
    host: String,
    path: String,
    full_url: String,
    ssh: bool,
}

/// Splits a git remote into host and path. Accepts `scheme://` URLs and the
/// scp-like `user@host:path`; anything else is taken as `https://`.
fn parse_git_remote(remote: &str) -> GitRemote {
    if let Some((scheme, rest)) = remote.split_once("://") {
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        return GitRemote {
            host: host.to_owned(),
            path: path.to_owned(),
            full_url: remote.to_owned(),
            ssh: scheme == "ssh",
        };
    }
    if let Some((user_host, path)) = remote.split_once(':')
        && let Some((_, host)) = user_host.split_once('@')
        && !user_host.contains('/')
    {
        return GitRemote {
            host: host.to_owned(),
            path: path.to_owned(),
            full_url: remote.to_owned(),
            ssh: true,
        };
    }
    let (host, path) = remote.split_once('/').unwrap_or((remote, ""));
    GitRemote {
        host: host.to_owned(),
        path: path.to_owned(),
        full_url: format!("https://{remote}"),
        ssh: false,
    }
}

// ---------------------------------------------------------------------------
// http(s)://

/// Builder for an `http://`/`https://` source; see [`http`].
#[derive(Debug, Clone)]
pub struct Http {
    url: String,
    checksum: String,
    filename: String,
    perm: u32,
    uid: u32,
    gid: u32,
    auth_header_secret: String,
    headers: BTreeMap<String, String>,
    constraints: Constraints,
}

/// Starts a download source.
pub fn http(url: impl Into<String>) -> Http {
    Http {
        url: url.into(),
        checksum: String::new(),
        filename: String::new(),
        perm: 0,
        uid: 0,
        gid: 0,
        auth_header_secret: String::new(),
        headers: BTreeMap::new(),
        constraints: Constraints::default(),
    }
}

impl Http {
    /// Require the content to have this digest.
    pub fn checksum(mut self, digest: &crate::Digest) -> Self {
        self.checksum = digest.to_string();
        self
    }

    /// Name of the downloaded file.
    pub fn filename(mut self, name: impl Into<String>) -> Self {
        self.filename = name.into();
        self
    }

    /// Permission bits of the downloaded file.
    pub fn perm(mut self, mode: u32) -> Self {
        self.perm = mode;
        self
    }

    /// Owner uid of the downloaded file.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self
    }

    /// Owner gid of the downloaded file.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = gid;
        self
    }

    /// Secret ID holding an `Authorization` header.
    pub fn auth_header_secret(mut self, id: impl Into<String>) -> Self {
        self.auth_header_secret = id.into();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Finishes the source.
    pub fn state(self) -> State {
        let mut c = self.constraints;
        let mut attrs = BTreeMap::new();
        if !self.checksum.is_empty() {
            attrs.insert("http.checksum".into(), self.checksum);
            c.add_cap("source.http.checksum");
        }
        if !self.filename.is_empty() {
            attrs.insert("http.filename".into(), self.filename);
        }
        if self.perm != 0 {
            attrs.insert("http.perm".into(), format!("0{:o}", self.perm));
            c.add_cap("source.http.perm");
        }
        if self.uid != 0 {
            attrs.insert("http.uid".into(), self.uid.to_string());
            // The capability ID is spelled this way on the wire.
            c.add_cap("soruce.http.uidgid");
        }
        if self.gid != 0 {
            attrs.insert("http.gid".into(), self.gid.to_string());
            c.add_cap("soruce.http.uidgid");
        }
        if !self.auth_header_secret.is_empty() {
            attrs.insert("http.authheadersecret".into(), self.auth_header_secret);
            c.add_cap("source.http.auth");
        }
        if !self.headers.is_empty() {
            for (k, v) in self.headers {
                attrs.insert(format!("http.header.{k}"), v);
            }
            c.add_cap("source.http.header");
        }
        c.add_cap("source.http");
        source_state(self.url, attrs, c)
    }
}

impl OpOptions for Http {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

// ---------------------------------------------------------------------------
// oci-layout://

/// Builder for an `oci-layout://` source; see [`oci_layout`].
#[derive(Debug, Clone)]
pub struct OciLayout {
    reference: String,
    session_id: String,
    store_id: String,
    layer_limit: Option<i64>,
    constraints: Constraints,
}

/// Starts an OCI layout source; `reference` is `<store-name>@sha256:…`.
pub fn oci_layout(reference: impl Into<String>) -> OciLayout {
    OciLayout {
        reference: reference.into(),
        session_id: String::new(),
        store_id: String::new(),
        layer_limit: None,
        constraints: Constraints::default(),
    }
}

impl OciLayout {
    /// Session serving the store (`oci.session`).
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = id.into();
        self
    }

    /// Store ID (`oci.store`).
    pub fn store_id(mut self, id: impl Into<String>) -> Self {
        self.store_id = id.into();
        self
    }

    /// Uses only the first `n` layers.
    pub fn layer_limit(mut self, n: i64) -> Self {
        self.layer_limit = Some(n);
        self
    }

    /// Finishes the source.
    pub fn state(self) -> State {
        let mut c = self.constraints;
        let mut attrs = BTreeMap::new();
        if !self.session_id.is_empty() {
            attrs.insert("oci.session".into(), self.session_id);
        }
        if !self.store_id.is_empty() {
            attrs.insert("oci.store".into(), self.store_id);
        }
        if let Some(n) = self.layer_limit {
            attrs.insert("oci.layerlimit".into(), n.to_string());
        }
        c.add_cap("source.ocilayout");
        source_state(format!("oci-layout://{}", self.reference), attrs, c)
    }
}

impl OpOptions for OciLayout {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

/// Converts a source spec into its protobuf op body.
pub(crate) fn to_pb(spec: &SourceSpec) -> pb::SourceOp {
    pb::SourceOp {
        identifier: spec.identifier.clone(),
        attrs: spec.attrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_normalise() {
        for (i, o) in [
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            ("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
            ("foo/bar:v1", "docker.io/foo/bar:v1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("ghcr.io/a/b/c:t", "ghcr.io/a/b/c:t"),
            (
                "busybox@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "docker.io/library/busybox@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ] {
            assert_eq!(normalize_image_ref(i).unwrap(), o, "{i}");
        }
        for bad in ["", "Alpine", "alpine:", "a@sha256:12", "a//b", "-a"] {
            assert!(normalize_image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_remotes() {
        let r = parse_git_remote("https://github.com/moby/buildkit.git");
        assert_eq!(
            (r.host.as_str(), r.path.as_str(), r.ssh),
            ("github.com", "moby/buildkit.git", false)
        );
        let r = parse_git_remote("git@github.com:moby/buildkit.git");
        assert_eq!(
            (r.host.as_str(), r.path.as_str(), r.ssh),
            ("github.com", "moby/buildkit.git", true)
        );
        let r = parse_git_remote("github.com/moby/buildkit");
        assert_eq!(r.full_url, "https://github.com/moby/buildkit");
    }
}
