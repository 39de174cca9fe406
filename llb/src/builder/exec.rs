//! Exec ops: run a process with a root filesystem and extra mounts.

use super::marshal::{DefaultPath, Marshaler};
use super::path::resolve_dir;
use super::state::{Output, State, set_env};
use super::{BuildError, Constraints, OpOptions, Vertex, VertexKind};
use crate::pb;

/// Default `PATH` for Unix containers.
pub(crate) const DEFAULT_PATH_UNIX: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kind of a [`Mount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// Bind mount of the source state.
    Bind,
    /// Persistent cache directory (the source, if any, seeds it).
    Cache {
        /// Cache namespace ID.
        id: String,
        /// Sharing mode between concurrent builds.
        sharing: pb::CacheSharingOpt,
    },
    /// tmpfs.
    Tmpfs {
        /// Size limit in bytes (0 = default).
        size: i64,
    },
}

/// A filesystem mount of an exec.
#[derive(Debug, Clone)]
pub struct Mount {
    dest: String,
    source: State,
    selector: String,
    readonly: bool,
    no_output: bool,
    kind: MountKind,
    content_cache: pb::MountContentCache,
}

impl Mount {
    /// Bind-mounts `source` at `dest`.
    pub fn bind(dest: impl Into<String>, source: &State) -> Self {
        Mount {
            dest: dest.into(),
            source: source.clone(),
            selector: String::new(),
            readonly: false,
            no_output: false,
            kind: MountKind::Bind,
            content_cache: pb::MountContentCache::Default,
        }
    }

    /// A cache mount at `dest`, initially empty (see [`Mount::from`]).
    pub fn cache(
        dest: impl Into<String>,
        id: impl Into<String>,
        sharing: pb::CacheSharingOpt,
    ) -> Self {
        Mount {
            kind: MountKind::Cache {
                id: id.into(),
                sharing,
            },
            ..Mount::bind(dest, &State::scratch())
        }
    }

    /// A tmpfs at `dest`.
    pub fn tmpfs(dest: impl Into<String>) -> Self {
        Mount {
            kind: MountKind::Tmpfs { size: 0 },
            ..Mount::bind(dest, &State::scratch())
        }
    }

    /// Uses `source` as the mount's content (cache seed, bind source).
    pub fn from(mut self, source: &State) -> Self {
        self.source = source.clone();
        self
    }

    /// Mounts only this sub-path of the source.
    pub fn selector(mut self, path: impl Into<String>) -> Self {
        self.selector = path.into();
        self
    }

    /// Mounts read-only; the mount then has no output of its own.
    pub fn readonly(mut self) -> Self {
        self.readonly = true;
        self
    }

    /// Writable, but changes are discarded (no output).
    pub fn no_output(mut self) -> Self {
        self.no_output = true;
        self
    }

    /// Sets the tmpfs size limit (tmpfs mounts only).
    pub fn size(mut self, bytes: i64) -> Self {
        if let MountKind::Tmpfs { size } = &mut self.kind {
            *size = bytes;
        }
        self
    }

    /// Sets the content-cache behaviour.
    pub fn content_cache(mut self, mode: pb::MountContentCache) -> Self {
        self.content_cache = mode;
        self
    }

    fn has_output(&self) -> bool {
        !self.no_output && !self.readonly && self.kind == MountKind::Bind
    }
}

/// A secret exposed as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    /// Secret ID.
    pub id: String,
    /// Mount point of the file.
    pub dest: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// File mode (default `0o400`).
    pub mode: u32,
    /// Do not fail when the secret is missing.
    pub optional: bool,
}

impl SecretMount {
    /// Secret `id` at `dest`, owned by root, mode `0400`.
    pub fn new(id: impl Into<String>, dest: impl Into<String>) -> Self {
        SecretMount {
            id: id.into(),
            dest: dest.into(),
            uid: 0,
            gid: 0,
            mode: 0o400,
            optional: false,
        }
    }
}

/// A secret exposed as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnvVar {
    /// Secret ID.
    pub id: String,
    /// Variable name.
    pub name: String,
    /// Do not fail when the secret is missing.
    pub optional: bool,
}

/// An SSH agent socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshMount {
    /// Forwarded agent ID (default `default`).
    pub id: String,
    /// Socket path; empty picks `/run/buildkit/ssh_agent.<n>`.
    pub dest: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Socket mode (default `0o600`).
    pub mode: u32,
    /// Do not fail when the client exposes no agent.
    pub optional: bool,
}

impl Default for SshMount {
    fn default() -> Self {
        SshMount {
            id: "default".into(),
            dest: String::new(),
            uid: 0,
            gid: 0,
            mode: 0o600,
            optional: false,
        }
    }
}

/// Builder for an exec op; start it with [`State::run`].
#[derive(Debug, Clone)]
pub struct Exec {
    base: State,
    settings: State,
    args: Vec<String>,
    mounts: Vec<Mount>,
    secrets: Vec<SecretMount>,
    secret_env: Vec<SecretEnvVar>,
    ssh: Vec<SshMount>,
    readonly_root: bool,
    proxy_env: Option<pb::ProxyEnv>,
    valid_exit_codes: Option<Vec<i32>>,
    remove_mount_stubs_recursive: bool,
    cdi_devices: Vec<pb::CdiDevice>,
    constraints: Constraints,
}

impl Exec {
    pub(crate) fn new(base: State, args: Vec<String>) -> Self {
        Exec {
            settings: base.clone(),
            base,
            args,
            mounts: Vec::new(),
            secrets: Vec::new(),
            secret_env: Vec::new(),
            ssh: Vec::new(),
            readonly_root: false,
            proxy_env: None,
            valid_exit_codes: None,
            remove_mount_stubs_recursive: true,
            cdi_devices: Vec::new(),
            constraints: Constraints::default(),
        }
    }

    /// Sets an environment variable for this exec only.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_env(&mut self.settings.env, key.into(), value.into());
        self
    }

    /// Sets the working directory (relative paths join the state's dir).
    pub fn cwd(mut self, dir: &str) -> Self {
        self.settings.dir = resolve_dir(&self.settings.dir, dir);
        self
    }

    /// Sets the user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.settings.user = user.into();
        self
    }

    /// Sets the host name.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.settings.hostname = hostname.into();
        self
    }

    /// Adds an `/etc/hosts` entry.
    pub fn extra_host(mut self, host: impl Into<String>, ip: impl Into<String>) -> Self {
        self.settings.extra_hosts.push(pb::HostIp {
            host: host.into(),
            ip: ip.into(),
        });
        self
    }

    /// Sets the network mode.
    pub fn network(mut self, mode: pb::NetMode) -> Self {
        self.settings.network = mode;
        self
    }

    /// Sets the security mode.
    pub fn security(mut self, mode: pb::SecurityMode) -> Self {
        self.settings.security = mode;
        self
    }

    /// Adds a resource limit.
    pub fn ulimit(mut self, name: impl Into<String>, soft: i64, hard: i64) -> Self {
        self.settings.ulimits.push(pb::Ulimit {
            name: name.into(),
            soft,
            hard,
        });
        self
    }

    /// Sets the cgroup parent.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.settings.cgroup_parent = parent.into();
        self
    }

    /// Sets proxy variables that are not part of the cache key.
    pub fn proxy_env(mut self, proxy: pb::ProxyEnv) -> Self {
        self.proxy_env = Some(proxy);
        self
    }

    /// Exit codes that count as success.
    pub fn valid_exit_codes(mut self, codes: Vec<i32>) -> Self {
        self.valid_exit_codes = Some(codes);
        self
    }

    /// Whether to remove mount stubs recursively after the run (on by
    /// default, like BuildKit's client).
    pub fn remove_mount_stubs_recursive(mut self, on: bool) -> Self {
        self.remove_mount_stubs_recursive = on;
        self
    }

    /// Requests a CDI device.
    pub fn cdi_device(mut self, name: impl Into<String>, optional: bool) -> Self {
        self.cdi_devices.push(pb::CdiDevice {
            name: name.into(),
            optional,
        });
        self
    }

    /// Mounts the root filesystem read-only.
    pub fn readonly_rootfs(mut self) -> Self {
        self.readonly_root = true;
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Adds a secret file.
    pub fn secret(mut self, secret: SecretMount) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Adds a secret environment variable.
    pub fn secret_env(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        optional: bool,
    ) -> Self {
        self.secret_env.push(SecretEnvVar {
            id: id.into(),
            name: name.into(),
            optional,
        });
        self
    }

    /// Adds an SSH agent socket.
    pub fn ssh(mut self, ssh: SshMount) -> Self {
        self.ssh.push(ssh);
        self
    }

    /// Finishes the exec.
    pub fn build(self) -> Result<ExecState, BuildError> {
        if self.args.is_empty() {
            return Err(BuildError::EmptyArgs);
        }
        let mut c = self.constraints;
        let mut all = Vec::with_capacity(self.mounts.len() + 1);
        let mut root = Mount::bind(pb::ROOT_MOUNT, &self.base);
        root.readonly = self.readonly_root;
        all.push((true, root));
        all.extend(self.mounts.into_iter().map(|m| (false, m)));
        for (_, m) in &all {
            if matches!(m.kind, MountKind::Tmpfs { .. }) && !m.source.is_scratch() {
                return Err(BuildError::TmpfsWithSource {
                    dest: m.dest.clone(),
                });
            }
        }
        all.sort_by(|a, b| a.1.dest.cmp(&b.1.dest));

        let mut env = self.settings.env.clone();
        let mut ssh = self.ssh;
        for (i, s) in ssh.iter_mut().enumerate() {
            if s.dest.is_empty() {
                s.dest = format!("/run/buildkit/ssh_agent.{i}");
            }
        }
        if let Some(first) = ssh.first()
            && !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK")
        {
            set_env(&mut env, "SSH_AUTH_SOCK".into(), first.dest.clone());
        }

        // Capabilities, as BuildKit's client records them.
        c.add_cap("exec.meta.base");
        if self.valid_exit_codes.is_some() {
            c.add_cap("exec.validexitcode");
        }
        if !self.settings.ulimits.is_empty() {
            c.add_cap("exec.meta.ulimit");
        }
        if !self.settings.cgroup_parent.is_empty() {
            c.add_cap("exec.meta.cgroup.parent");
        }
        if self.settings.network != pb::NetMode::Unset {
            c.add_cap("exec.meta.network");
        }
        if self.settings.security != pb::SecurityMode::Sandbox {
            c.add_cap("exec.meta.security");
        }
        if self.proxy_env.is_some() {
            c.add_cap("exec.meta.proxyenv");
        }
        if !self.cdi_devices.is_empty() {
            c.add_cap("exec.meta.cdi");
        }
        for (_, m) in &all {
            if !m.selector.is_empty() {
                c.add_cap("exec.mount.selector");
            }
            match m.kind {
                MountKind::Cache { .. } => {
                    c.add_cap("exec.mount.cache");
                    c.add_cap("exec.mount.cache.sharing");
                }
                MountKind::Tmpfs { size } => {
                    c.add_cap("exec.mount.tmpfs");
                    if size > 0 {
                        c.add_cap("exec.mount.tmpfs.size");
                    }
                }
                MountKind::Bind => {
                    if !m.source.is_scratch() {
                        c.add_cap("exec.mount.bind");
                    }
                }
            }
            if m.content_cache != pb::MountContentCache::Default {
                c.add_cap("exec.mount.cache.content");
            }
        }
        if !self.secrets.is_empty() || !self.secret_env.is_empty() {
            c.add_cap("exec.mount.secret");
        }
        if !self.secret_env.is_empty() {
            c.add_cap("exec.secretenv");
        }
        if !ssh.is_empty() {
            c.add_cap("exec.mount.ssh");
        }
        if c.platform.is_none() {
            c.platform.clone_from(&self.settings.platform);
        }

        let mut next_output = 0i64;
        let mut specs = Vec::with_capacity(all.len());
        let mut outputs = Vec::with_capacity(all.len());
        for (is_root, m) in &all {
            let output = if m.has_output() {
                next_output += 1;
                next_output - 1
            } else {
                pb::SKIP_OUTPUT
            };
            specs.push(MountSpec {
                dest: m.dest.clone(),
                source: m.source.output.clone(),
                selector: m.selector.clone(),
                readonly: m.readonly,
                output,
                kind: m.kind.clone(),
                content_cache: m.content_cache,
            });
            outputs.push((
                *is_root,
                m.dest.clone(),
                m.readonly,
                m.source.clone(),
                output,
            ));
        }

        let spec = ExecSpec {
            args: self.args,
            env,
            cwd: self.settings.dir.clone(),
            user: self.settings.user.clone(),
            hostname: self.settings.hostname.clone(),
            cgroup_parent: self.settings.cgroup_parent.clone(),
            extra_hosts: self.settings.extra_hosts.clone(),
            ulimits: self.settings.ulimits.clone(),
            network: self.settings.network,
            security: self.settings.security,
            proxy_env: self.proxy_env,
            valid_exit_codes: self.valid_exit_codes,
            remove_mount_stubs_recursive: self.remove_mount_stubs_recursive,
            mounts: specs,
            secrets: self.secrets,
            secret_env: self.secret_env,
            ssh,
            cdi_devices: self.cdi_devices,
        };
        let vertex = std::sync::Arc::new(Vertex {
            kind: VertexKind::Exec(spec),
            constraints: c,
        });
        let output_state = |readonly: bool, source: &State, index: i64| -> Option<State> {
            if readonly {
                Some(source.clone())
            } else if index >= 0 {
                Some(source.with_output(Some(Output {
                    vertex: vertex.clone(),
                    index,
                })))
            } else {
                None
            }
        };
        let mut root_state = self.base.with_output(None);
        let mut mount_states = Vec::new();
        for (is_root, dest, readonly, source, index) in outputs {
            let st = output_state(readonly, &source, index);
            if is_root {
                root_state = match st {
                    Some(s) => self.base.with_output(s.output),
                    None => root_state,
                };
            } else {
                mount_states.push((dest, st));
            }
        }
        Ok(ExecState {
            root: root_state,
            mounts: mount_states,
        })
    }
}

impl OpOptions for Exec {
    fn constraints_mut(&mut self) -> &mut Constraints {
        &mut self.constraints
    }
}

/// The result of an exec: its root filesystem and its mount outputs.
#[derive(Debug, Clone)]
pub struct ExecState {
    root: State,
    mounts: Vec<(String, Option<State>)>,
}

impl ExecState {
    /// The root filesystem after the run, with the base state's settings.
    pub fn root(&self) -> State {
        self.root.clone()
    }

    /// The state of the mount at `dest` after the run: the mount's output,
    /// the unchanged source for a read-only mount, or `None` for mounts
    /// without an output (cache, tmpfs, no-output) and unknown paths.
    pub fn mount(&self, dest: &str) -> Option<State> {
        self.mounts
            .iter()
            .find(|(d, _)| d == dest)
            .and_then(|(_, s)| s.clone())
    }
}

impl From<ExecState> for State {
    fn from(e: ExecState) -> State {
        e.root
    }
}

#[derive(Debug)]
pub(crate) struct MountSpec {
    dest: String,
    source: Option<Output>,
    selector: String,
    readonly: bool,
    output: i64,
    kind: MountKind,
    content_cache: pb::MountContentCache,
}

/// An exec op as stored in the graph.
#[derive(Debug)]
pub(crate) struct ExecSpec {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    user: String,
    hostname: String,
    cgroup_parent: String,
    extra_hosts: Vec<pb::HostIp>,
    ulimits: Vec<pb::Ulimit>,
    network: pb::NetMode,
    security: pb::SecurityMode,
    proxy_env: Option<pb::ProxyEnv>,
    valid_exit_codes: Option<Vec<i32>>,
    remove_mount_stubs_recursive: bool,
    mounts: Vec<MountSpec>,
    secrets: Vec<SecretMount>,
    secret_env: Vec<SecretEnvVar>,
    ssh: Vec<SshMount>,
    cdi_devices: Vec<pb::CdiDevice>,
}

impl ExecSpec {
    pub(crate) fn inputs(&self) -> Vec<&Output> {
        self.mounts
            .iter()
            .filter_map(|m| m.source.as_ref())
            .collect()
    }

    /// Builds the op body and its inputs. `os` is the platform OS used for
    /// the default `PATH`.
    pub(crate) fn render(
        &self,
        m: &Marshaler<'_>,
        constraints: &mut Constraints,
        os: &str,
    ) -> (Vec<pb::Input>, pb::ExecOp) {
        let mut env = self.env.clone();
        match m.options().default_path {
            DefaultPath::Unknown => {}
            DefaultPath::DaemonSets => constraints.add_cap("exec.meta.setsdefaultpath"),
            DefaultPath::ClientSets => {
                if os != "windows" && !env.iter().any(|(k, _)| k == "PATH") {
                    env.push(("PATH".into(), DEFAULT_PATH_UNIX.into()));
                }
            }
        }
        let meta = pb::Meta {
            args: self.args.clone(),
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            proxy_env: self.proxy_env.clone(),
            extra_hosts: self.extra_hosts.clone(),
            hostname: self.hostname.clone(),
            ulimit: self.ulimits.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            remove_mount_stubs_recursive: self.remove_mount_stubs_recursive,
            valid_exit_codes: self.valid_exit_codes.clone().unwrap_or_default(),
        };
        let mut inputs: Vec<pb::Input> = Vec::new();
        let mut mounts = Vec::with_capacity(self.mounts.len());
        for spec in &self.mounts {
            let input = match &spec.source {
                Some(out) => {
                    let inp = m.input(out);
                    match inputs.iter().position(|i| *i == inp) {
                        Some(i) => i as i64,
                        None => {
                            inputs.push(inp);
                            inputs.len() as i64 - 1
                        }
                    }
                }
                None => pb::EMPTY_INPUT,
            };
            let mut pm = pb::Mount {
                input,
                selector: spec.selector.clone(),
                dest: spec.dest.clone(),
                output: spec.output,
                readonly: spec.readonly,
                content_cache: spec.content_cache as i32,
                ..Default::default()
            };
            match &spec.kind {
                MountKind::Bind => {}
                MountKind::Cache { id, sharing } => {
                    pm.mount_type = pb::MountType::Cache as i32;
                    pm.cache_opt = Some(pb::CacheOpt {
                        id: id.clone(),
                        sharing: *sharing as i32,
                    });
                }
                MountKind::Tmpfs { size } => {
                    pm.mount_type = pb::MountType::Tmpfs as i32;
                    pm.tmpfs_opt = Some(pb::TmpfsOpt { size: *size });
                }
            }
            mounts.push(pm);
        }
        for s in &self.secrets {
            mounts.push(pb::Mount {
                input: pb::EMPTY_INPUT,
                dest: s.dest.clone(),
                mount_type: pb::MountType::Secret as i32,
                secret_opt: Some(pb::SecretOpt {
                    id: s.id.clone(),
                    uid: s.uid,
                    gid: s.gid,
                    mode: s.mode,
                    optional: s.optional,
                }),
                ..Default::default()
            });
        }
        for s in &self.ssh {
            mounts.push(pb::Mount {
                input: pb::EMPTY_INPUT,
                dest: s.dest.clone(),
                mount_type: pb::MountType::Ssh as i32,
                ssh_opt: Some(pb::SshOpt {
                    id: s.id.clone(),
                    uid: s.uid,
                    gid: s.gid,
                    mode: s.mode,
                    optional: s.optional,
                }),
                ..Default::default()
            });
        }
        let exec = pb::ExecOp {
            meta: Some(meta),
            mounts,
            network: self.network as i32,
            security: self.security as i32,
            secretenv: self
                .secret_env
                .iter()
                .map(|s| pb::SecretEnv {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    optional: s.optional,
                })
                .collect(),
            cdi_devices: self.cdi_devices.clone(),
        };
        (inputs, exec)
    }
}
