//! Turning one logical instruction line into a [`Node`].
//!
//! The keyword picks a "line parser" that decides the argument shape (JSON
//! or shell form, whitespace split, `ENV`/`LABEL` triples, …). Flags
//! (`--name=value` words at the start of the arguments) are split off first.

use super::json::{JsonArray, parse_json_array};
use super::{Node, ParseErrorKind};

/// `ONBUILD ONBUILD …` nesting beyond this is rejected by the parser (BuildKit
/// rejects any chaining later, at the instruction level).
const MAX_SUBCOMMAND_DEPTH: usize = 8;

/// Go's `[\t\v\f\r ]`.
fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]`, like Go's `regexp.Split(s, -1)`.
fn split_ws(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if is_token_ws(c) {
            out.push(std::mem::take(&mut cur));
            while chars.peek().is_some_and(|c| is_token_ws(*c)) {
                chars.next();
            }
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Splits at the first run of `[\t\v\f\r ]` (Go's `regexp.Split(s, 2)`).
fn split_ws2(s: &str) -> (&str, Option<&str>) {
    match s.find(is_token_ws) {
        Some(i) => {
            let rest = s[i..].trim_start_matches(is_token_ws);
            (&s[..i], Some(rest))
        }
        None => (s, None),
    }
}

/// Splits `--flag` words off the front of the argument text. Quotes in a
/// flag word are removed and `\` escapes the next character; a bare `--`
/// ends the flags and is dropped.
pub(crate) fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let cur = chars.get(i).copied();
        if phase == Phase::Spaces {
            let Some((pos, ch)) = cur else {
                break;
            };
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            let next = chars.get(i + 1).map(|(_, c)| *c);
            if ch != '-' || next != Some('-') {
                return (line[pos..].to_string(), words);
            }
            phase = Phase::Word;
        }
        let Some((pos, ch)) = cur else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[pos..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                match chars.get(i + 1) {
                    None => {
                        i += 1;
                        continue;
                    }
                    Some((_, n)) => {
                        c = *n;
                        i += 1;
                    }
                }
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            match chars.get(i + 1) {
                None => {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                Some((_, n)) => {
                    c = *n;
                    i += 1;
                }
            }
        }
        word.push(c);
        i += 1;
    }
    (String::new(), words)
}

/// Shell-like word split that keeps quotes and escapes in the words (used by
/// `ARG`, `ENV` and `LABEL`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0;
    loop {
        let cur = chars.get(i).copied();
        if phase == Phase::Spaces {
            let Some(ch) = cur else {
                break;
            };
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        let Some(mut ch) = cur else {
            // An unterminated quote still yields its word.
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                // Outside quotes the escape and the next character are both
                // kept, even if the next one is a quote.
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// What a line parser produced.
pub(crate) struct Parsed {
    pub args: Vec<String>,
    pub sub: Option<Box<Node>>,
    pub json: bool,
}

impl Parsed {
    fn args(args: Vec<String>) -> Self {
        Self {
            args,
            sub: None,
            json: false,
        }
    }
}

fn parse_maybe_json(rest: &str) -> Result<Parsed, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Parsed::args(Vec::new()));
    }
    match parse_json_array(rest) {
        JsonArray::Strings(v) => Ok(Parsed {
            args: v,
            sub: None,
            json: true,
        }),
        JsonArray::NotAllStrings => Err(ParseErrorKind::JsonNotStrings),
        JsonArray::NotJson => Ok(Parsed::args(vec![rest.to_string()])),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<Parsed, ParseErrorKind> {
    match parse_json_array(rest) {
        JsonArray::Strings(v) => Ok(Parsed {
            args: v,
            sub: None,
            json: true,
        }),
        JsonArray::NotAllStrings => Err(ParseErrorKind::JsonNotStrings),
        JsonArray::NotJson => Ok(parse_strings_ws(rest)),
    }
}

fn parse_strings_ws(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::args(Vec::new());
    }
    Parsed::args(split_ws(rest))
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Parsed, ParseErrorKind> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Parsed::args(Vec::new()));
    }
    // Legacy `KEY name value with spaces` when the first word has no `=`.
    if !words[0].contains('=') {
        let (name, value) = split_ws2(rest);
        return match value {
            Some(value) => Ok(Parsed::args(vec![
                name.to_string(),
                value.to_string(),
                String::new(),
            ])),
            None => Err(ParseErrorKind::MissingValue(key.to_string())),
        };
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word));
        };
        args.push(k.to_string());
        args.push(v.to_string());
        args.push("=".to_string());
    }
    Ok(Parsed::args(args))
}

fn parse_health_config(rest: &str) -> Result<Parsed, ParseErrorKind> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Parsed::args(Vec::new()));
    }
    let typ = &rest[..sep];
    let cmd = rest[sep..].trim_start();
    let mut parsed = parse_maybe_json(cmd)?;
    parsed.args.insert(0, typ.to_string());
    Ok(parsed)
}

/// Parses one logical line into a node (lines, heredocs and comments are
/// filled in by the caller).
pub(crate) fn node_from_line(
    line: &str,
    escape: char,
    depth: usize,
) -> Result<Node, ParseErrorKind> {
    let trimmed = line.trim();
    let (cmd, rest) = split_ws2(trimmed);
    let (args_text, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (String::new(), Vec::new()),
    };
    let rest = args_text.trim();
    let parsed = match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest)?,
        "arg" => Parsed::args(parse_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest)?,
        "env" => parse_name_val(rest, "ENV", escape)?,
        "label" => parse_name_val(rest, "LABEL", escape)?,
        "expose" | "from" => parse_strings_ws(rest),
        "healthcheck" => parse_health_config(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Parsed::args(Vec::new())
            } else {
                Parsed::args(vec![rest.to_string()])
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                Parsed::args(Vec::new())
            } else {
                if depth >= MAX_SUBCOMMAND_DEPTH {
                    return Err(ParseErrorKind::NestedTooDeep);
                }
                let child = node_from_line(rest, escape, depth + 1)?;
                Parsed {
                    args: Vec::new(),
                    sub: Some(Box::new(child)),
                    json: false,
                }
            }
        }
        // Unknown instructions parse, with a single empty argument; the
        // instruction layer reports them.
        _ => Parsed::args(vec![String::new()]),
    };
    Ok(Node {
        value: cmd.to_string(),
        flags,
        args: parsed.args,
        sub: parsed.sub,
        json: parsed.json,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        heredocs: Vec::new(),
        prev_comment: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags() {
        assert_eq!(
            extract_builder_flags("--a=b --c foo"),
            ("foo".into(), v(&["--a=b", "--c"]))
        );
        assert_eq!(
            extract_builder_flags("--a=\"x y\" -- --z"),
            (" --z".into(), v(&["--a=x y"]))
        );
        assert_eq!(
            extract_builder_flags("--a=b\\ c"),
            ("".into(), v(&["--a=b c"]))
        );
        assert_eq!(extract_builder_flags("-x"), ("-x".into(), v(&[])));
        assert_eq!(extract_builder_flags("--"), ("".into(), v(&[])));
    }

    #[test]
    fn words() {
        assert_eq!(
            parse_words("abc=\"123 456\" def", '\\'),
            v(&["abc=\"123 456\"", "def"])
        );
        assert_eq!(
            parse_words("a\\ b 'c\\' d", '\\'),
            v(&["a\\ b", "'c\\'", "d"])
        );
        assert_eq!(parse_words("\"\"", '\\'), v(&["\"\""]));
    }

    #[test]
    fn split() {
        assert_eq!(split_ws("a \t b"), v(&["a", "b"]));
        assert_eq!(split_ws2("a  b c"), ("a", Some("b c")));
    }
}
