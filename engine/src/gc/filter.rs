//! `--filter` for `du` and `prune`: `key==value` (or `key=value`),
//! `key!=value` and `key~=regex`, on the keys `id`, `type`,
//! `description`, `inuse` and `reclaimable`. Several filters must all hold.

use anyhow::{Result, bail};

use super::UsageRecord;

/// One parsed filter.
#[derive(Clone, Debug)]
pub struct Filter {
    key: Key,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Type,
    Description,
    InUse,
    Reclaimable,
}

#[derive(Clone, Debug)]
enum Test {
    Eq(String),
    Ne(String),
    Re(regex::Regex),
}

impl Filter {
    /// Parses one filter expression.
    pub fn parse(s: &str) -> Result<Filter> {
        let (k, test) = if let Some((k, v)) = s.split_once("~=") {
            let re = regex::Regex::new(v)
                .map_err(|e| anyhow::anyhow!("filter {s:?}: bad regular expression: {e}"))?;
            (k, Test::Re(re))
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, Test::Ne(v.to_owned()))
        } else if let Some((k, v)) = s.split_once("==") {
            (k, Test::Eq(v.to_owned()))
        } else if let Some((k, v)) = s.split_once('=') {
            (k, Test::Eq(v.to_owned()))
        } else {
            bail!("filter {s:?} is not key==value, key!=value or key~=regex");
        };
        let key = match k.trim() {
            "id" => Key::Id,
            "type" => Key::Type,
            "description" => Key::Description,
            "inuse" => Key::InUse,
            "reclaimable" => Key::Reclaimable,
            other => bail!(
                "filter {s:?}: unknown key {other:?} (id, type, description, inuse, reclaimable)"
            ),
        };
        Ok(Filter { key, test })
    }

    /// Parses a list (each entry may hold several filters joined by `,`).
    pub fn parse_all(list: &[String]) -> Result<Vec<Filter>> {
        let mut out = Vec::new();
        for l in list {
            for part in l.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                out.push(Filter::parse(part)?);
            }
        }
        Ok(out)
    }

    /// Whether `r` passes.
    pub fn matches(&self, r: &UsageRecord) -> bool {
        let value = match self.key {
            Key::Id => r.id.clone(),
            Key::Type => r.kind.clone(),
            Key::Description => r.description.clone(),
            Key::InUse => r.in_use.to_string(),
            Key::Reclaimable => r.reclaimable().to_string(),
        };
        match &self.test {
            // An id matches by prefix, as a short id would.
            Test::Eq(v) if self.key == Key::Id => value.starts_with(v.as_str()),
            Test::Eq(v) => &value == v,
            Test::Ne(v) => &value != v,
            Test::Re(re) => re.is_match(&value),
        }
    }
}

/// Whether `r` passes every filter.
pub fn all_match(filters: &[Filter], r: &UsageRecord) -> bool {
    filters.iter().all(|f| f.matches(r))
}
