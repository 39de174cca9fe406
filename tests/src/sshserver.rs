//! An OpenSSH server on a free loopback port that lets the current user in
//! with one generated key, and an `ssh-agent` holding that key, for tests of
//! git over ssh. Nothing of the user's own ssh setup is read or written.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `sshd` and `ssh-agent`, stopped when dropped.
pub struct SshServer {
    dir: tempfile::TempDir,
    port: u16,
    sshd: Child,
    agent: Child,
}

fn keygen(path: &Path) {
    crate::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-e2e", "-f"])
            .arg(path),
    );
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl SshServer {
    /// Starts both (as root: sshd needs it).
    pub fn start() -> SshServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\n\
                 AuthorizedKeysFile {ak}\nPidFile {pid}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nAllowAgentForwarding no\nX11Forwarding no\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let agent_sock = d.join("agent.sock");
        let agent = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&agent_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let s = SshServer {
            dir,
            port,
            sshd,
            agent,
        };
        wait_for("sshd", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        wait_for("ssh-agent", Duration::from_secs(20), || agent_sock.exists());
        crate::run_ok(
            Command::new("ssh-add")
                .arg("-q")
                .arg(s.dir.path().join("client_key"))
                .env("SSH_AUTH_SOCK", &agent_sock),
        );
        s
    }

    /// The agent holding the key sshd accepts.
    pub fn agent_sock(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// `ssh://USER@127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &Path) -> String {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, path.display())
    }

    /// A known_hosts line for the server's host key.
    pub fn known_hosts(&self) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut parts = key.split_whitespace();
        let (kind, body) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {body}", self.port)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}
