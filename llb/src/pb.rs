//! The messages and enums of BuildKit's `solver/pb/ops.proto` (package `pb`),
//! written by hand for prost.
//!
//! Field numbers, types and enum values follow the upstream schema, so the
//! wire bytes are interchangeable with BuildKit's. Encoding is byte-identical
//! to Go's deterministic marshal (`proto.MarshalOptions{Deterministic: true}`):
//!
//! * fields are written in ascending field-number order and proto3 zero values
//!   are skipped, as prost's derive does;
//! * a present-but-empty sub-message (`Some(Default::default())`) is still
//!   written as tag + length 0;
//! * maps are `BTreeMap`s, so entries come out sorted by key. Go always writes
//!   both the key and the value of a map entry, even when they are zero
//!   values, while prost's generic map encoder drops them. The five messages
//!   that hold maps ([`SourceOp`], [`BuildOp`], [`OpMetadata`], [`Source`],
//!   [`Definition`]) therefore implement [`prost::Message`] by hand with
//!   Go's entry layout, so that e.g. a source attribute with an empty value
//!   hashes the same as in BuildKit.
//!
//! This module depends on nothing else in the crate.

use std::collections::BTreeMap;

/// Output index meaning "this mount or action produces no output".
pub const SKIP_OUTPUT: i64 = -1;
/// Input index meaning "no input" (an empty, scratch filesystem).
pub const EMPTY_INPUT: i64 = -1;
/// Destination of the root mount of an exec op.
pub const ROOT_MOUNT: &str = "/";
/// `BuildOp.builder` value meaning "the input is an LLB definition".
pub const LLB_BUILDER: i64 = -1;
/// `BuildOp` input key (and default file name) of the nested definition.
pub const LLB_DEFINITION_INPUT: &str = "buildkit.llb.definition";

/// A vertex of the LLB graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    /// Input edges: each names another op by digest and one of its outputs.
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<Input>,
    /// What the vertex does. `None` only for the terminal pseudo-op.
    #[prost(oneof = "op::Op", tags = "2, 3, 4, 5, 6, 7, 8")]
    pub op: Option<op::Op>,
    /// Platform the op is built for (cleared for non-image sources, file,
    /// merge and diff ops).
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
    /// Worker constraints; BuildKit's client always sets an empty one.
    #[prost(message, optional, tag = "11")]
    pub constraints: Option<WorkerConstraints>,
}

/// Nested types of [`Op`].
pub mod op {
    /// The `op` oneof of [`super::Op`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[expect(
        clippy::large_enum_variant,
        reason = "mirrors the protobuf oneof; boxing would complicate every user"
    )]
    pub enum Op {
        /// Run a process in a container.
        #[prost(message, tag = "2")]
        Exec(super::ExecOp),
        /// Import content (image, local dir, git, http, OCI layout).
        #[prost(message, tag = "3")]
        Source(super::SourceOp),
        /// Filesystem actions (copy, mkdir, mkfile, rm, symlink).
        #[prost(message, tag = "4")]
        File(super::FileOp),
        /// Nested build (experimental).
        #[prost(message, tag = "5")]
        Build(super::BuildOp),
        /// Merge several inputs into one filesystem.
        #[prost(message, tag = "6")]
        Merge(super::MergeOp),
        /// Difference between two inputs.
        #[prost(message, tag = "7")]
        Diff(super::DiffOp),
        /// Pass results of a solve through unchanged.
        #[prost(message, tag = "8")]
        Passthrough(super::PassthroughOp),
    }
}

/// OCI platform of an op (`image-spec` `Platform`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    #[prost(string, tag = "1")]
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    #[prost(string, tag = "2")]
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[prost(string, tag = "3")]
    pub variant: String,
    /// OS version (Windows).
    #[prost(string, tag = "4")]
    pub os_version: String,
    /// OS features (unused by BuildKit).
    #[prost(string, repeated, tag = "5")]
    pub os_features: Vec<String>,
}

/// An input edge of an [`Op`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Input {
    /// `sha256:<hex>` digest of the input op's marshaled bytes.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Output index of the input op.
    #[prost(int64, tag = "2")]
    pub index: i64,
}

