//! A State-style LLB builder for frontends, in the spirit of BuildKit's
//! `client/llb`.
//!
//! A [`State`] is an immutable value: a reference to one output of a vertex
//! (or scratch) plus the settings later execs inherit (env, working dir,
//! user, platform, network, ...). Sources ([`image`], [`local`], [`git`],
//! [`http`], [`oci_layout`], [`scratch`]) start a graph; [`State::run`],
//! [`State::file`], [`merge`] and [`diff`] extend it; [`State::marshal`]
//! turns it into a `pb::Definition` whose op bytes and digests match what
//! BuildKit's Go client produces for the same graph.
//!
//! Per-op metadata (custom name, ignore-cache, progress group, platform,
//! caps, source locations) is set through the [`OpOptions`] trait that every
//! op builder implements.
//!
//! Defaults follow the current Go client: a state's working dir is `/`,
//! execs set `removeMountStubsRecursive` (turn it off with
//! [`Exec::remove_mount_stubs_recursive`]), ops without a platform get
//! [`MarshalOptions::platform`] or `linux/amd64`, and `PATH` is only added
//! when [`MarshalOptions::default_path`] says the daemon will not.
//!
//! Deliberate departures from the Go client:
//! * it gives every `local://` source a random `local.unique` attribute;
//!   kiln's builder is deterministic and only sets it when the caller passes
//!   [`Local::unique_id`];
//! * file ops record the specific `file.*` capabilities they use (the Go
//!   client only records `file.base`); metadata is not part of digests.
//!
//! Uses [`crate::pb`] and [`crate::digest`].

mod exec;
mod file;
mod marshal;
mod merge;
mod path;
mod source;
mod state;

use std::sync::Arc;

use crate::pb;

pub use exec::{Exec, ExecState, Mount, MountKind, SecretEnvVar, SecretMount, SshMount};
pub use file::{
    ChownOpt, CopyMode, CopyOptions, CopySource, FileAction, MkdirOptions, MkfileOptions,
    RmOptions, SymlinkOptions, UserRef, copy, mkdir, mkfile, rm, symlink,
};
pub use marshal::{DefaultPath, MarshalOptions};
pub use merge::{diff, diff_with, merge, merge_with};
pub use source::{
    Git, Http, Image, Local, OciLayout, ResolveMode, git, http, image, local, normalize_image_ref,
    oci_layout, scratch,
};
pub use state::{Output, State};

/// Description key BuildKit uses for the display name of a vertex.
pub const CUSTOM_NAME_KEY: &str = "llb.customname";

/// Why a graph cannot be built or marshaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidImageReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An exec op has no arguments.
    #[error("exec op needs at least one argument")]
    EmptyArgs,
    /// A tmpfs mount was given a source state.
    #[error("tmpfs mount {dest:?} must use scratch as its source")]
    TmpfsWithSource {
        /// The mount destination.
        dest: String,
    },
}

/// A source file referenced by op source locations (a Dockerfile, ...).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceMap {
    /// File name.
    pub filename: String,
    /// Language, e.g. `Dockerfile`.
    pub language: String,
    /// File contents.
    pub data: Vec<u8>,
    /// LLB that loaded the file, if any.
    pub definition: Option<pb::Definition>,
}

/// A location of an op in a [`SourceMap`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLocation {
    /// The file.
    pub source_map: Arc<SourceMap>,
    /// Ranges in it.
    pub ranges: Vec<pb::Range>,
}

/// Settings shared by every op: platform, worker constraints, metadata and
/// source locations. BuildKit calls this `Constraints`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Platform; `None` inherits the state's platform or the marshal default.
    pub platform: Option<pb::Platform>,
    /// containerd-style worker filters.
    pub worker_constraints: Vec<String>,
    /// Metadata stored in `Definition.metadata` (not part of the digest).
    pub metadata: pb::OpMetadata,
    /// Source locations stored in `Definition.source`.
    pub source_locations: Vec<SourceLocation>,
}

impl Constraints {
    pub(crate) fn add_cap(&mut self, cap: &str) {
        self.metadata.caps.insert(cap.to_owned(), true);
    }
}

/// Metadata setters shared by every op builder.
pub trait OpOptions: Sized {
    /// The op's constraints.
    fn constraints_mut(&mut self) -> &mut Constraints;

    /// Sets the progress display name (`llb.customname`).
    fn custom_name(mut self, name: impl Into<String>) -> Self {
        self.constraints_mut()
            .metadata
            .description
            .insert(CUSTOM_NAME_KEY.to_owned(), name.into());
        self
    }

    /// Adds a free-form description entry.
    fn description(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.constraints_mut()
            .metadata
            .description
            .insert(key.into(), value.into());
        self
    }

