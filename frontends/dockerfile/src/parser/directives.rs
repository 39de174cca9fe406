//! Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top of a
//! Dockerfile.
//!
//! Directives are only recognised on the leading run of `# key=value` lines
//! for known keys; the first line that is anything else (an instruction, a
//! blank line, an ordinary comment, an unknown key) ends the run for good.

/// A recognised parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The key, lowercased (`syntax`, `escape` or `check`).
    pub name: String,
    /// The value as written (surrounding whitespace removed).
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// The keys BuildKit accepts as directives.
const VALID: [&str; 3] = ["syntax", "escape", "check"];

#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    /// Comment prefix other than `#` (`//` for syntax detection).
    prefix: Option<&'static str>,
    done: bool,
    seen: Vec<String>,
}

fn is_go_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let first = s.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_len = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    let (key, rest) = s.split_at(key_len);
    let rest = rest.trim_start_matches(is_go_regex_space);
    let rest = rest.strip_prefix('=')?;
    let value = rest
        .trim_start_matches(is_go_regex_space)
        .trim_end_matches(is_go_regex_space);
    // `.` does not match a newline.
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((key, value))
}

impl DirectiveParser {
    /// Feeds one line (newline and, for non-continuation lines, leading
    /// whitespace already removed). Returns the directive if the line is one.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, String> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix(self.prefix.unwrap_or("#")) else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start();
        let Some((key, value)) = split_directive(rest) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !VALID.contains(&key.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        Ok(Some(Directive {
            name: key,
            value: value.to_string(),
            line: self.line,
        }))
    }
}

/// The `# check=` directive (or `BUILDKIT_DOCKERFILE_CHECK` build arg):
/// `skip=<Rule,Rule|all>;error=<bool>;experimental=<Rule,Rule|all>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Lint rules to skip.
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// Experimental rules to enable.
    pub experimental: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `error=true`: lint warnings fail the build.
    pub error: bool,
}

/// A malformed `# check=` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A part without `=` or with an unknown key.
    #[error("invalid check option {0:?}")]
    InvalidOption(String),
    /// `error=` with a non-boolean value.
    #[error("failed to parse check option {0:?}: invalid boolean")]
    InvalidBool(String),
}

fn rule_list(v: &str) -> (Vec<String>, bool) {
    let v = v.trim();
    if v == "all" {
        return (Vec::new(), true);
    }
    (v.split(',').map(|r| r.trim().to_string()).collect(), false)
}

impl CheckConfig {
    /// Parses the directive value.
    pub fn parse(value: &str) -> Result<Self, CheckError> {
        let value = value.trim();
        let mut cfg = Self::default();
        if value.is_empty() {
            return Ok(cfg);
        }
        // Like BuildKit, at most three `;`-separated parts are read.
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(CheckError::InvalidOption(part.to_string()));
            };
            match k.trim() {
                "skip" => (cfg.skip, cfg.skip_all) = rule_list(v),
                "experimental" => (cfg.experimental, cfg.experimental_all) = rule_list(v),
                "error" => {
                    cfg.error = match v.trim() {
                        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                        _ => return Err(CheckError::InvalidBool(part.to_string())),
                    }
                }
                other => return Err(CheckError::InvalidOption(other.to_string())),
            }
        }
        Ok(cfg)
    }
}

/// The `syntax` directive as found by [`detect_syntax`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The frontend image (the value up to the first space).
    pub image: String,
    /// The whole value (image plus any arguments).
    pub cmdline: String,
    /// 1-based line of the directive (0 for the JSON form).
    pub line: usize,
}

/// Finds the `syntax` directive the way BuildKit does before parsing: a
/// leading BOM and `#!` line are skipped, then `# syntax=` directives, then
/// `// syntax=` directives, then a whole-file JSON object `{"syntax": "…"}`.
pub fn detect_syntax(input: &[u8]) -> Option<SyntaxDirective> {
    let dt = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let (dt, first_line) = match dt.iter().position(|b| *b == b'\n') {
        Some(i) if dt.starts_with(b"#!") => (&dt[i + 1..], 1),
        None if dt.starts_with(b"#!") => (&dt[dt.len()..], 1),
        _ => (dt, 0),
    };
    let text = String::from_utf8_lossy(dt);
    for prefix in ["#", "//"] {
        let mut p = DirectiveParser {
            line: first_line,
            prefix: Some(prefix),
            ..DirectiveParser::default()
        };
        for line in text.split('\n') {
            if p.done {
                break;
            }
            match p.parse_line(line.strip_suffix('\r').unwrap_or(line)) {
                Ok(Some(d)) if d.name == "syntax" => {
                    let image = d.value.split(' ').next().unwrap_or_default().to_string();
                    return Some(SyntaxDirective {
                        image,
                        cmdline: d.value,
                        line: d.line,
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let v = json.as_object()?.get("syntax")?.as_str()?;
    Some(SyntaxDirective {
        image: v.to_string(),
        cmdline: v.to_string(),
        line: first_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_lines() {
        let mut p = DirectiveParser::default();
        let d = p
            .parse_line("# Syntax = docker/dockerfile:1 ")
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.name.as_str(), d.value.as_str(), d.line),
            ("syntax", "docker/dockerfile:1", 1)
        );
        assert!(p.parse_line("#syntax=x").is_err());
        let mut p = DirectiveParser::default();
        assert_eq!(p.parse_line("# nope=1").unwrap(), None);
        assert_eq!(p.parse_line("# escape=`").unwrap(), None);
    }

    #[test]
    fn syntax_detection() {
        let d = detect_syntax(b"#!/usr/bin/env buildctl\n# syntax = img:1 --x\nFROM a").unwrap();
        assert_eq!(
            (d.image.as_str(), d.cmdline.as_str(), d.line),
            ("img:1", "img:1 --x", 2)
        );
        assert_eq!(detect_syntax(b"// syntax=x\nFROM a").unwrap().image, "x");
        assert_eq!(detect_syntax(br#"{"syntax": "j"}"#).unwrap().image, "j");
        assert_eq!(detect_syntax(b"FROM a\n# syntax=x\n"), None);
        assert_eq!(
            detect_syntax(b"# escape=`\r\n# syntax=y\r\n")
                .unwrap()
                .image,
            "y"
        );
    }

    #[test]
    fn check_config() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, vec!["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error && !c.skip_all);
        assert!(
            CheckConfig::parse("skip=all;experimental=all")
                .unwrap()
                .experimental_all
        );
        assert!(CheckConfig::parse("bogus=1").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert_eq!(CheckConfig::parse(" ").unwrap(), CheckConfig::default());
    }
}