/// Runs a command in a container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    /// Process settings.
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Meta>,
    /// Mounts, root (`/`) included.
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    /// Network mode ([`NetMode`]).
    #[prost(enumeration = "NetMode", tag = "3")]
    pub network: i32,
    /// Security mode ([`SecurityMode`]).
    #[prost(enumeration = "SecurityMode", tag = "4")]
    pub security: i32,
    /// Environment variables backed by secrets.
    #[prost(message, repeated, tag = "5")]
    pub secretenv: Vec<SecretEnv>,
    /// CDI devices to expose.
    #[prost(message, repeated, tag = "6")]
    pub cdi_devices: Vec<CdiDevice>,
}

/// Process settings of an [`ExecOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    /// argv.
    #[prost(string, repeated, tag = "1")]
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE`.
    #[prost(string, repeated, tag = "2")]
    pub env: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "3")]
    pub cwd: String,
    /// User (`name`, `uid`, `uid:gid`, ...).
    #[prost(string, tag = "4")]
    pub user: String,
    /// Proxy variables that are not part of the cache key.
    #[prost(message, optional, tag = "5")]
    pub proxy_env: Option<ProxyEnv>,
    /// Extra `/etc/hosts` entries.
    #[prost(message, repeated, tag = "6")]
    pub extra_hosts: Vec<HostIp>,
    /// Container host name.
    #[prost(string, tag = "7")]
    pub hostname: String,
    /// Resource limits.
    #[prost(message, repeated, tag = "9")]
    pub ulimit: Vec<Ulimit>,
    /// Cgroup parent.
    #[prost(string, tag = "10")]
    pub cgroup_parent: String,
    /// Remove mount stubs recursively after the run.
    #[prost(bool, tag = "11")]
    pub remove_mount_stubs_recursive: bool,
    /// Exit codes treated as success (default: only 0).
    #[prost(int32, repeated, tag = "12")]
    pub valid_exit_codes: Vec<i32>,
}

/// An extra host entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HostIp {
    /// Host name.
    #[prost(string, tag = "1")]
    pub host: String,
    /// IP address.
    #[prost(string, tag = "2")]
    pub ip: String,
}

/// A resource limit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ulimit {
    /// Limit name, e.g. `nofile`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Soft limit.
    #[prost(int64, tag = "2")]
    pub soft: i64,
    /// Hard limit.
    #[prost(int64, tag = "3")]
    pub hard: i64,
}

/// Proxy environment of an exec.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyEnv {
    /// `HTTP_PROXY`.
    #[prost(string, tag = "1")]
    pub http_proxy: String,
    /// `HTTPS_PROXY`.
    #[prost(string, tag = "2")]
    pub https_proxy: String,
    /// `FTP_PROXY`.
    #[prost(string, tag = "3")]
    pub ftp_proxy: String,
    /// `NO_PROXY`.
    #[prost(string, tag = "4")]
    pub no_proxy: String,
    /// `ALL_PROXY`.
    #[prost(string, tag = "5")]
    pub all_proxy: String,
}

/// An environment variable whose value is a secret.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretEnv {
    /// Secret ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Variable name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Do not fail when the secret is missing.
    #[prost(bool, tag = "3")]
    pub optional: bool,
}

/// A CDI device request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CdiDevice {
    /// Fully qualified device name, e.g. `vendor.com/gpu=dev0`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Do not fail when the device is missing.
    #[prost(bool, tag = "2")]
    pub optional: bool,
}

/// Worker selection filters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerConstraints {
    /// containerd-style filters.
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// A mount of an [`ExecOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Index into `Op.inputs`, or [`EMPTY_INPUT`].
    #[prost(int64, tag = "1")]
    pub input: i64,
    /// Sub-path of the input to mount.
    #[prost(string, tag = "2")]
    pub selector: String,
    /// Mount point.
    #[prost(string, tag = "3")]
    pub dest: String,
    /// Output index, or [`SKIP_OUTPUT`].
    #[prost(int64, tag = "4")]
    pub output: i64,
    /// Mount read-only.
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    /// Mount kind ([`MountType`]).
    #[prost(enumeration = "MountType", tag = "6")]
    pub mount_type: i32,
    /// Options of a tmpfs mount.
    #[prost(message, optional, tag = "19")]
    pub tmpfs_opt: Option<TmpfsOpt>,
    /// Options of a cache mount.
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
    /// Options of a secret mount.
    #[prost(message, optional, tag = "21")]
    pub secret_opt: Option<SecretOpt>,
    /// Options of an SSH agent mount.
    #[prost(message, optional, tag = "22")]
    pub ssh_opt: Option<SshOpt>,
    /// Result ID (gateway containers).
    #[prost(string, tag = "23")]
    pub result_id: String,
    /// Content-cache behaviour ([`MountContentCache`]).
    #[prost(enumeration = "MountContentCache", tag = "24")]
    pub content_cache: i32,
}

