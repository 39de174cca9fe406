//! Slash-path helpers with Go `path` semantics (LLB paths are always `/`
//! separated, whatever the host).

/// Lexically cleans a path like Go's `path.Clean`.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Joins `p` to `dir` unless it is absolute, then cleans the result.
pub(crate) fn join_dir(dir: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("/{dir}/{p}"))
    }
}

/// A new working directory: an absolute `value` is taken as given (not
/// cleaned, like BuildKit's `State.Dir`), a relative one is joined to
/// `prev` and cleaned.
pub(crate) fn resolve_dir(prev: &str, value: &str) -> String {
    if value.starts_with('/') {
        value.to_owned()
    } else {
        join_dir(prev, value)
    }
}

/// Resolves `p` against `parent` like BuildKit's file-op path handling; with
/// `keep_slash` a trailing `/` or `/.` of the input is preserved.
pub(crate) fn normalize(parent: &str, p: &str, keep_slash: bool) -> String {
    let mut out = join_dir(parent, p);
    if keep_slash {
        if p.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if p.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("//a//b/./", "/a/b"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn normalize_keeps_slash() {
        assert_eq!(normalize("/work", "src/", true), "/work/src/");
        assert_eq!(normalize("/work", "src/", false), "/work/src");
        assert_eq!(normalize("/", "/a/.", true), "/a/.");
        assert_eq!(normalize("/", ".", true), "/");
        assert_eq!(normalize("/w", "/abs", true), "/abs");
    }
}
