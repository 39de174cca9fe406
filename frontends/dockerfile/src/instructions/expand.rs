//! Variable expansion helpers for the converter.
//!
//! The instruction layer keeps words as written; the converter expands them
//! per instruction with the environment in effect (build args + `ENV`). This
//! wraps [`crate::shell::Lexer`] and accumulates which variables were used.

use std::collections::BTreeSet;

use crate::shell::{Env, Lexer, ShellError};

use super::{HeredocFile, KeyValue};

/// Expands words against one environment and records variable use.
pub struct WordExpander<'e, E: Env + ?Sized> {
    lexer: Lexer,
    raw: Lexer,
    env: &'e E,
    /// Variables looked up and found, across all expansions so far.
    pub matched: BTreeSet<String>,
    /// Variables looked up and not found.
    pub unmatched: BTreeSet<String>,
}

impl<'e, E: Env + ?Sized> WordExpander<'e, E> {
    /// An expander with the Dockerfile's escape character.
    pub fn new(escape: char, env: &'e E) -> Self {
        let mut raw = Lexer::new(escape);
        raw.skip_process_quotes = true;
        Self {
            lexer: Lexer::new(escape),
            raw,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn record(&mut self, m: BTreeSet<String>, u: BTreeSet<String>) {
        self.matched.extend(m);
        self.unmatched.extend(u);
    }

    /// Expands one word (quotes removed, whitespace kept).
    pub fn word(&mut self, word: &str) -> Result<String, ShellError> {
        let e = self.lexer.process(word, self.env)?;
        self.record(e.matched, e.unmatched);
        Ok(e.result)
    }

    /// Expands and splits into words (as for `EXPOSE` ports or `ARG`).
    pub fn words(&mut self, word: &str) -> Result<Vec<String>, ShellError> {
        let e = self.lexer.process(word, self.env)?;
        self.record(e.matched, e.unmatched);
        Ok(e.words)
    }

    /// Expands variables only, leaving quotes untouched (heredoc bodies).
    pub fn raw(&mut self, text: &str) -> Result<String, ShellError> {
        let e = self.raw.process(text, self.env)?;
        self.record(e.matched, e.unmatched);
        Ok(e.result)
    }

    /// Expands every word of a list.
    pub fn all(&mut self, words: &[String]) -> Result<Vec<String>, ShellError> {
        words.iter().map(|w| self.word(w)).collect()
    }

    /// Expands an `ENV`/`LABEL` pair (key and value).
    pub fn key_value(&mut self, kv: &KeyValue) -> Result<KeyValue, ShellError> {
        Ok(KeyValue {
            key: self.word(&kv.key)?,
            value: self.word(&kv.value)?,
            legacy: kv.legacy,
        })
    }

    /// A heredoc body, expanded when its terminator was unquoted.
    pub fn heredoc(&mut self, h: &HeredocFile) -> Result<String, ShellError> {
        if h.expand {
            self.raw(&h.data)
        } else {
            Ok(h.data.clone())
        }
    }

    /// A closure for [`super::parse_mount`] that expands mount values.
    pub fn as_fn(&mut self) -> impl FnMut(&str) -> Result<String, ShellError> + '_ {
        move |w| self.word(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::{MountType, parse_mount};

    #[test]
    fn expands_and_tracks() {
        let env = [("A", "x"), ("T", "cache")];
        let mut ex = WordExpander::new('\\', &env);
        assert_eq!(ex.word("\"$A\"-$B").unwrap(), "x-");
        assert_eq!(ex.words("$A  y").unwrap(), vec!["x", "y"]);
        assert_eq!(ex.raw("echo '$A'").unwrap(), "echo 'x'");
        assert!(ex.matched.contains("A") && ex.unmatched.contains("B"));
        let mut f = ex.as_fn();
        let m = parse_mount("type=$T,target=/c", Some(&mut f)).unwrap();
        assert_eq!(m.mount_type, MountType::Cache);
    }
}