/// tmpfs mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TmpfsOpt {
    /// Size limit in bytes (0 = default).
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// Cache mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOpt {
    /// Cache namespace ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Sharing mode ([`CacheSharingOpt`]).
    #[prost(enumeration = "CacheSharingOpt", tag = "2")]
    pub sharing: i32,
}

/// Secret mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretOpt {
    /// Secret ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Owner uid of the file.
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    /// Owner gid of the file.
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    /// File mode.
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    /// Do not fail when the secret is missing.
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

/// SSH agent mount options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SshOpt {
    /// SSH forward ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Owner uid of the socket.
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    /// Owner gid of the socket.
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    /// Socket mode.
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    /// Do not fail when the client exposes no agent.
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

/// Imports content: an image, a local directory, git, http, an OCI layout.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct SourceOp {
    /// Identifier, e.g. `docker-image://docker.io/library/alpine:latest`.
    pub identifier: String,
    /// Source attributes (`image.resolvemode`, `local.includepattern`, ...).
    pub attrs: BTreeMap<String, String>,
}

/// Nested build (experimental upstream).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct BuildOp {
    /// Input index holding the builder, or [`LLB_BUILDER`].
    pub builder: i64,
    /// Named inputs.
    pub inputs: BTreeMap<String, BuildInput>,
    /// Nested definition.
    pub def: Option<Definition>,
    /// Attributes.
    pub attrs: BTreeMap<String, String>,
}

/// An input of a [`BuildOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct BuildInput {
    /// Index into `Op.inputs`.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// A list of filesystem actions with exactly one output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOp {
    /// Actions in execution order (field 1 is unused upstream).
    #[prost(message, repeated, tag = "2")]
    pub actions: Vec<FileAction>,
}

/// One filesystem action of a [`FileOp`].
///
/// `input`/`secondary_input` below `len(Op.inputs)` name op inputs; a value
/// `n >= len(Op.inputs)` names the result of action `n - len(Op.inputs)`;
/// `-1` means scratch / none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileAction {
    /// Filesystem the action applies to.
    #[prost(int64, tag = "1")]
    pub input: i64,
    /// Second filesystem (the copy source).
    #[prost(int64, tag = "2")]
    pub secondary_input: i64,
    /// Output index: `-1` for all actions but the last, which has `0`.
    #[prost(int64, tag = "3")]
    pub output: i64,
    /// The action.
    #[prost(oneof = "file_action::Action", tags = "4, 5, 6, 7, 8")]
    pub action: Option<file_action::Action>,
}

/// Nested types of [`FileAction`].
pub mod file_action {
    /// The `action` oneof of [`super::FileAction`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Action {
        /// Copy from `secondary_input` onto `input`.
        #[prost(message, tag = "4")]
        Copy(super::FileActionCopy),
        /// Create a file.
        #[prost(message, tag = "5")]
        Mkfile(super::FileActionMkFile),
        /// Create a directory.
        #[prost(message, tag = "6")]
        Mkdir(super::FileActionMkDir),
        /// Remove a path.
        #[prost(message, tag = "7")]
        Rm(super::FileActionRm),
        /// Create a symlink.
        #[prost(message, tag = "8")]
        Symlink(super::FileActionSymlink),
    }
}

