//! The word lexer itself.
//!
//! Semantics follow BuildKit's `shell.Lex` (see the module docs of
//! [`crate::shell`]); the implementation is a small recursive-descent scanner
//! over the characters of the word.

use std::collections::BTreeSet;

use super::env::Env;
use super::error::{ShellError, ShellErrorKind};
use super::pattern::Pattern;

/// Nesting limit for `${a:-${b:-…}}`; deeper input is rejected instead of
/// risking the stack.
const MAX_DEPTH: usize = 64;

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word (quotes removed, whitespace kept).
    pub result: String,
    /// The expanded word split into words (see [`super::process_words`]).
    pub words: Vec<String>,
    /// Variables that were looked up and set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// A configurable lexer. [`Lexer::new`] gives BuildKit's default options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (`$X`, `${X:-y}`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character and default options.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` against `env`.
    pub fn process<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Expansion, ShellError> {
        let mut sc = Scanner {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sc.stop_on(None, self.raw_escapes, 0) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: sc.matched,
                unmatched: sc.unmatched,
            }),
            Err(kind) => Err(ShellError {
                word: word.to_string(),
                kind,
            }),
        }
    }
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Scanner<'e, E: Env + ?Sized> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'e E,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Res<T> = Result<T, ShellErrorKind>;

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

