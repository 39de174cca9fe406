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
        let Some(rest) = line.strip_prefix('#') else {
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
}
