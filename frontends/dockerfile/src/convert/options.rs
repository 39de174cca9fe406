//! Frontend options (`--opt k=v`) → [`ConvertOptions`].

use std::collections::BTreeMap;

use kiln_frontend::llb::pb;
use kiln_frontend::{FrontendError, Platform};

/// `image-resolve-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageResolveMode {
    /// Engine default.
    #[default]
    Default,
    /// Always pull.
    Pull,
    /// Prefer a local copy.
    Local,
}

impl ImageResolveMode {
    /// The gateway spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageResolveMode::Default => "default",
            ImageResolveMode::Pull => "pull",
            ImageResolveMode::Local => "local",
        }
    }
}

/// Everything the conversion reads besides the Dockerfile itself.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Dockerfile name (option `filename`, default `Dockerfile`).
    pub filename: String,
    /// Stage to build (option `target`; default the last stage).
    pub target: Option<String>,
    /// `build-arg:NAME` values.
    pub build_args: BTreeMap<String, String>,
    /// `label:NAME` values, applied to the image config last.
    pub labels: BTreeMap<String, String>,
    /// Every platform of the `platform` option.
    pub platforms: Vec<Platform>,
    /// The platform of this conversion (default: the build platform).
    pub target_platform: Option<Platform>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// Force a multi-platform result shape (`multi-platform`).
    pub multi_platform: bool,
    /// `no-cache`: `Some(empty)` ignores the cache everywhere, else the
    /// listed stages.
    pub no_cache: Option<Vec<String>>,
    /// `context:NAME` values.
    pub named_contexts: BTreeMap<String, String>,
    /// Named inputs (encoded `pb.Definition`s) for `input:` named contexts
    /// (filled by [`crate::convert::convert`] from the gateway).
    pub inputs: BTreeMap<String, Vec<u8>>,
    /// `input-metadata:NAME` values.
    pub input_metadata: BTreeMap<String, String>,
    /// `.dockerignore` patterns of `local:` named contexts, by local name
    /// (filled by [`crate::convert::convert`]).
    pub named_dockerignore: BTreeMap<String, Vec<String>>,
    /// `add-hosts`: `(host, ip)`.
    pub extra_hosts: Vec<(String, String)>,
    /// `image-resolve-mode`.
    pub image_resolve_mode: ImageResolveMode,
    /// `.dockerignore` patterns for the context.
    pub dockerignore: Vec<String>,
    /// Name of the context local (`contextkey`, default `context`).
    pub context_local: String,
    /// `context`: a git or http(s) URL used as the build context instead of
    /// the context local (what `docker build URL` does).
    pub remote_context: Option<String>,
    /// The build context state when it is not the context local (set by
    /// [`crate::convert::convert`] for a remote context).
    pub context_override: Option<kiln_frontend::llb::builder::State>,
    /// Name of the Dockerfile local (`dockerfilekey`, default `dockerfile`).
    pub dockerfile_local: String,
    /// Sandbox host name (`hostname`).
    pub hostname: Option<String>,
    /// `force-network-mode`.
    pub force_network: Option<pb::NetMode>,
    /// `shm-size` in bytes (0 = none).
    pub shm_size: i64,
    /// `ulimit`: `(name, soft, hard)`.
    pub ulimits: Vec<(String, i64, i64)>,
    /// `cgroup-parent`.
    pub cgroup_parent: String,
    /// `build-arg:BUILDKIT_CACHE_MOUNT_NS`.
    pub cache_mount_ns: String,
    /// Per-step resource limits (`memory`, `memswap`, `cpushares`,
    /// `cpuperiod`, `cpuquota`, `cpusetcpus`, `cpusetmems`).
    pub linux_resources: Option<pb::LinuxResources>,
    /// The LLB that loaded the Dockerfile, recorded in source locations.
    pub dockerfile_definition: Option<pb::Definition>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            filename: "Dockerfile".to_string(),
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            platforms: Vec::new(),
            target_platform: None,
            build_platform: Platform {
                os: "linux".to_string(),
                architecture: "amd64".to_string(),
                variant: None,
            },
            multi_platform: false,
            no_cache: None,
            named_contexts: BTreeMap::new(),
            named_dockerignore: BTreeMap::new(),
            inputs: BTreeMap::new(),
            input_metadata: BTreeMap::new(),
            extra_hosts: Vec::new(),
            image_resolve_mode: ImageResolveMode::Default,
            dockerignore: Vec::new(),
            context_local: "context".to_string(),
            remote_context: None,
            context_override: None,
            dockerfile_local: "dockerfile".to_string(),
            hostname: None,
            force_network: None,
            shm_size: 0,
            ulimits: Vec::new(),
            cgroup_parent: String::new(),
            cache_mount_ns: String::new(),
            linux_resources: None,
            dockerfile_definition: None,
        }
    }
}

