//! Daemon addresses: `unix:///path.sock` or `tcp://HOST:PORT`.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// Where a daemon listens, or where a client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// A unix socket path.
    Unix(PathBuf),
    /// `HOST:PORT` over TCP (always with mutual TLS).
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl Addr {
    /// Parses `unix:///path`, `unix:path`, or `tcp://host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Addr> {
        if let Some(p) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if p.is_empty() {
                bail!("address {s:?} names no socket path");
            }
            return Ok(Addr::Unix(PathBuf::from(p)));
        }
        if let Some(hp) = s.strip_prefix("tcp://") {
            let hp = hp.trim_end_matches('/');
            let (host, port) = hp
                .rsplit_once(':')
                .with_context(|| format!("address {s:?} needs a port: tcp://HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("address {s:?}: {port:?} is not a port number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                bail!("address {s:?} names no host");
            }
            return Ok(Addr::Tcp {
                host: host.to_string(),
                port,
            });
        }
        bail!("address {s:?} is not one kiln knows: use unix:///PATH or tcp://HOST:PORT")
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix://{}", p.display()),
            Addr::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Addr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp() {
        assert_eq!(
            Addr::parse("unix:///run/kiln/kiln.sock").unwrap(),
            Addr::Unix("/run/kiln/kiln.sock".into())
        );
        assert_eq!(
            Addr::parse("tcp://127.0.0.1:1234").unwrap(),
            Addr::Tcp {
                host: "127.0.0.1".into(),
                port: 1234
            }
        );
        assert_eq!(
            Addr::parse("tcp://[::1]:9").unwrap().to_string(),
            "tcp://[::1]:9"
        );
        for bad in [
            "tcp://host",
            "http://x:1",
            "unix://",
            "tcp://:1",
            "tcp://h:x",
        ] {
            assert!(Addr::parse(bad).is_err(), "{bad}");
        }
    }
}
