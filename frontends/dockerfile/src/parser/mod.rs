//! The Dockerfile parser: bytes in, [`Ast`] out.
//!
//! This module owns line handling (parser directives, escape-character line
//! continuations, comments, heredoc bodies) and the per-instruction argument
//! shapes, following BuildKit's `frontend/dockerfile/parser` so that
//! [`Ast::dump`] reproduces BuildKit's test `result` files byte for byte. It
//! does no I/O and no variable expansion; it uses only [`crate::shell`] (for
//! heredoc word detection). Typed instructions are built from the AST by
//! [`crate::instructions`].
//!
//! Deliberate departures from BuildKit: input that is not valid UTF-8 is
//! decoded lossily (U+FFFD) instead of carried as raw bytes; flag words are
//! read as characters rather than bytes (BuildKit mangles non-ASCII flag
//! values); `ONBUILD` chains deeper than 8 are rejected here rather than later.

mod directives;
mod heredoc;
mod json;
mod line_parsers;
mod quote;

use thiserror::Error;

pub use directives::{CheckConfig, CheckError, Directive, SyntaxDirective, detect_syntax};
pub use heredoc::{Heredoc, chomp_heredoc_content, heredocs_from_line, parse_heredoc};
pub use quote::go_quote;

use directives::DirectiveParser;
use line_parsers::node_from_line;

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// BuildKit's line length limit (`bufio.MaxScanTokenSize - 1`).
pub const MAX_LINE_LEN: usize = 64 * 1024 - 1;

/// One instruction of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`RUN`, `run`, `Copy`, …).
    pub value: String,
    /// Leading `--flag[=value]` words, quotes removed.
    pub flags: Vec<String>,
    /// The arguments, shaped per instruction (see the crate docs of the
    /// conformance data: JSON elements, whitespace-split words, `ENV`
    /// triples, …).
    pub args: Vec<String>,
    /// The wrapped instruction of `ONBUILD`.
    pub sub: Option<Box<Node>>,
    /// Whether the arguments were given in JSON (exec) form.
    pub json: bool,
    /// The logical line: continuations joined, comments dropped, leading
    /// whitespace of the first line removed.
    pub original: String,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line (1-based), including heredoc bodies.
    pub end_line: usize,
    /// Heredocs attached to this instruction (`RUN`, `COPY`, `ADD`, also
    /// when wrapped in `ONBUILD`).
    pub heredocs: Vec<Heredoc>,
    /// Comment lines directly above the instruction, `#` removed.
    pub prev_comment: Vec<String>,
}

impl Node {
    /// The keyword lowercased (`run`), the key for dispatching.
    pub fn name(&self) -> String {
        self.value.chars().flat_map(char::to_lowercase).collect()
    }

    /// Renders the node like BuildKit's `Node.Dump` (without the outer
    /// parentheses).
    pub fn dump(&self) -> String {
        let mut s = self.name();
        if !self.flags.is_empty() {
            s.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                quote::go_quote_into(&mut s, f);
            }
            s.push(']');
        }
        for a in &self.args {
            s.push(' ');
            quote::go_quote_into(&mut s, a);
        }
        if let Some(sub) = &self.sub {
            s.push_str(" (");
            s.push_str(&sub.dump());
            s.push(')');
        }
        s.trim().to_string()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.sub, self.name().as_str()) {
            (Some(sub), "onbuild") => sub,
            _ => self,
        };
        matches!(node.name().as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub short: String,
    /// Longer explanation.
    pub detail: String,
    /// Documentation link for the rule.
    pub url: String,
    /// The line the warning refers to (1-based).
    pub line: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// The instructions, in order.
    pub children: Vec<Node>,
    /// First line of the first instruction (1-based).
    pub start_line: usize,
    /// Last line of the last instruction (1-based).
    pub end_line: usize,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives found at the top of the file.
    pub directives: Vec<Directive>,
    /// Warnings, e.g. empty continuation lines.
    pub warnings: Vec<Warning>,
    /// The source lines (line endings removed), for error rendering.
    pub source_lines: Vec<String>,
}

impl Ast {
    /// Renders the tree in BuildKit's `result` format (no trailing newline).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (i, child) in self.children.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push('(');
            out.push_str(&child.dump());
            out.push(')');
        }
        out
    }

    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// The parsed `# check=` directive, if present.
    pub fn check_config(&self) -> Option<Result<CheckConfig, CheckError>> {
        self.directive("check").map(CheckConfig::parse)
    }

    /// The raw source lines `start..=end` (1-based) joined with `\n`.
    pub fn source_text(&self, start: usize, end: usize) -> String {
        let lo = start.max(1) - 1;
        let hi = end.min(self.source_lines.len());
        if lo >= hi {
            return String::new();
        }
        self.source_lines[lo..hi].join("\n")
    }
}