fn bad(key: &str, value: &str, why: &str) -> FrontendError {
    FrontendError::new(format!("invalid frontend option {key}={value:?}: {why}"))
}

/// Parses a platform string, normalising common aliases.
pub fn parse_platform(s: &str) -> Option<Platform> {
    let mut p = Platform::parse(s.trim())?;
    p.os = p.os.to_ascii_lowercase();
    p.architecture = p.architecture.to_ascii_lowercase();
    match p.architecture.as_str() {
        "x86_64" | "x86-64" => p.architecture = "amd64".into(),
        "aarch64" => p.architecture = "arm64".into(),
        "armhf" => {
            p.architecture = "arm".into();
            p.variant = Some("v7".into());
        }
        _ => {}
    }
    if p.architecture == "arm64" && p.variant.as_deref() == Some("v8") {
        p.variant = None;
    }
    if p.variant.as_deref() == Some("") {
        p.variant = None;
    }
    Some(p)
}

/// A platform in its protobuf form.
pub(crate) fn to_pb(p: &Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// A protobuf platform back as `os/arch[/variant]` parts.
pub(crate) fn from_pb(p: &pb::Platform) -> Platform {
    Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
    }
}

fn parse_size(key: &str, v: &str) -> Result<i64, FrontendError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad(key, v, "expected a number of bytes"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, FrontendError> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(key, v, "expected true or false")),
    }
}