/// Copy action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionCopy {
    /// Source path.
    #[prost(string, tag = "1")]
    pub src: String,
    /// Destination path.
    #[prost(string, tag = "2")]
    pub dest: String,
    /// Owner override.
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// Permission bits override, `-1` when unset.
    #[prost(int32, tag = "4")]
    pub mode: i32,
    /// Resolve symlinks in `src`.
    #[prost(bool, tag = "5")]
    pub follow_symlink: bool,
    /// Copy only the contents of a source directory.
    #[prost(bool, tag = "6")]
    pub dir_copy_contents: bool,
    /// Unpack archives like Docker's `ADD`.
    #[prost(bool, tag = "7")]
    pub attempt_unpack_docker_compatibility: bool,
    /// Create missing parent directories of `dest`.
    #[prost(bool, tag = "8")]
    pub create_dest_path: bool,
    /// Allow wildcards in `src`.
    #[prost(bool, tag = "9")]
    pub allow_wildcard: bool,
    /// Do not fail when a wildcard matches nothing.
    #[prost(bool, tag = "10")]
    pub allow_empty_wildcard: bool,
    /// Timestamp override in unix nanoseconds, `-1` when unset.
    #[prost(int64, tag = "11")]
    pub timestamp: i64,
    /// Copy only paths matching one of these patterns.
    #[prost(string, repeated, tag = "12")]
    pub include_patterns: Vec<String>,
    /// Skip paths matching any of these patterns.
    #[prost(string, repeated, tag = "13")]
    pub exclude_patterns: Vec<String>,
    /// Replace destination paths whose type differs from the source.
    #[prost(bool, tag = "14")]
    pub always_replace_existing_dest_paths: bool,
    /// Symbolic chmod, e.g. `u+x`.
    #[prost(string, tag = "15")]
    pub mode_str: String,
    /// Paths that must exist in the source.
    #[prost(string, repeated, tag = "16")]
    pub required_paths: Vec<String>,
}

/// Create-file action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkFile {
    /// Path of the new file.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Permission bits.
    #[prost(int32, tag = "2")]
    pub mode: i32,
    /// File contents.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    /// Owner.
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds, `-1` when unset.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

/// Create-directory action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkDir {
    /// Path of the new directory.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Permission bits.
    #[prost(int32, tag = "2")]
    pub mode: i32,
    /// Create missing parents.
    #[prost(bool, tag = "3")]
    pub make_parents: bool,
    /// Owner.
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds, `-1` when unset.
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

/// Remove action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionRm {
    /// Path to remove.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Do not fail when the path does not exist.
    #[prost(bool, tag = "2")]
    pub allow_not_found: bool,
    /// Allow wildcards in `path`.
    #[prost(bool, tag = "3")]
    pub allow_wildcard: bool,
}

/// Create-symlink action.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionSymlink {
    /// Link target.
    #[prost(string, tag = "1")]
    pub oldpath: String,
    /// Link location.
    #[prost(string, tag = "2")]
    pub newpath: String,
    /// Owner.
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds, `-1` when unset.
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
}

/// Ownership of created files.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChownOpt {
    /// Owning user.
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserOpt>,
    /// Owning group.
    #[prost(message, optional, tag = "2")]
    pub group: Option<UserOpt>,
}

/// A user or group, by name or numeric ID.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserOpt {
    /// The choice.
    #[prost(oneof = "user_opt::User", tags = "1, 2")]
    pub user: Option<user_opt::User>,
}

/// Nested types of [`UserOpt`].
pub mod user_opt {
    /// The `user` oneof of [`super::UserOpt`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum User {
        /// By name, resolved against an input's `/etc/passwd` / `/etc/group`.
        #[prost(message, tag = "1")]
        ByName(super::NamedUserOpt),
        /// By numeric ID.
        #[prost(uint32, tag = "2")]
        ById(u32),
    }
}

/// A user or group name and the input to resolve it against.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedUserOpt {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Input index (same numbering as `FileAction.input`).
    #[prost(int64, tag = "2")]
    pub input: i64,
}

/// Merges inputs into one filesystem, later inputs on top.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeOp {
    /// Inputs in order.
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<MergeInput>,
}

/// An input of a [`MergeOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeInput {
    /// Index into `Op.inputs`.
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// The changes that turn `lower` into `upper`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiffOp {
    /// Lower filesystem.
    #[prost(message, optional, tag = "1")]
    pub lower: Option<LowerDiffInput>,
    /// Upper filesystem.
    #[prost(message, optional, tag = "2")]
    pub upper: Option<UpperDiffInput>,
}