/// Why a Dockerfile could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    /// A directive key appeared twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    /// A JSON array with a non-string element.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    /// Legacy `ENV name` / `LABEL name` without a value.
    #[error("{0} must have two arguments")]
    MissingValue(String),
    /// `ENV a=b c`: a word without `=` in the `key=value` form.
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    /// `ONBUILD ONBUILD …` nested too deeply.
    #[error("ONBUILD instructions nested too deeply")]
    NestedTooDeep,
    /// A heredoc word with broken quoting.
    #[error("invalid heredoc: {0}")]
    Heredoc(#[source] crate::shell::ShellError),
    /// A heredoc whose terminator never appears.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// Only comments and blank lines.
    #[error("file with no instructions")]
    NoInstructions,
    /// A line longer than BuildKit accepts.
    #[error("dockerfile line greater than max allowed size of {MAX_LINE_LEN}")]
    LineTooLong,
}

/// A parse failure with its location.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("dockerfile parse error on line {line}: {kind}")]
pub struct ParseError {
    /// First line of the offending instruction (1-based).
    pub line: usize,
    /// Last line read when the error was found (1-based).
    pub end_line: usize,
    /// What went wrong.
    #[source]
    pub kind: ParseErrorKind,
}

impl ParseError {
    fn new(kind: ParseErrorKind, line: usize, end_line: usize) -> Self {
        Self {
            line: line.max(1),
            end_line: end_line.max(line.max(1)),
            kind,
        }
    }

    /// The message without the location prefix.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

/// Splits the input into lines that keep their `\n`.
fn raw_lines(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                out.push(&rest[..=i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    out
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

fn is_empty_continuation(s: &str) -> bool {
    trim_newline(s).trim_start().is_empty()
}

/// Removes a trailing escape character (plus spaces/tabs after it) unless it
/// is itself escaped. Returns the line and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before.to_string(), false);
    }
    (line.to_string(), true)
}

struct State {
    escape: char,
    directives: DirectiveParser,
    found: Vec<Directive>,
}

impl State {
    /// Strips the line ending (and leading whitespace for the first line of
    /// an instruction), feeds the directive parser and blanks comments.
    fn process_line(
        &mut self,
        raw: &str,
        strip_left: bool,
    ) -> Result<(String, bool), ParseErrorKind> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let mut directive_ok = false;
        if let Some(d) = self
            .directives
            .parse_line(token)
            .map_err(ParseErrorKind::DuplicateDirective)?
        {
            if d.name == "escape" {
                match d.value.as_str() {
                    "\\" => self.escape = '\\',
                    "`" => self.escape = '`',
                    other => return Err(ParseErrorKind::InvalidEscape(other.to_string())),
                }
            }
            self.found.push(d);
            directive_ok = true;
        }
        let out = if is_comment(token) {
            String::new()
        } else {
            token.to_string()
        };
        Ok((out, directive_ok))
    }
}

/// Parses a Dockerfile.
pub fn parse(input: &[u8]) -> Result<Ast, ParseError> {
    let raw = raw_lines(input);
    let mut lines: Vec<String> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let limit = if r.ends_with(b"\n") {
            MAX_LINE_LEN + 1
        } else {
            MAX_LINE_LEN
        };
        if r.len() > limit {
            return Err(ParseError::new(ParseErrorKind::LineTooLong, i + 1, i + 1));
        }
        let bytes = if i == 0 {
            r.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(r)
        } else {
            r
        };
        lines.push(String::from_utf8_lossy(bytes).into_owned());
    }

    let mut st = State {
        escape: DEFAULT_ESCAPE,
        directives: DirectiveParser::default(),
        found: Vec::new(),
    };
    let mut children: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut idx = 0usize; // index of the next unread line
    let mut current = 0usize; // number of lines read so far