impl<E: Env + ?Sized> Scanner<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        depth: usize,
    ) -> Res<(String, Vec<String>)> {
        if depth > MAX_DEPTH {
            return Err(ShellErrorKind::TooDeep);
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop, depth);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>, depth: usize) -> Res<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.dollar(depth)?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' if !self.lex.skip_process_quotes => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if !self.lex.skip_process_quotes => {
                    let tmp = self.double_quote(depth)?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character escapes the next one, except
                        // at the end of the word where it is dropped.
                        let Some(escaped) = self.next() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(ShellErrorKind::Unterminated(c)),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Res<String> {
        // Everything up to the next `'` is literal; `'` cannot be escaped.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self, depth: usize) -> Res<String> {
        // Literal except for `$` expansions; the escape character only
        // escapes `"`, `$` and itself, otherwise it stays as written.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.dollar(depth)?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        // Whitespace after `<<` (or `<<-`) stays in the same word so
        // `<< EOF` and `<<- EOF` are seen as one heredoc word.
        let mut out = "<<".to_string();
        if self.peek() == Some('-') {
            out.push('-');
            self.pos += 1;
        }
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|d| is_digit(*d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn dollar(&mut self, depth: usize) -> Res<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let ch = self.next();
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let mut chs = c.to_string();
                let mut modifier = Some(c);
                let null_is_unset = c == ':';
                if null_is_unset {
                    modifier = self.next();
                    chs.push(modifier.unwrap_or('\u{FFFD}'));
                }
                let raw = matches!(modifier, Some('#' | '%'));
                // `${v:#p}` / `${v:%p}` are not valid shell syntax.
                if null_is_unset && raw {
                    return Err(ShellErrorKind::UnsupportedModifier(chs));
                }
                let word = match self.stop_on(Some('}'), raw, depth + 1) {
                    Ok((w, _)) => w,
                    Err(e) if self.peek().is_none() && e != ShellErrorKind::TooDeep => {
                        return Err(ShellErrorKind::MissingBrace);
                    }
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match modifier {
                    Some('-') => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(ShellErrorKind::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => Err(ShellErrorKind::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            },
                        }),
                        Some(v) => Ok(v),
                    },
                    Some(m @ ('#' | '%')) => {
                        let (greedy, pat) = match word.strip_prefix(m) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let pattern = Pattern::compile(pat)?;
                        let value = value.unwrap_or_default();
                        Ok(if m == '%' {
                            pattern.trim_suffix(&value, greedy)
                        } else {
                            pattern.trim_prefix(&value, greedy)
                        })
                    }
                    _ => Err(ShellErrorKind::UnsupportedModifier(chs)),
                }
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = match self.stop_on(Some('/'), true, depth + 1) {
                    Ok((w, _)) => w,
                    Err(e) if self.peek().is_none() && e != ShellErrorKind::TooDeep => {
                        return Err(ShellErrorKind::MissingSlash);
                    }
                    Err(e) => return Err(e),
                };
                let replacement = match self.stop_on(Some('}'), true, depth + 1) {
                    Ok((w, _)) => w,
                    Err(e) if self.peek().is_none() && e != ShellErrorKind::TooDeep => {
                        return Err(ShellErrorKind::MissingBrace);
                    }
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    // Still validate the pattern, as BuildKit does.
                    Pattern::compile(&pattern)?;
                    return Ok(String::new());
                };
                let compiled = Pattern::compile(&pattern)?;
                Ok(compiled.replace(&value, &replacement, all))
            }
            other => Err(ShellErrorKind::UnsupportedModifier(
                other.map(String::from).unwrap_or_default(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::{process_word, process_words};

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("PWD", "/home"), ("NULL", ""), ("P", "a/b/c.tar.gz")]
    }

    #[test]
    fn modifiers() {
        let e = env();
        let w = |s: &str| process_word(s, &e, '\\');
        assert_eq!(w("${P#*/}").unwrap(), "b/c.tar.gz");
        assert_eq!(w("${P##*/}").unwrap(), "c.tar.gz");
        assert_eq!(w("${P%.*}").unwrap(), "a/b/c.tar");
        assert_eq!(w("${P%%.*}").unwrap(), "a/b/c");
        assert_eq!(w("${P/\\//_}").unwrap(), "a_b/c.tar.gz");
        assert_eq!(w("${P//\\//_}").unwrap(), "a_b_c.tar.gz");
        assert_eq!(w("${NULL-x}").unwrap(), "");
        assert_eq!(w("${NULL:-x}").unwrap(), "x");
        assert_eq!(w("${NULL+x}").unwrap(), "x");
        assert_eq!(w("${UNSET+x}").unwrap(), "");
        assert_eq!(w("${UNSET-x}").unwrap(), "x");
        assert!(
            w("${UNSET?oops}")
                .unwrap_err()
                .to_string()
                .contains("UNSET: oops")
        );
        assert!(w("${NULL:?}").is_err());
        assert_eq!(w("${NULL?}").unwrap(), "");
    }

    /// Pattern, replacement and `?` cases with their expected results and
    /// variable tracking (facts about BuildKit's lexer behaviour).
    #[test]
    fn modifier_table() {
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx  ccc"),
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx bbb ccc"),
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa bbb "),
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa  "),
                &["BAR", "FOO"],
                &["BAZ"],
            ),
            ("${BAR?bbb}", &[("BAR", "")], Some(""), &["BAR"], &[]),
            ("${BAZ?ccc}", &[], None, &[], &[]),
            ("${BAR:?bbb}", &[("BAR", "")], None, &[], &[]),
            ("${FOO=aaa}", &[("FOO", "x")], None, &[], &[]),
            ("${FOO=:aaa}", &[("FOO", "x")], None, &[], &[]),
            (
                "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
                &[("FOO", "()[]{}^$.*?|\\x")],
                Some("x"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO%%\\**}",
                &[("FOO", "xx**")],
                Some("xx"),
                &["FOO"],
                &[],
            ),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                Some("xyy"),
                &["BAR", "FOO"],
                &[],
            ),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
            ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
                &["FOO"],
                &["ABC"],
            ),
            (
                "${FOO%%\\**\\*}",
                &[("FOO", "a***yy*")],
                Some("a"),
                &["FOO"],
                &[],
            ),
            ("${FOO:#}", &[], None, &[], &[]),
            ("${FOO:%%}", &[], None, &[], &[]),
            (
                "${FOO/$N/.} - ${FOO//$N/.}",
                &[("FOO", "/foo*/*/*.txt"), ("N", "\\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
                &["FOO", "N"],
                &[],
            ),
            (
                "${FOO/$N/} - ${FOO//$N/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("N", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
                &["FOO", "N"],
                &[],
            ),
            (
                "${FOO/$N/$R} - ${FOO//$N/$R}",
                &[("FOO", "/a/foo/b/c.txt"), ("N", "/?/"), ("R", "/")],
                Some("/foo/b/c.txt - /foo/c.txt"),
                &["FOO", "N", "R"],
                &[],
            ),
            (
                "${FOO//\\//\\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some("\\/tmp\\/foo.txt"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
                &["BAR", "FOO"],
                &[],
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO///}", &[], Some(""), &[], &["FOO"]),
            (
                "a-${V}${T:+-${T}}.gz",
                &[("V", "1"), ("T", "")],
                Some("a-1.gz"),
                &["T", "V"],
                &[],
            ),
        ];
        for (input, env, want, matched, unmatched) in cases {
            let got = Lexer::new('\\').process(input, *env);
            match (want, got) {
                (None, Err(_)) => {}
                (Some(w), Ok(x)) => {
                    assert_eq!(x.result, *w, "{input}");
                    assert_eq!(
                        x.matched.iter().map(String::as_str).collect::<Vec<_>>(),
                        *matched,
                        "{input}"
                    );
                    assert_eq!(
                        x.unmatched.iter().map(String::as_str).collect::<Vec<_>>(),
                        *unmatched,
                        "{input}"
                    );
                }
                (w, g) => panic!("{input}: expected {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn backtick_escape() {
        let e = env();
        assert_eq!(process_word("a`$PWD", &e, '`').unwrap(), "a$PWD");
        assert_eq!(process_word("a\\b", &e, '`').unwrap(), "a\\b");
    }

    #[test]
    fn matches_are_tracked() {
        let e = env();
        let x = Lexer::new('\\').process("$PWD ${NOPE:-$NULL}", &e).unwrap();
        assert!(x.matched.contains("PWD") && x.matched.contains("NULL"));
        assert!(x.unmatched.contains("NOPE"));
    }

    #[test]
    fn raw_modes_and_heredoc_words() {
        let mut lx = Lexer::new('\\');
        lx.raw_quotes = true;
        lx.raw_escapes = true;
        lx.skip_unset_env = true;
        let e: Vec<(String, String)> = Vec::new();
        let x = lx.process("RUN <<  'EOF' $X \\'a", &e).unwrap();
        assert_eq!(x.words, vec!["RUN", "<<  'EOF'", "$X", "\\'a"]);
        assert_eq!(process_words("a \"\" b", &e, '\\').unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let e = env();
        let s = "${a:-".repeat(500) + &"}".repeat(500);
        assert_eq!(
            process_word(&s, &e, '\\').unwrap_err().kind,
            ShellErrorKind::TooDeep
        );
    }
}
