//! Environment lookup used by the lexer.
//!
//! Lookups are case-sensitive, matching BuildKit on Linux.

use std::collections::{BTreeMap, HashMap};

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set. A variable that is
    /// set to the empty string returns `Some("")`.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for [(K, V)] {
    /// The last entry with a given key wins, like later `ENV` lines do.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Env for Vec<(K, V)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Env for [(K, V); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// An environment built from `KEY=VALUE` strings (a string without `=` sets
/// the key to the empty value; later entries override earlier ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    vars: BTreeMap<String, String>,
}

impl EnvList {
    /// Builds the environment from `KEY=VALUE` entries.
    pub fn from_kv_strings<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut vars = BTreeMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            match entry.split_once('=') {
                Some((k, v)) => vars.insert(k.to_string(), v.to_string()),
                None => vars.insert(entry.to_string(), String::new()),
            };
        }
        Self { vars }
    }

    /// Sets one variable.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }
}

impl Env for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}
