//! Shell wildcard patterns for `${v#p}`, `${v%p}` and `${v/p/r}`.
//!
//! `*` matches any run of characters, `?` one character, and a backslash
//! makes the next `*`, `?` or `\` literal (before `}` and `/` it is simply
//! dropped). Bracket expressions are not supported, as in BuildKit. Matching
//! works on characters with a small reachability table instead of a regex
//! engine; "shortest"/"longest" pick the smallest/largest matching end.

use super::error::ShellErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Result<Self, ShellErrorKind> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match chars.get(i) {
                    // `}` and `/` needed escaping inside `${}`; the escape is
                    // not part of the pattern.
                    Some('}') | Some('/') => {}
                    Some(&n @ ('*' | '?' | '\\')) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    other => {
                        return Err(ShellErrorKind::InvalidPattern {
                            pattern: pattern.to_string(),
                            escaped: other.copied().unwrap_or('\u{FFFD}'),
                        });
                    }
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Self { toks })
    }

    /// All end positions `e` such that the pattern matches `s[start..e]`.
    fn ends_from(&self, s: &[char], start: usize) -> Vec<bool> {
        let n = s.len();
        let mut cur = vec![false; n + 1];
        cur[start] = true;
        for tok in &self.toks {
            let mut next = vec![false; n + 1];
            match tok {
                Tok::Star => {
                    let mut on = false;
                    for p in start..=n {
                        on |= cur[p];
                        next[p] = on;
                    }
                }
                Tok::Any => {
                    for p in start..n {
                        if cur[p] {
                            next[p + 1] = true;
                        }
                    }
                }
                Tok::Lit(c) => {
                    for p in start..n {
                        if cur[p] && s[p] == *c {
                            next[p + 1] = true;
                        }
                    }
                }
            }
            cur = next;
            if !cur.iter().any(|b| *b) {
                break;
            }
        }
        cur
    }

    fn matches_exact(&self, s: &[char], start: usize, end: usize) -> bool {
        self.ends_from(&s[..end], start)[end]
    }

    /// `${v#p}` / `${v##p}`: remove the shortest / longest matching prefix.
    pub(crate) fn trim_prefix(&self, value: &str, longest: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let ends = self.ends_from(&s, 0);
        let pick = if longest {
            (0..=s.len()).rev().find(|e| ends[*e])
        } else {
            (0..=s.len()).find(|e| ends[*e])
        };
        match pick {
            Some(e) => s[e..].iter().collect(),
            None => value.to_string(),
        }
    }

    /// `${v%p}` / `${v%%p}`: remove the shortest / longest matching suffix.
    pub(crate) fn trim_suffix(&self, value: &str, longest: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let n = s.len();
        let pick = if longest {
            (0..=n).find(|st| self.matches_exact(&s, *st, n))
        } else {
            (0..=n).rev().find(|st| self.matches_exact(&s, *st, n))
        };
        match pick {
            Some(st) => s[..st].iter().collect(),
            None => value.to_string(),
        }
    }

    /// Leftmost match at or after `from`, longest at that position.
    fn find(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|st| {
            let ends = self.ends_from(s, st);
            (st..=s.len()).rev().find(|e| ends[*e]).map(|e| (st, e))
        })
    }

    /// `${v/p/r}` and `${v//p/r}`.
    pub(crate) fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        if !all {
            return match self.find(&s, 0) {
                Some((a, b)) => {
                    let mut out: String = s[..a].iter().collect();
                    out.push_str(replacement);
                    out.extend(&s[b..]);
                    out
                }
                None => value.to_string(),
            };
        }
        // Same advancing rules as a regex replace-all: an empty match right
        // after a previous match is not replaced, and the search always moves
        // forward by at least one character.
        let mut out = String::new();
        let mut last_end = 0usize;
        let mut pos = 0usize;
        while pos <= s.len() {
            let Some((a, b)) = self.find(&s, pos) else {
                break;
            };
            out.extend(&s[last_end..a]);
            if b > last_end || a == 0 {
                out.push_str(replacement);
            }
            last_end = b;
            pos = if pos + 1 > b { pos + 1 } else { b };
        }
        out.extend(&s[last_end.min(s.len())..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::compile(s).unwrap()
    }

    #[test]
    fn prefix_and_suffix() {
        assert_eq!(p("*/").trim_prefix("a/b/c", false), "b/c");
        assert_eq!(p("*/").trim_prefix("a/b/c", true), "c");
        assert_eq!(p("/*").trim_suffix("a/b/c", false), "a/b");
        assert_eq!(p("/*").trim_suffix("a/b/c", true), "a");
        assert_eq!(p("x").trim_prefix("abc", true), "abc");
        assert_eq!(p("a?c").trim_prefix("abcd", false), "d");
        assert_eq!(p("\\*").trim_prefix("*x", false), "x");
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(p("o").replace("foo", "0", false), "f0o");
        assert_eq!(p("o").replace("foo", "0", true), "f00");
        assert_eq!(p("b*").replace("abcbd", "X", false), "aX");
        assert_eq!(p("z").replace("abc", "X", true), "abc");
    }

    #[test]
    fn bad_escape() {
        assert!(Pattern::compile("a\\b").is_err());
        assert!(Pattern::compile("a\\").is_err());
        assert!(Pattern::compile("a\\}").is_ok());
    }
}