impl ConvertOptions {
    /// Reads the frontend options map.
    pub fn from_options(map: &BTreeMap<String, String>) -> Result<Self, FrontendError> {
        let mut o = ConvertOptions::default();
        for (k, v) in map {
            if let Some(name) = k.strip_prefix("build-arg:") {
                o.build_args.insert(name.to_string(), v.clone());
                continue;
            }
            if let Some(name) = k.strip_prefix("label:") {
                o.labels.insert(name.to_string(), v.clone());
                continue;
            }
            if let Some(name) = k.strip_prefix("input-metadata:") {
                o.input_metadata.insert(name.to_string(), v.clone());
                continue;
            }
            if let Some(name) = k.strip_prefix("context:") {
                o.named_contexts.insert(name.to_string(), v.clone());
                continue;
            }
            match k.as_str() {
                "filename" if !v.is_empty() => o.filename = v.clone(),
                "target" => o.target = (!v.is_empty()).then(|| v.clone()),
                "platform" => {
                    for p in v.split(',').filter(|s| !s.trim().is_empty()) {
                        let plat = parse_platform(p)
                            .ok_or_else(|| bad(k, v, "expected os/arch[/variant]"))?;
                        if !o.platforms.contains(&plat) {
                            o.platforms.push(plat);
                        }
                    }
                }
                "multi-platform" => o.multi_platform = parse_bool(k, v)?,
                "no-cache" => {
                    o.no_cache = Some(
                        v.split(',')
                            .map(|s| s.trim().to_ascii_lowercase())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                "add-hosts" => {
                    for entry in v.split([',', ' ']).filter(|s| !s.is_empty()) {
                        let (h, ip) = entry
                            .split_once('=')
                            .or_else(|| entry.split_once(':'))
                            .ok_or_else(|| bad(k, v, "expected host=ip"))?;
                        o.extra_hosts.push((h.to_string(), ip.to_string()));
                    }
                }
                "image-resolve-mode" => {
                    o.image_resolve_mode = match v.as_str() {
                        "" | "default" => ImageResolveMode::Default,
                        "pull" => ImageResolveMode::Pull,
                        "local" => ImageResolveMode::Local,
                        _ => return Err(bad(k, v, "expected default, pull or local")),
                    }
                }
                "contextkey" if !v.is_empty() => o.context_local = v.clone(),
                "context" if !v.is_empty() => {
                    if !(super::copy::is_git_url(v) || super::copy::is_http_url(v)) {
                        return Err(bad(k, v, "expected a git or http(s) URL"));
                    }
                    o.remote_context = Some(v.clone());
                }
                "dockerfilekey" if !v.is_empty() => o.dockerfile_local = v.clone(),
                "hostname" => o.hostname = (!v.is_empty()).then(|| v.clone()),
                "force-network-mode" => {
                    o.force_network = match v.as_str() {
                        "" | "sandbox" | "default" => None,
                        "none" => Some(pb::NetMode::None),
                        "host" => Some(pb::NetMode::Host),
                        _ => return Err(bad(k, v, "expected sandbox, none or host")),
                    }
                }
                "shm-size" => o.shm_size = parse_size(k, v)?,
                "cgroup-parent" => o.cgroup_parent = v.clone(),
                "memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota" | "cpusetcpus"
                | "cpusetmems" => {
                    let r = o.linux_resources.get_or_insert_with(Default::default);
                    let num = || -> Result<i64, FrontendError> {
                        v.trim()
                            .parse::<i64>()
                            .map_err(|_| bad(k, v, "expected a number"))
                    };
                    match k.as_str() {
                        "memory" => r.memory = num()?,
                        "memswap" => r.memory_swap = num()?,
                        "cpushares" => r.cpu_shares = num()?.max(0) as u64,
                        "cpuperiod" => r.cpu_period = num()?.max(0) as u64,
                        "cpuquota" => r.cpu_quota = num()?,
                        "cpusetcpus" => r.cpuset_cpus = v.clone(),
                        _ => r.cpuset_mems = v.clone(),
                    }
                }
                "ulimit" => {
                    for spec in v.split([',', ' ']).filter(|s| !s.is_empty()) {
                        let (name, limits) = spec
                            .split_once('=')
                            .ok_or_else(|| bad(k, v, "expected name=soft[:hard]"))?;
                        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
                        let soft = soft
                            .parse::<i64>()
                            .map_err(|_| bad(k, v, "limits must be numbers"))?;
                        let hard = hard
                            .parse::<i64>()
                            .map_err(|_| bad(k, v, "limits must be numbers"))?;
                        o.ulimits.push((name.to_string(), soft, hard));
                    }
                }
                _ => {}
            }
        }
        if let Some(ns) = o.build_args.get("BUILDKIT_CACHE_MOUNT_NS") {
            o.cache_mount_ns = ns.clone();
        }
        if o.hostname.is_none()
            && let Some(h) = o.build_args.get("BUILDKIT_SANDBOX_HOSTNAME")
        {
            o.hostname = Some(h.clone());
        }
        if let Some(m) = o.build_args.get("BUILDKIT_MULTI_PLATFORM") {
            o.multi_platform = parse_bool("build-arg:BUILDKIT_MULTI_PLATFORM", m)?;
        }
        o.target_platform = o.platforms.first().cloned();
        Ok(o)
    }

    /// Whether the cache is ignored for a stage (by lowercase name).
    pub(crate) fn ignores_cache(&self, stage: Option<&str>) -> bool {
        match &self.no_cache {
            None => false,
            Some(list) if list.is_empty() => true,
            Some(list) => stage.is_some_and(|s| list.iter().any(|n| n == s)),
        }
    }
}
