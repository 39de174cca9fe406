//! Errors that point at the Dockerfile: location plus the quoted line.

use kiln_frontend::{FrontendError, Location};

use crate::parser::{Node, ParseError};

/// What every error of the conversion needs: the file name and its lines.
#[derive(Debug, Clone)]
pub(crate) struct ErrCtx {
    filename: String,
    lines: Vec<String>,
}

impl ErrCtx {
    pub fn new(filename: &str, source: &[u8]) -> Self {
        let text = String::from_utf8_lossy(source);
        ErrCtx {
            filename: filename.to_string(),
            lines: text
                .lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect(),
        }
    }

    /// The location of a node.
    pub fn location(&self, node: &Node) -> Location {
        Location {
            file: self.filename.clone(),
            start_line: node.start_line.max(1) as u32,
            end_line: node.end_line.max(node.start_line).max(1) as u32,
        }
    }

    fn quoted(&self, start: usize, end: usize) -> String {
        let lo = start.max(1) - 1;
        let hi = end.max(start).min(self.lines.len());
        if lo >= hi {
            return String::new();
        }
        // The first line is enough to recognise the instruction.
        self.lines[lo].trim().to_string()
    }

    /// An error about an instruction: the message, the quoted line and the
    /// location.
    pub fn at(&self, node: &Node, msg: impl std::fmt::Display) -> FrontendError {
        let quoted = if node.start_line == 0 {
            node.original.trim().to_string()
        } else {
            self.quoted(node.start_line, node.end_line)
        };
        FrontendError::at(format!("{msg} (in {quoted:?})"), self.location(node))
    }

    /// A parse error.
    pub fn parse(&self, e: &ParseError) -> FrontendError {
        let quoted = self.quoted(e.line, e.line);
        let msg = if quoted.is_empty() {
            format!("dockerfile parse error: {}", e.message())
        } else {
            format!("dockerfile parse error: {} (in {quoted:?})", e.message())
        };
        FrontendError::at(
            msg,
            Location {
                file: self.filename.clone(),
                start_line: e.line as u32,
                end_line: e.end_line as u32,
            },
        )
    }
}