/// Lower input of a [`DiffOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct LowerDiffInput {
    /// Index into `Op.inputs`, or [`EMPTY_INPUT`].
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// Upper input of a [`DiffOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpperDiffInput {
    /// Index into `Op.inputs`, or [`EMPTY_INPUT`].
    #[prost(int64, tag = "1")]
    pub input: i64,
}

/// Passes results through unchanged.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PassthroughOp {
    /// Identifier.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Output indexes.
    #[prost(int64, repeated, tag = "2")]
    pub outputs: Vec<i64>,
}

/// A marshaled LLB graph: ops in post order, terminal pseudo-op last.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Definition {
    /// Marshaled [`Op`] messages.
    pub def: Vec<Vec<u8>>,
    /// Per-op metadata keyed by op digest string.
    pub metadata: BTreeMap<String, OpMetadata>,
    /// Source maps.
    pub source: Option<Source>,
}

/// Per-vertex metadata; not part of the op digest.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct OpMetadata {
    /// Ignore cached results of this op.
    pub ignore_cache: bool,
    /// Free-form description (`llb.customname`, ...).
    pub description: BTreeMap<String, String>,
    /// Cache export preference.
    pub export_cache: Option<ExportCache>,
    /// Capabilities the op requires.
    pub caps: BTreeMap<String, bool>,
    /// Progress group.
    pub progress_group: Option<ProgressGroup>,
    /// Per-step resource limits (not part of the cache key).
    pub linux_resources: Option<LinuxResources>,
}

/// Cache export preference.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportCache {
    /// Export the cache of this op.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// A progress group several vertices belong to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProgressGroup {
    /// Group ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Display name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Weak membership.
    #[prost(bool, tag = "3")]
    pub weak: bool,
}

/// Per-step Linux resource limits.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxResources {
    /// Memory limit in bytes.
    #[prost(int64, tag = "1")]
    pub memory: i64,
    /// Memory + swap limit in bytes.
    #[prost(int64, tag = "2")]
    pub memory_swap: i64,
    /// CPU shares.
    #[prost(uint64, tag = "3")]
    pub cpu_shares: u64,
    /// CFS period.
    #[prost(uint64, tag = "4")]
    pub cpu_period: u64,
    /// CFS quota.
    #[prost(int64, tag = "5")]
    pub cpu_quota: i64,
    /// Allowed CPUs.
    #[prost(string, tag = "6")]
    pub cpuset_cpus: String,
    /// Allowed memory nodes.
    #[prost(string, tag = "7")]
    pub cpuset_mems: String,
}

/// Source maps of a definition.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Source {
    /// Locations per op digest.
    pub locations: BTreeMap<String, Locations>,
    /// Source files, referenced by index from [`Location::source_index`].
    pub infos: Vec<SourceInfo>,
}

/// Locations of one op.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Locations {
    /// Locations.
    #[prost(message, repeated, tag = "1")]
    pub locations: Vec<Location>,
}

/// Ranges in one source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Index into [`Source::infos`].
    #[prost(int32, tag = "1")]
    pub source_index: i32,
    /// Ranges.
    #[prost(message, repeated, tag = "2")]
    pub ranges: Vec<Range>,
}

/// A source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceInfo {
    /// File name.
    #[prost(string, tag = "1")]
    pub filename: String,
    /// File contents.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// LLB that loaded the file.
    #[prost(message, optional, tag = "3")]
    pub definition: Option<Definition>,
    /// Language, e.g. `Dockerfile`.
    #[prost(string, tag = "4")]
    pub language: String,
}

/// An area of a source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Range {
    /// Start position.
    #[prost(message, optional, tag = "1")]
    pub start: Option<Position>,
    /// End position.
    #[prost(message, optional, tag = "2")]
    pub end: Option<Position>,
}

/// A position in a source file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    /// Line (1-based in BuildKit's frontends).
    #[prost(int32, tag = "1")]
    pub line: i32,
    /// Character.
    #[prost(int32, tag = "2")]
    pub character: i32,
}

