//! Typed Dockerfile instructions.
//!
//! This layer turns [`crate::parser::Node`]s into [`Instruction`]s: it checks
//! argument counts, parses and validates flags (`RUN --mount`, `COPY
//! --chmod`, `HEALTHCHECK --interval`, …) and splits stages. It does **not**
//! expand variables: words are kept as written, and [`WordExpander`] (built
//! on [`crate::shell`]) is provided for the converter, which expands per
//! instruction with the environment in effect at that point. Errors name the
//! instruction and its line and quote the line.

mod error;
mod expand;
mod flags;
mod mount;
mod parse;
mod ports;

pub use error::{InstructionError, InstructionErrorKind};
pub use expand::WordExpander;
pub use flags::{Chmod, parse_go_duration};
pub use mount::{CacheSharing, Expander, MountError, MountType, RunMount, parse_mount};
pub use parse::{parse_dockerfile, parse_instruction};
pub use ports::expose_ports;

use std::time::Duration;

/// One typed instruction with its source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The keyword as written (`RUN`, `run`).
    pub keyword: String,
    /// The logical source line (see [`crate::parser::Node::original`]).
    pub original: String,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line (1-based).
    pub end_line: usize,
    /// The instruction itself.
    pub kind: InstructionKind,
}

/// The instruction variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `FROM`.
    From(FromCmd),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL` (always JSON form).
    Shell(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ARG`.
    Arg(Vec<ArgDef>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `EXPOSE` (ports as written, e.g. `80/tcp`, `$PORT`).
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `COPY`.
    Copy(CopyCmd),
    /// `ADD`.
    Add(AddCmd),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCmd {
    /// The base image reference or stage name, unexpanded.
    pub image: String,
    /// The stage name, lowercased.
    pub stage_name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
}

/// The command of `RUN`, `CMD` and `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the argv. Shell form: a single element, the command text.
    pub args: Vec<String>,
    /// True for shell form (run through the `SHELL`).
    pub prepend_shell: bool,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// What to run.
    pub command: CommandLine,
    /// `--mount` values, in order.
    pub mounts: Vec<RunMount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// Heredoc bodies named on the line (`RUN <<EOF`, `RUN python3 <<EOF`).
    pub heredocs: Vec<HeredocFile>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default sandbox network.
    Default,
    /// No network.
    None,
    /// The host network (needs the `network.host` entitlement).
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// The default sandbox.
    Sandbox,
    /// Privileged (needs the `security.insecure` entitlement).
    Insecure,
}

/// A heredoc body attached to `RUN`, `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocFile {
    /// The terminator word (also the file name for `COPY <<name`).
    pub name: String,
    /// The body; for `<<-` heredocs leading tabs are already removed.
    pub data: String,
    /// Whether `<<-` was used.
    pub chomp: bool,
    /// Whether variables in the body are expanded.
    pub expand: bool,
    /// The `N<<` descriptor, 0 when not given.
    pub file_descriptor: u32,
}

/// `ENV`/`LABEL` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, unexpanded (quotes kept).
    pub key: String,
    /// The value, unexpanded (quotes kept).
    pub value: String,
    /// Written in the legacy `KEY value` form (no `=`).
    pub legacy: bool,
}

/// One `ARG` name with an optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The name.
    pub key: String,
    /// The default value, unexpanded.
    pub value: Option<String>,
}

/// A `COPY`/`ADD` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path, URL or git reference, unexpanded.
    Path(String),
    /// Inline content from a heredoc.
    Heredoc(HeredocFile),
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCmd {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination, unexpanded.
    pub dest: String,
    /// `--from`.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Arguments were in JSON form.
    pub json: bool,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCmd {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination, unexpanded.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--keep-git-dir` (None when not given).
    pub keep_git_dir: Option<bool>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack` (None when not given).
    pub unpack: Option<bool>,
    /// Arguments were in JSON form.
    pub json: bool,
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger text as written after `ONBUILD` (stored in the image).
    pub expression: String,
    /// The trigger, parsed.
    pub trigger: Box<Instruction>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Cmd(HealthConfig),
}

/// The settings of `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The image-config `Test` value: `["CMD", argv…]` (exec form) or
    /// `["CMD-SHELL", "command"]` (shell form).
    pub test: Vec<String>,
    /// `--interval` (None or zero: inherit the default).
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// A build stage: its `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `FROM` instruction (its kind is always [`InstructionKind::From`]).
    pub from: Instruction,
    /// The instructions of the stage.
    pub commands: Vec<Instruction>,
}

impl Stage {
    /// The stage's `FROM` data.
    pub fn base(&self) -> Option<&FromCmd> {
        match &self.from.kind {
            InstructionKind::From(f) => Some(f),
            _ => None,
        }
    }
}

/// A whole Dockerfile in typed form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (global scope).
    pub meta_args: Vec<Instruction>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}