    /// Ignores cached results for this op.
    fn ignore_cache(mut self) -> Self {
        self.constraints_mut().metadata.ignore_cache = true;
        self
    }

    /// Sets the cache export preference.
    fn export_cache(mut self, value: bool) -> Self {
        self.constraints_mut().metadata.export_cache = Some(pb::ExportCache { value });
        self
    }

    /// Puts the op in a progress group.
    fn progress_group(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        weak: bool,
    ) -> Self {
        self.constraints_mut().metadata.progress_group = Some(pb::ProgressGroup {
            id: id.into(),
            name: name.into(),
            weak,
        });
        self
    }

    /// Sets per-step Linux resource limits.
    fn linux_resources(mut self, resources: pb::LinuxResources) -> Self {
        let c = self.constraints_mut();
        c.metadata.linux_resources = Some(resources);
        c.add_cap("exec.meta.linux.resources");
        self
    }

    /// Sets the op's platform.
    fn platform(mut self, platform: pb::Platform) -> Self {
        self.constraints_mut().platform = Some(platform);
        self
    }

    /// Adds a worker constraint filter.
    fn worker_constraint(mut self, filter: impl Into<String>) -> Self {
        self.constraints_mut()
            .worker_constraints
            .push(filter.into());
        self
    }

    /// Marks a capability as required by this op.
    fn require_cap(mut self, cap: impl AsRef<str>) -> Self {
        self.constraints_mut().add_cap(cap.as_ref());
        self
    }

    /// Records where in a source file this op comes from.
    fn source_location(mut self, source_map: &Arc<SourceMap>, ranges: Vec<pb::Range>) -> Self {
        self.constraints_mut()
            .source_locations
            .push(SourceLocation {
                source_map: Arc::clone(source_map),
                ranges,
            });
        self
    }

    /// Merges a whole set of constraints into the op's own.
    fn with_constraints(mut self, other: &Constraints) -> Self {
        let c = self.constraints_mut();
        if other.platform.is_some() {
            c.platform.clone_from(&other.platform);
        }
        c.worker_constraints
            .extend(other.worker_constraints.iter().cloned());
        c.metadata = merge_metadata(&c.metadata, &other.metadata);
        c.source_locations
            .extend(other.source_locations.iter().cloned());
        self
    }
}

impl OpOptions for Constraints {
    fn constraints_mut(&mut self) -> &mut Constraints {
        self
    }
}

/// `linux/amd64`.
pub fn linux_amd64() -> pb::Platform {
    platform("linux", "amd64", "")
}

/// `linux/arm64`.
pub fn linux_arm64() -> pb::Platform {
    platform("linux", "arm64", "")
}

/// A platform from its parts.
pub fn platform(os: &str, architecture: &str, variant: &str) -> pb::Platform {
    pb::Platform {
        architecture: architecture.to_owned(),
        os: os.to_owned(),
        variant: variant.to_owned(),
        ..Default::default()
    }
}

/// Merges `over` on top of `base`, as BuildKit does when one digest carries
/// metadata from several places.
pub(crate) fn merge_metadata(base: &pb::OpMetadata, over: &pb::OpMetadata) -> pb::OpMetadata {
    let mut out = base.clone();
    out.ignore_cache |= over.ignore_cache;
    for (k, v) in &over.description {
        out.description.insert(k.clone(), v.clone());
    }
    if over.export_cache.is_some() {
        out.export_cache.clone_from(&over.export_cache);
    }
    for k in over.caps.keys() {
        out.caps.insert(k.clone(), true);
    }
    if over.progress_group.is_some() {
        out.progress_group.clone_from(&over.progress_group);
    }
    if over.linux_resources.is_some() {
        out.linux_resources.clone_from(&over.linux_resources);
    }
    out
}

/// What a vertex does; inputs are held as [`Output`]s.
#[derive(Debug)]
pub(crate) enum VertexKind {
    Source(source::SourceSpec),
    Exec(exec::ExecSpec),
    File(file::FileSpec),
    Merge(Vec<Output>),
    Diff {
        lower: Option<Output>,
        upper: Option<Output>,
    },
}

/// A node of the graph under construction.
#[derive(Debug)]
pub(crate) struct Vertex {
    pub(crate) kind: VertexKind,
    pub(crate) constraints: Constraints,
}

impl Vertex {
    /// Every output this vertex reads, in marshal order.
    pub(crate) fn inputs(&self) -> Vec<&Output> {
        match &self.kind {
            VertexKind::Source(_) => Vec::new(),
            VertexKind::Exec(e) => e.inputs(),
            VertexKind::File(f) => f.inputs(),
            VertexKind::Merge(inputs) => inputs.iter().collect(),
            VertexKind::Diff { lower, upper } => lower.iter().chain(upper.iter()).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
