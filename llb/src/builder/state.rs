//! [`State`] and [`Output`]: immutable handles on the graph under
//! construction.

use std::sync::Arc;

use super::exec::Exec;
use super::file::{FileAction, FileSpec};
use super::marshal::{MarshalOptions, Marshaler};
use super::path::resolve_dir;
use super::{BuildError, Constraints, Vertex, VertexKind};
use crate::pb;

/// One output of a vertex.
#[derive(Debug, Clone)]
pub struct Output {
    pub(crate) vertex: Arc<Vertex>,
    pub(crate) index: i64,
}

impl Output {
    pub(crate) fn new(vertex: Vertex, index: i64) -> Self {
        Output {
            vertex: Arc::new(vertex),
            index,
        }
    }

    /// The output index within its vertex.
    pub fn index(&self) -> i64 {
        self.index
    }
}

/// A filesystem state plus the settings inherited by later execs.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) output: Option<Output>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: String,
    pub(crate) user: String,
    pub(crate) hostname: String,
    pub(crate) network: pb::NetMode,
    pub(crate) security: pb::SecurityMode,
    pub(crate) platform: Option<pb::Platform>,
    pub(crate) extra_hosts: Vec<pb::HostIp>,
    pub(crate) ulimits: Vec<pb::Ulimit>,
    pub(crate) cgroup_parent: String,
}

impl Default for State {
    fn default() -> Self {
        State {
            output: None,
            env: Vec::new(),
            dir: "/".to_owned(),
            user: String::new(),
            hostname: String::new(),
            network: pb::NetMode::Unset,
            security: pb::SecurityMode::Sandbox,
            platform: None,
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            cgroup_parent: String::new(),
        }
    }
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> Self {
        State::default()
    }

    pub(crate) fn from_output(output: Output) -> Self {
        State {
            output: Some(output),
            ..State::default()
        }
    }

    /// This state with another filesystem, keeping its settings.
    pub fn with_output(&self, output: Option<Output>) -> Self {
        State {
            output,
            ..self.clone()
        }
    }

    /// The filesystem this state refers to (`None` = scratch).
    pub fn output(&self) -> Option<&Output> {
        self.output.as_ref()
    }

    /// Whether the state is the empty filesystem.
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// Sets an environment variable (an existing one moves to the end, as in
    /// BuildKit).
    pub fn add_env(&self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut s = self.clone();
        set_env(&mut s.env, key.into(), value.into());
        s
    }

    /// Removes an environment variable.
    pub fn del_env(&self, key: &str) -> Self {
        let mut s = self.clone();
        s.env.retain(|(k, _)| k != key);
        s
    }

    /// Value of an environment variable.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The environment as `KEY=VALUE` strings.
    pub fn env(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Changes the working directory; a relative path is joined to the
    /// current one.
    pub fn dir(&self, dir: &str) -> Self {
        let mut s = self.clone();
        s.dir = resolve_dir(&self.dir, dir);
        s
    }

    /// The working directory.
    pub fn get_dir(&self) -> &str {
        &self.dir
    }

    /// Sets the user for later execs.
    pub fn user(&self, user: impl Into<String>) -> Self {
        State {
            user: user.into(),
            ..self.clone()
        }
    }

    /// The user for later execs.
    pub fn get_user(&self) -> &str {
        &self.user
    }

    /// Sets the host name for later execs.
    pub fn hostname(&self, hostname: impl Into<String>) -> Self {
        State {
            hostname: hostname.into(),
            ..self.clone()
        }
    }

    /// Sets the network mode for later execs.
    pub fn network(&self, network: pb::NetMode) -> Self {
        State {
            network,
            ..self.clone()
        }
    }

    /// Sets the security mode for later execs.
    pub fn security(&self, security: pb::SecurityMode) -> Self {
        State {
            security,
            ..self.clone()
        }
    }

    /// Sets the platform for later ops.
    pub fn platform(&self, platform: pb::Platform) -> Self {
        State {
            platform: Some(platform),
            ..self.clone()
        }
    }

    /// The platform, if set.
    pub fn get_platform(&self) -> Option<&pb::Platform> {
        self.platform.as_ref()
    }

    /// Adds an `/etc/hosts` entry for later execs.
    pub fn add_extra_host(&self, host: impl Into<String>, ip: impl Into<String>) -> Self {
        let mut s = self.clone();
        s.extra_hosts.push(pb::HostIp {
            host: host.into(),
            ip: ip.into(),
        });
        s
    }

    /// Adds a resource limit for later execs.
    pub fn add_ulimit(&self, name: impl Into<String>, soft: i64, hard: i64) -> Self {
        let mut s = self.clone();
        s.ulimits.push(pb::Ulimit {
            name: name.into(),
            soft,
            hard,
        });
        s
    }

    /// Sets the cgroup parent for later execs.
    pub fn cgroup_parent(&self, parent: impl Into<String>) -> Self {
        State {
            cgroup_parent: parent.into(),
            ..self.clone()
        }
    }

    /// Starts an exec on this state with the given argv.
    pub fn run<I, S>(&self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Exec::new(self.clone(), args.into_iter().map(Into::into).collect())
    }

    /// Starts `/bin/sh -c <command>` on this state.
    pub fn run_shell(&self, command: impl Into<String>) -> Exec {
        self.run(["/bin/sh".to_owned(), "-c".to_owned(), command.into()])
    }

    /// Applies a chain of file actions to this state.
    pub fn file(&self, action: FileAction) -> State {
        self.file_with(action, Constraints::default())
    }

    /// Applies a chain of file actions with op constraints.
    pub fn file_with(&self, action: FileAction, mut constraints: Constraints) -> State {
        constraints.add_cap("file.base");
        let spec = FileSpec::new(self.clone(), action, &mut constraints);
        let vertex = Vertex {
            kind: VertexKind::File(spec),
            constraints,
        };
        self.with_output(Some(Output::new(vertex, 0)))
    }

    /// Marshals the graph ending at this state.
    ///
    /// Scratch marshals to a definition with no ops, as in BuildKit.
    pub fn marshal(&self, opts: &MarshalOptions) -> Result<pb::Definition, BuildError> {
        Marshaler::new(opts).run(self.output.as_ref())
    }

    /// [`State::marshal`], encoded to bytes (what a frontend returns and
    /// the gateway's `solve` takes).
    pub fn marshal_to_vec(&self, opts: &MarshalOptions) -> Result<Vec<u8>, BuildError> {
        use prost::Message as _;
        Ok(self.marshal(opts)?.encode_to_vec())
    }
}

pub(crate) fn set_env(env: &mut Vec<(String, String)>, key: String, value: String) {
    env.retain(|(k, _)| *k != key);
    env.push((key, value));
}
