//! `.dockerignore`-style path patterns: `*`, `?`, `[…]`, `**` across
//! directories, `!` re-includes, last match wins, and a match on a directory
//! covers everything below it.

use anyhow::{Result, bail};

#[derive(Clone, Debug)]
struct Pattern {
    segs: Vec<String>,
    negate: bool,
}

/// An ordered list of patterns.
#[derive(Clone, Debug, Default)]
pub struct PatternSet {
    pats: Vec<Pattern>,
}

fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

impl PatternSet {
    /// Parses patterns; blank lines and `#` comments are skipped.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternSet> {
        let mut pats = Vec::new();
        for raw in patterns {
            let mut p = raw.as_ref().trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let negate = p.starts_with('!');
            if negate {
                p = p[1..].trim();
            }
            let p = clean(p);
            if p.is_empty() {
                continue;
            }
            let segs: Vec<String> = p.split('/').map(str::to_owned).collect();
            for s in &segs {
                validate_segment(s)?;
            }
            pats.push(Pattern { segs, negate });
        }
        Ok(PatternSet { pats })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// Whether any pattern is a `!` re-include.
    pub fn has_negations(&self) -> bool {
        self.pats.iter().any(|p| p.negate)
    }

    /// Whether `path` (relative, `/`-separated) matches, by the last pattern
    /// that matches it or one of its parents.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut matched = false;
        for p in &self.pats {
            let hit = (1..=parts.len()).any(|n| match_segs(&p.segs, &parts[..n]));
            if hit {
                matched = !p.negate;
            }
        }
        matched
    }

    /// Whether some path below directory `dir` could match a pattern (used
    /// to decide whether to descend into a directory for include patterns).
    pub fn may_match_below(&self, dir: &str) -> bool {
        let parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        self.pats
            .iter()
            .any(|p| !p.negate && prefix_could_match(&p.segs, &parts))
    }
}

fn validate_segment(s: &str) -> Result<()> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => {
                bail!("bad pattern segment {s:?}: trailing backslash");
            }
            '[' if !chars.any(|c| c == ']') => {
                bail!("bad pattern segment {s:?}: unclosed [");
            }
            _ => {}
        }
    }
    Ok(())
}

fn match_segs(pat: &[String], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|i| match_segs(&pat[1..], &path[i..])),
        Some(p) => {
            !path.is_empty()
                && match_one(p.as_bytes(), path[0].as_bytes())
                && match_segs(&pat[1..], &path[1..])
        }
    }
}

/// Whether `pat` could match some path that starts with `dir`.
fn prefix_could_match(pat: &[String], dir: &[&str]) -> bool {
    if dir.is_empty() {
        return true;
    }
    match pat.first() {
        None => true, // the pattern matched a parent: everything below is in
        Some(p) if p == "**" => true,
        Some(p) => {
            match_one(p.as_bytes(), dir[0].as_bytes()) && prefix_could_match(&pat[1..], &dir[1..])
        }
    }
}

/// Matches one path segment against one pattern segment (Go
/// `filepath.Match` semantics: `*`, `?`, classes with `^`/`!` and ranges,
/// `\` escapes).
fn match_one(p: &[u8], s: &[u8]) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    match p[0] {
        b'*' => (0..=s.len()).any(|i| match_one(&p[1..], &s[i..])),
        b'?' => !s.is_empty() && match_one(&p[1..], &s[1..]),
        b'[' => {
            if s.is_empty() {
                return false;
            }
            let Some(end) = p[1..].iter().position(|&c| c == b']').map(|e| e + 1) else {
                return false;
            };
            let class = &p[1..end];
            let (neg, class) = match class.first() {
                Some(b'^') | Some(b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let c = s[0];
            let mut i = 0;
            let mut hit = false;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    if class[i] <= c && c <= class[i + 2] {
                        hit = true;
                    }
                    i += 3;
                } else {
                    if class[i] == c {
                        hit = true;
                    }
                    i += 1;
                }
            }
            hit != neg && match_one(&p[end + 1..], &s[1..])
        }
        b'\\' if p.len() > 1 => !s.is_empty() && s[0] == p[1] && match_one(&p[2..], &s[1..]),
        c => !s.is_empty() && s[0] == c && match_one(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> PatternSet {
        PatternSet::new(p).unwrap()
    }

    #[test]
    fn dockerignore_semantics() {
        let s = set(&["*.log", "!keep.log", "build", "**/tmp", "docs/**/*.md"]);
        assert!(s.matches("a.log"));
        assert!(!s.matches("keep.log"));
        assert!(!s.matches("sub/a.log")); // `*` does not cross `/`
        assert!(s.matches("build/x/y"));
        assert!(s.matches("a/b/tmp/c"));
        assert!(s.matches("tmp"));
        assert!(s.matches("docs/a/b/x.md"));
        assert!(s.matches("docs/x.md"));
        assert!(!s.matches("src/main.rs"));
        let s = set(&["*", "!src", "src/*.o"]);
        assert!(s.matches("x"));
        assert!(!s.matches("src/a.c"));
        assert!(s.matches("src/a.o"));
        assert!(set(&["[a-c]?.txt"]).matches("b1.txt"));
        assert!(!set(&["[^a-c]?.txt"]).matches("b1.txt"));
        assert!(set(&["./a/../b"]).matches("b"));
    }

    #[test]
    fn include_descent() {
        let s = set(&["src/**/*.rs", "Cargo.toml"]);
        assert!(s.may_match_below("src"));
        assert!(s.may_match_below("src/a/b"));
        assert!(!s.may_match_below("target"));
        assert!(s.matches("src/a/b.rs"));
        assert!(s.matches("src/b.rs"));
    }
}
