//! Instruction flags (`--name[=value]`) and the value syntaxes they use:
//! Go durations for `HEALTHCHECK`, octal or symbolic modes for `--chmod`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::InstructionErrorKind;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--x` (true) or `--x=true|false`.
    Bool,
    /// `--x=value`, at most once.
    String,
    /// `--x=value`, repeatable.
    Strings,
}

/// The flags one instruction accepts, filled by [`FlagSet::parse`].
#[derive(Debug, Default)]
pub(crate) struct FlagSet {
    defs: Vec<(&'static str, FlagKind)>,
    values: BTreeMap<&'static str, Vec<String>>,
}

impl FlagSet {
    pub(crate) fn new(defs: &[(&'static str, FlagKind)]) -> Self {
        Self {
            defs: defs.to_vec(),
            values: BTreeMap::new(),
        }
    }

    /// Reads the node's flag words (`--name=value` / `--name`).
    pub(crate) fn parse(&mut self, words: &[String]) -> Result<(), InstructionErrorKind> {
        for word in words {
            let Some(body) = word.strip_prefix("--") else {
                return Err(InstructionErrorKind::UnknownFlag(word.clone()));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(def_name, kind)) = self.defs.iter().find(|(n, _)| *n == name) else {
                return Err(InstructionErrorKind::UnknownFlag(name.to_string()));
            };
            if self.values.contains_key(def_name) && kind != FlagKind::Strings {
                return Err(InstructionErrorKind::DuplicateFlag(name.to_string()));
            }
            let stored = match kind {
                FlagKind::Bool => match value {
                    None => "true".to_string(),
                    Some("") => {
                        return Err(InstructionErrorKind::MissingFlagValue(name.to_string()));
                    }
                    Some(v) => match v.to_ascii_lowercase().as_str() {
                        "true" => "true".to_string(),
                        "false" => "false".to_string(),
                        _ => {
                            return Err(InstructionErrorKind::BadBoolFlag {
                                flag: name.to_string(),
                                value: v.to_string(),
                            });
                        }
                    },
                },
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => return Err(InstructionErrorKind::MissingFlagValue(name.to_string())),
                },
            };
            self.values.entry(def_name).or_default().push(stored);
        }
        Ok(())
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// `None` when the flag was not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

/// Parses a Go `time.ParseDuration` string (`1h30m`, `1.5s`, `300ms`, `0`)
/// into signed nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let orig = s;
    let err = || format!("time: invalid duration {orig:?}");
    let (neg, mut s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..n];
            s = &rest[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| err())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(err)?;
        if !frac_part.is_empty() {
            // Fractions beyond nanosecond precision are truncated.
            let digits: String = frac_part.chars().take(18).collect();
            let f: i128 = digits.parse().map_err(|_| err())?;
            let div = 10i128.pow(digits.len() as u32);
            value += f * scale / div;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > i64::MAX as i128 {
            return Err(err());
        }
    }
    Ok(if neg { -total } else { total })
}

/// Converts nanoseconds from [`parse_go_duration`] to a `Duration`
/// (negative values clamp to zero).
pub(crate) fn nanos_to_duration(n: i128) -> Duration {
    Duration::from_nanos(u64::try_from(n.max(0)).unwrap_or(u64::MAX))
}

/// A `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode such as `755` or `0644`.
    Octal(u32),
    /// A symbolic mode such as `u+x,go-w`, validated against chmod(1)
    /// syntax and applied per file by the converter.
    Symbolic(String),
    /// Contains a variable reference; validated after expansion.
    Unexpanded(String),
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.contains('$') {
            return Ok(Self::Unexpanded(value.to_string()));
        }
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            let mode =
                u32::from_str_radix(value, 8).map_err(|_| "invalid octal mode".to_string())?;
            if mode > 0o7777 {
                return Err("mode out of range".into());
            }
            return Ok(Self::Octal(mode));
        }
        if is_symbolic_mode(value) {
            Ok(Self::Symbolic(value.to_string()))
        } else {
            Err("expected an octal mode or a symbolic mode like u+x,go-w".into())
        }
    }
}

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses separated by commas.
fn is_symbolic_mode(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    s.split(',').all(|clause| {
        let b = clause.as_bytes();
        let mut i = b.iter().take_while(|c| b"ugoa".contains(c)).count();
        let mut ops = 0;
        while i < b.len() {
            if !b"+-=".contains(&b[i]) {
                return false;
            }
            i += 1;
            ops += 1;
            if i < b.len() && b"ugo".contains(&b[i]) {
                i += 1;
                continue;
            }
            i += b[i..].iter().take_while(|c| b"rwxXst".contains(c)).count();
        }
        ops > 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1.5ms"), Ok(-1_500_000));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn chmod() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("0644"), Ok(Chmod::Octal(0o644)));
        assert!(Chmod::parse("789").is_err());
        assert!(Chmod::parse("77777").is_err());
        assert_eq!(
            Chmod::parse("u+x,go-w"),
            Ok(Chmod::Symbolic("u+x,go-w".into()))
        );
        assert!(Chmod::parse("a=rX").is_ok());
        assert!(Chmod::parse("g=u").is_ok());
        assert!(Chmod::parse("u+q").is_err());
        assert!(Chmod::parse("u").is_err());
        assert!(Chmod::parse("").is_err());
        assert!(matches!(Chmod::parse("$M"), Ok(Chmod::Unexpanded(_))));
    }

    #[test]
    fn flag_set() {
        let mut f = FlagSet::new(&[
            ("link", FlagKind::Bool),
            ("from", FlagKind::String),
            ("exclude", FlagKind::Strings),
        ]);
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        f.parse(&w(&["--link", "--from=a", "--exclude=x", "--exclude=y"]))
            .unwrap();
        assert_eq!(
            (f.bool("link"), f.string("from")),
            (Some(true), Some("a".into()))
        );
        assert_eq!(f.strings("exclude"), w(&["x", "y"]));
        let mut f = FlagSet::new(&[("link", FlagKind::Bool), ("from", FlagKind::String)]);
        assert!(matches!(
            f.parse(&w(&["--nope"])),
            Err(InstructionErrorKind::UnknownFlag(_))
        ));
        let mut f = FlagSet::new(&[("from", FlagKind::String)]);
        assert!(matches!(
            f.parse(&w(&["--from"])),
            Err(InstructionErrorKind::MissingFlagValue(_))
        ));
        let mut f = FlagSet::new(&[("from", FlagKind::String)]);
        assert!(matches!(
            f.parse(&w(&["--from=a", "--from=b"])),
            Err(InstructionErrorKind::DuplicateFlag(_))
        ));
        let mut f = FlagSet::new(&[("link", FlagKind::Bool)]);
        assert!(matches!(
            f.parse(&w(&["--link=maybe"])),
            Err(InstructionErrorKind::BadBoolFlag { .. })
        ));
    }
}
