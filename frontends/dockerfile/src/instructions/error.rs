//! Errors of the instruction layer.

use thiserror::Error;

use super::mount::MountError;

/// An AST node could not be turned into an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {instruction}: {kind} (in {original:?})")]
pub struct InstructionError {
    /// The instruction keyword, uppercased (`RUN`).
    pub instruction: String,
    /// First source line of the instruction (1-based).
    pub line: usize,
    /// Last source line of the instruction (1-based).
    pub end_line: usize,
    /// The instruction's logical line as written.
    pub original: String,
    /// What is wrong with it (boxed to keep `Result`s small).
    pub kind: Box<InstructionErrorKind>,
}

/// The reason an instruction was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InstructionErrorKind {
    /// Not a Dockerfile instruction.
    #[error("unknown instruction: {name}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownInstruction {
        /// The keyword, uppercased.
        name: String,
        /// A close known instruction, if any.
        suggestion: Option<String>,
    },
    /// A flag this instruction does not take.
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    /// A non-repeatable flag given twice.
    #[error("duplicate flag specified: {0}")]
    DuplicateFlag(String),
    /// `--flag` without the `=value` it needs.
    #[error("missing a value on flag: {0}")]
    MissingFlagValue(String),
    /// A boolean flag with a value other than true/false.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    BadBoolFlag {
        /// The flag name.
        flag: String,
        /// The given value.
        value: String,
    },
    /// A flag value outside the accepted set or syntax.
    #[error("invalid value {value:?} for flag --{flag}: {reason}")]
    BadFlagValue {
        /// The flag name.
        flag: String,
        /// The given value.
        value: String,
        /// Why it is not accepted.
        reason: String,
    },
    /// A `RUN --mount` value that cannot be used.
    #[error("malformed --mount={value}: {error}")]
    Mount {
        /// The mount specification as written.
        value: String,
        /// What is wrong with it.
        error: MountError,
    },
    /// No arguments where at least one is needed.
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(String),
    /// Not exactly one argument.
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(String),
    /// `COPY`/`ADD` with a single argument.
    #[error(
        "{0} requires at least two arguments, but only one was provided. Destination could not be determined."
    )]
    NoDestination(String),
    /// A heredoc used as the destination of `COPY`/`ADD`.
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(String),
    /// `SHELL` in shell form.
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(String),
    /// `ENV =x`, `ARG =x`, `LABEL =x`.
    #[error("{0} names can not be blank")]
    BlankName(String),
    /// `FROM` with 2 or more than 3 arguments.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `FROM x AS <bad>`.
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName(String),
    /// `ONBUILD ONBUILD …`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM` / `ONBUILD MAINTAINER`.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    /// `HEALTHCHECK NONE extra`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` without a command.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// `HEALTHCHECK FOO …`.
    #[error("Unknown type {0:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    /// `VOLUME ""`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("no build stage in current context")]
    NoStage,
}
