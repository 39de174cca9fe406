//! `.dockerignore` files: one pattern a line, `#` comments, `!` negations.

/// The patterns of a `.dockerignore` file, cleaned the way BuildKit does
/// (leading `/` dropped, `.`/`..` folded), in file order.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (neg, pat) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pat = clean(pat);
        if pat.len() > 1 && pat.starts_with('/') {
            pat = pat[1..].to_string();
        }
        out.push(if neg { format!("!{pat}") } else { pat });
    }
    out
}

/// Go's `path.Clean`.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
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
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(
            parse_dockerignore("# c\n/node_modules\n\n!keep/./x\n*.log \n"),
            vec!["node_modules", "!keep/x", "*.log"]
        );
    }
}
