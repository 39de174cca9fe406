//! Shell-like word expansion for Dockerfile arguments.
//!
//! This module owns the lexer that BuildKit applies to instruction arguments:
//! quote removal, escapes (with a configurable escape character), `$VAR` /
//! `${VAR…}` expansion with the POSIX-style modifiers BuildKit supports, and
//! the word splitting used by `ProcessWords`. It is pure string processing and
//! depends on nothing else in the crate, so the parser (heredoc detection) and
//! the converter (per-instruction expansion) can both use it.
//!
//! Entry points: [`process_word`], [`process_words`] and
//! [`process_word_with_matches`] for the common case, [`Lexer`] when the
//! raw-quote / raw-escape / skip-unset options are needed.

mod env;
mod error;
mod lexer;
mod pattern;

pub use env::{Env, EnvList};
pub use error::{ShellError, ShellErrorKind};
pub use lexer::{Expansion, Lexer};

/// Expands one word: variables replaced, quotes and escapes removed,
/// whitespace kept. Unset variables expand to the empty string.
pub fn process_word<E: Env + ?Sized>(
    word: &str,
    env: &E,
    escape: char,
) -> Result<String, ShellError> {
    Lexer::new(escape).process(word, env).map(|e| e.result)
}

/// Expands `word` and splits the result into words the way BuildKit's
/// `ProcessWords` does: unquoted expansions are split on whitespace, quoted
/// text is kept together, and quotes are removed.
pub fn process_words<E: Env + ?Sized>(
    word: &str,
    env: &E,
    escape: char,
) -> Result<Vec<String>, ShellError> {
    Lexer::new(escape).process(word, env).map(|e| e.words)
}

/// Like [`process_word`], but also reports which variable names were looked
/// up and found (`matched`) or not found (`unmatched`). The converter uses this
/// to track which build args an instruction consumed.
pub fn process_word_with_matches<E: Env + ?Sized>(
    word: &str,
    env: &E,
    escape: char,
) -> Result<Expansion, ShellError> {
    Lexer::new(escape).process(word, env)
}
