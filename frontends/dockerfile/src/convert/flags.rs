//! `--flag[=value]` words of an instruction, checked against the flags the
//! instruction takes.

use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--x` or `--x=true|false`.
    Bool,
    /// `--x=value`, at most once.
    One,
    /// `--x=value`, repeatable.
    Many,
}

/// Parsed flags of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

/// Parses `words` against `defs`; the error is the message BuildKit gives.
pub(crate) fn parse(words: &[String], defs: &[(&'static str, Kind)]) -> Result<Flags, String> {
    let mut out = Flags::default();
    for word in words {
        let body = word.strip_prefix("--").unwrap_or(word);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(def, kind)) = defs.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag: {name}"));
        };
        if out.values.contains_key(def) && kind != Kind::Many {
            return Err(format!("duplicate flag specified: {name}"));
        }
        let v = match (kind, value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => "true".to_string(),
                "false" => "false".to_string(),
                _ => return Err(format!("expecting boolean value for flag {name}, not: {v}")),
            },
            (_, None) => return Err(format!("missing a value on flag: {name}")),
            (_, Some(v)) => v.to_string(),
        };
        out.values.entry(def).or_default().push(v);
    }
    Ok(out)
}

impl Flags {
    /// The value of a single-valued flag.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a repeatable flag.
    pub fn many(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean flag (false when absent).
    pub fn on(&self, name: &str) -> bool {
        self.one(name) == Some("true")
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..n];
        rest = &rest[n..];
        let mut frac = "";
        if let Some(r) = rest.strip_prefix('.') {
            let m = r.bytes().take_while(u8::is_ascii_digit).count();
            frac = &r[..m];
            rest = &r[m..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let u = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        rest = &rest[u..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        let i: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut v = i.checked_mul(scale).ok_or_else(bad)?;
        if !frac.is_empty() {
            let digits: String = frac.chars().take(18).collect();
            let f: i128 = digits.parse().map_err(|_| bad())?;
            v += f * scale / 10i128.pow(digits.len() as u32);
        }
        total = total.checked_add(v).ok_or_else(bad)?;
        if total > i64::MAX as i128 {
            return Err(bad());
        }
    }
    let t = total as i64;
    Ok(if neg { -t } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn flag_words() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = parse(
            &w(&["--link", "--from=a"]),
            &[("link", Kind::Bool), ("from", Kind::One)],
        )
        .unwrap();
        assert!(f.on("link"));
        assert_eq!(f.one("from"), Some("a"));
        assert!(parse(&w(&["--x"]), &[]).is_err());
    }
}
