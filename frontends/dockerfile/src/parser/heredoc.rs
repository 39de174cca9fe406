//! Heredoc words (`<<EOF`, `<<-EOF`, `3<<'EOF'`) and their bodies.
//!
//! A heredoc word is `[digits]<<[-][spaces]WORD` where WORD (after shell
//! quote removal) must be a single word. Real quoting anywhere in WORD turns
//! off variable expansion of the body; a backslash-escaped quote does not.

use crate::shell::{Lexer, ShellError};

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word after quote removal.
    pub name: String,
    /// The digit prefix of `N<<`, else 0.
    pub file_descriptor: u32,
    /// Whether the body undergoes variable expansion (false when any part
    /// of the terminator word was quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped (the terminator may be tab-indented).
    pub chomp: bool,
    /// The body exactly as read, line endings included. Tabs are not
    /// stripped here; see [`chomp_heredoc_content`].
    pub content: String,
}

const EMPTY_ENV: [(&str, &str); 0] = [];

/// Classifies one shell word. `Ok(None)` means it is not a heredoc word;
/// an error means it looks like one but its quoting is broken.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ShellError> {
    // ^(\d*)<<(-?)\s*([^<]*)$
    let digits_len = word.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, after) = word.split_at(digits_len);
    let Some(after) = after.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let rest = after.trim_start_matches([' ', '\t', '\n', '\r', '\u{c}']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Overflowing descriptors become 0, as Go's ParseUint error is ignored.
    let fd = digits.parse::<u32>().unwrap_or(0);

    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process(rest, &EMPTY_ENV)?.words;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process(rest, &EMPTY_ENV)?.words;
    let count = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = raw.len() == 1 && count(&words[0]) == count(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

/// The heredocs named on an instruction line, in order of appearance.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ShellError> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // A line the lexer cannot split (e.g. an unbalanced quote) has no
    // heredocs, as in BuildKit.
    let Ok(expansion) = lex.process(line, &EMPTY_ENV) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for word in &expansion.words {
        if let Some(h) = parse_heredoc(word)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// Removes leading tabs from every line of a `<<-` heredoc body.
pub fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let h = parse_heredoc("3<<-'E'O\\'F").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.file_descriptor, h.chomp, h.expand),
            ("EO'F", 3, true, false)
        );
        assert!(parse_heredoc("<<'EOF").is_err());
        assert_eq!(parse_heredoc("<<EOF sh").unwrap(), None);
        assert_eq!(
            chomp_heredoc_content("\thello\n\t\tworld\n"),
            "hello\nworld\n"
        );
    }
}