/// Network mode of an exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NetMode {
    /// Default (sandboxed) network.
    Unset = 0,
    /// Host network.
    Host = 1,
    /// No network.
    None = 2,
}

/// Security mode of an exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SecurityMode {
    /// Sandboxed.
    Sandbox = 0,
    /// Privileged.
    Insecure = 1,
}

/// Kind of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountType {
    /// Bind mount of an input.
    Bind = 0,
    /// Secret file.
    Secret = 1,
    /// SSH agent socket.
    Ssh = 2,
    /// Persistent cache directory.
    Cache = 3,
    /// tmpfs.
    Tmpfs = 4,
}

/// Content-cache behaviour of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountContentCache {
    /// Engine default.
    Default = 0,
    /// Enabled.
    On = 1,
    /// Disabled.
    Off = 2,
}

/// Sharing mode of a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CacheSharingOpt {
    /// Concurrent writers share the mount.
    Shared = 0,
    /// A second writer gets a fresh mount.
    Private = 1,
    /// A second writer waits.
    Locked = 2,
}

mod go_maps;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn empty_map_values_are_written_like_go() {
        let mut op = SourceOp {
            identifier: "local://context".into(),
            ..Default::default()
        };
        op.attrs.insert("b".into(), String::new());
        op.attrs.insert("a".into(), "x".into());
        let bytes = op.encode_to_vec();
        let mut want = vec![0x0a, 15];
        want.extend_from_slice(b"local://context");
        // a=x
        want.extend_from_slice(&[0x12, 6, 0x0a, 1, b'a', 0x12, 1, b'x']);
        // b="" keeps an empty value field
        want.extend_from_slice(&[0x12, 5, 0x0a, 1, b'b', 0x12, 0]);
        assert_eq!(bytes, want);
        assert_eq!(op.encoded_len(), bytes.len());
        assert_eq!(SourceOp::decode(bytes.as_slice()).unwrap(), op);
    }

    #[test]
    fn empty_metadata_entry_and_false_caps_are_written() {
        let mut def = Definition::default();
        def.metadata.insert("k".into(), OpMetadata::default());
        let mut md = OpMetadata::default();
        md.caps.insert("c".into(), false);
        def.metadata.insert("m".into(), md);
        def.source = Some(Source::default());
        let bytes = def.encode_to_vec();
        assert_eq!(def.encoded_len(), bytes.len());
        // "k" entry: key + empty value message.
        assert_eq!(&bytes[..7], &[0x12, 5, 0x0a, 1, b'k', 0x12, 0]);
        // "m" entry: value = caps entry {c: false}.
        assert_eq!(
            &bytes[7..21],
            &[
                0x12, 12, 0x0a, 1, b'm', 0x12, 7, 0x2a, 5, 0x0a, 1, b'c', 0x10, 0
            ]
        );
        assert_eq!(&bytes[bytes.len() - 2..], &[0x1a, 0]);
        assert_eq!(Definition::decode(bytes.as_slice()).unwrap(), def);
    }

    #[test]
    fn empty_sub_messages_and_oneof_zero_are_written() {
        let op = Op {
            op: Some(op::Op::Diff(DiffOp {
                lower: Some(LowerDiffInput::default()),
                upper: Some(UpperDiffInput { input: 1 }),
            })),
            constraints: Some(WorkerConstraints::default()),
            ..Default::default()
        };
        assert_eq!(
            op.encode_to_vec(),
            vec![0x3a, 6, 0x0a, 0, 0x12, 2, 0x08, 1, 0x5a, 0]
        );
        let user = UserOpt {
            user: Some(user_opt::User::ById(0)),
        };
        assert_eq!(user.encode_to_vec(), vec![0x10, 0]);
    }

    #[test]
    fn build_op_round_trips() {
        let mut b = BuildOp {
            builder: LLB_BUILDER,
            def: Some(Definition::default()),
            ..Default::default()
        };
        b.inputs
            .insert(LLB_DEFINITION_INPUT.into(), BuildInput { input: 0 });
        b.attrs.insert("llbbuild.filename".into(), "x".into());
        let bytes = b.encode_to_vec();
        assert_eq!(b.encoded_len(), bytes.len());
        assert_eq!(BuildOp::decode(bytes.as_slice()).unwrap(), b);
    }
}