    while idx < lines.len() {
        let first = &lines[idx];
        idx += 1;
        if is_comment(first) {
            let t = first.trim_start();
            let comment = t.get(1..).unwrap_or("").trim().to_string();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment);
            }
        }
        let (processed, directive_ok) = st
            .process_line(first, true)
            .map_err(|k| ParseError::new(k, current + 1, current + 1))?;
        if directive_ok {
            comments.pop();
        }
        current += 1;
        let start = current;
        let (mut line, mut eol) = trim_continuation(&processed, st.escape);
        if eol && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !eol && idx < lines.len() {
            let raw_line = &lines[idx];
            idx += 1;
            let (p, _) = st
                .process_line(raw_line, false)
                .map_err(|k| ParseError::new(k, current + 1, current + 1))?;
            current += 1;
            if is_comment(raw_line) {
                continue;
            }
            if is_empty_continuation(&p) {
                empty_continuation = true;
                continue;
            }
            let (cont, e) = trim_continuation(&p, st.escape);
            eol = e;
            line.push_str(&cont);
        }
        if empty_continuation {
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {line}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
                line: current,
            });
        }

        let mut node =
            node_from_line(&line, st.escape, 0).map_err(|k| ParseError::new(k, start, current))?;

        if node.can_contain_heredoc() && line.contains("<<") {
            let docs = heredocs_from_line(&line)
                .map_err(|e| ParseError::new(ParseErrorKind::Heredoc(e), start, current))?;
            for mut doc in docs {
                let mut terminated = false;
                let mut content = String::new();
                while idx < lines.len() {
                    let body = &lines[idx];
                    idx += 1;
                    current += 1;
                    let mut candidate = trim_newline(body);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body);
                }
                if !terminated {
                    return Err(ParseError::new(
                        ParseErrorKind::UnterminatedHeredoc,
                        start,
                        current,
                    ));
                }
                doc.content = content;
                node.heredocs.push(doc);
            }
        }

        node.start_line = start;
        node.end_line = current;
        if let Some(sub) = node.sub.as_deref_mut() {
            set_lines(sub, start, current);
        }
        node.prev_comment = std::mem::take(&mut comments);
        children.push(node);
    }

    let (Some(first), Some(last)) = (children.first(), children.last()) else {
        return Err(ParseError::new(
            ParseErrorKind::NoInstructions,
            current,
            current,
        ));
    };
    let (start_line, end_line) = (first.start_line, last.end_line);
    // Source lines for error rendering, without line endings.
    let source_lines = lines.iter().map(|l| trim_newline(l).to_string()).collect();
    Ok(Ast {
        children,
        start_line,
        end_line,
        escape: st.escape,
        directives: st.found,
        warnings,
        source_lines,
    })
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    let mut cur = Some(node);
    while let Some(n) = cur {
        n.start_line = start;
        n.end_line = end;
        cur = n.sub.as_deref_mut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_dump_and_lines() {
        let ast =
            parse(b"# syntax=x\nFROM a AS b\n\nRUN echo \\\n  hi\nONBUILD RUN [\"x\"]\n").unwrap();
        assert_eq!(
            ast.dump(),
            "(from \"a\" \"AS\" \"b\")\n(run \"echo   hi\")\n(onbuild (run \"x\"))"
        );
        assert_eq!(ast.directive("syntax"), Some("x"));
        let lines: Vec<_> = ast
            .children
            .iter()
            .map(|c| (c.start_line, c.end_line))
            .collect();
        assert_eq!(lines, vec![(2, 2), (4, 5), (6, 6)]);
        assert_eq!(ast.source_text(4, 5), "RUN echo \\\n  hi");
    }

    #[test]
    fn errors_have_lines() {
        let e = parse(b"FROM a\nENV X\n").unwrap_err();
        assert_eq!(
            (e.line, e.kind.clone()),
            (2, ParseErrorKind::MissingValue("ENV".into()))
        );
        let e = parse(b"FROM a\nRUN <<EOF\nbody\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnterminatedHeredoc);
        assert_eq!(parse(b"").unwrap_err().kind, ParseErrorKind::NoInstructions);
        let e = parse(b"# escape=x\nFROM a").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn warnings_and_comments() {
        let ast = parse(b"# hello\nFROM a\nRUN a \\\n\n b\n").unwrap();
        assert_eq!(ast.warnings.len(), 1);
        assert_eq!(ast.children[0].prev_comment, vec!["hello".to_string()]);
        assert_eq!(ast.children[1].args, vec!["a  b".to_string()]);
    }

    #[test]
    fn crlf_bom_and_backtick() {
        let ast = parse(b"\xEF\xBB\xBF# escape=`\r\nFROM a\r\nRUN echo `\r\n  b\r\nCOPY <<EOF /x\r\nhi\r\nEOF\r\n").unwrap();
        assert_eq!(ast.escape, '`');
        assert_eq!(
            ast.dump(),
            "(from \"a\")\n(run \"echo   b\")\n(copy \"<<EOF\" \"/x\")"
        );
        assert_eq!(ast.children[2].heredocs[0].content, "hi\r\n");
        let ast = parse(b"FROM a\nRUN a\\\\\nRUN b\n").unwrap();
        assert_eq!(ast.children.len(), 3, "an escaped escape does not continue");
        let ast = parse(b"FROM a\nRUN a \\\n").unwrap();
        assert_eq!(ast.children[1].args, vec!["a".to_string()]);
    }

    #[test]
    fn onbuild_heredoc() {
        let ast = parse(b"FROM a\nONBUILD RUN <<E\nx\nE\nCOPY [\"<<E\", \"/\"]\n").unwrap();
        assert_eq!(ast.children[1].heredocs.len(), 1);
        assert_eq!(ast.children[1].end_line, 4);
        assert!(ast.children[2].heredocs.is_empty());
    }
}
