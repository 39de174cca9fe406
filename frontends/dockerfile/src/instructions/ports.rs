//! `EXPOSE` port specifications.
//!
//! After expansion each `EXPOSE` word is `port[/proto]` or
//! `start-end[/proto]` (an `ip:hostPort:` prefix is tolerated and ignored,
//! as BuildKit does, though its linter warns about it). The image config
//! wants one `port/proto` key per port.

/// Expands one (already variable-expanded) `EXPOSE` word into image-config
/// keys such as `80/tcp`. The protocol defaults to `tcp` and is lowercased.
pub fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (spec, proto) = match word.rsplit_once('/') {
        Some((s, p)) => (s, p.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // Keep only the container part of `ip:hostPort:containerPort`.
    let container = spec.rsplit(':').next().unwrap_or(spec);
    let port = |s: &str| -> Result<u16, String> {
        s.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {container}"))
    };
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(container)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!("invalid port range: {container}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::expose_ports;

    #[test]
    fn ports() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002/tcp").unwrap(),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(expose_ports("127.0.0.1:8080:80").unwrap(), vec!["80/tcp"]);
        assert!(expose_ports("http").is_err());
        assert!(expose_ports("80/icmp").is_err());
        assert!(expose_ports("90-80").is_err());
        assert!(expose_ports("70000").is_err());
    }
}
