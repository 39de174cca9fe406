//! Errors of the shell lexer.

use thiserror::Error;

/// A word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ShellError {
    /// The word as given to the lexer.
    pub word: String,
    /// What went wrong.
    pub kind: ShellErrorKind,
}

/// The reason a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShellErrorKind {
    /// A `'` was opened but never closed.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` was opened but never closed.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The input ended while looking for a closing character.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    /// `${` without its closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${name/pattern` without the `/` that separates the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{…`, `${:…`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier BuildKit does not support, such as `${v:=x}`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` / `${v:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable name.
        name: String,
        /// The message from the word, or the default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that cannot be used.
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    InvalidPattern {
        /// The pattern text.
        pattern: String,
        /// The character after the offending backslash.
        escaped: char,
    },
    /// Substitutions nested deeper than the lexer supports.
    #[error("variable substitution nested too deeply")]
    TooDeep,
}
