//! Dockerfiles with RUN steps in real containers, on a busybox base image
//! served by a loopback registry: a multi-stage build checked file by file
//! and pushed with `type=image,push=true`; one test per mount kind; a
//! registry with basic auth; hostile layers.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_e2e::{busybox, kiln, registry::Registry, require_tool, run_fail, run_ok};
use serde_json::Value;

fn tools() -> bool {
    require_tool("runc")
        && require_tool("skopeo")
        && require_tool("umoci")
        && require_tool("docker-registry")
}

struct Build {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Build {
    fn new(dockerfile: &str) -> Build {
        let b = Build {
            root: tempfile::tempdir().unwrap(),
            ctx: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        };
        std::fs::write(b.ctx.path().join("Dockerfile"), dockerfile).unwrap();
        b
    }

    fn cmd(&self, base: &str, extra: &[String]) -> Command {
        let mut c = kiln(self.root.path());
        c.args([
            "build",
            "--progress",
            "plain",
            "--frontend",
            "dockerfile.v0",
        ])
        .arg(format!("--local=context={}", self.ctx.path().display()))
        .arg(format!("--local=dockerfile={}", self.ctx.path().display()))
        .arg(format!("--opt=build-arg:BASE={base}"))
        .args(extra);
        c
    }

    fn local(&self, base: &str, name: &str, extra: &[String]) -> (PathBuf, std::process::Output) {
        let dest = self.out.path().join(name);
        let mut args = vec![format!("--output=type=local,dest={}", dest.display())];
        args.extend_from_slice(extra);
        let o = run_ok(&mut self.cmd(base, &args));
        (dest, o)
    }
}

/// Unpack an OCI archive with umoci; returns the rootfs.
fn unpack(tar: &Path, tag: &str, work: &Path) -> PathBuf {
    let layout = work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let bundle = work.join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    bundle.join("rootfs")
}

const MULTISTAGE: &str = r#"ARG BASE
FROM ${BASE} AS builder
RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' >> /etc/group
WORKDIR /work
ENV STAGE=builder
RUN echo "made by $STAGE" > made.txt && chmod 640 made.txt
USER app
RUN id -u > /tmp/whoami && pwd > /tmp/cwd

FROM ${BASE}
RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' >> /etc/group
COPY --from=builder --chown=app:app /work/made.txt /srv/made.txt
COPY --from=builder /tmp/whoami /tmp/cwd /srv/
WORKDIR /srv
USER app
ENV MODE=test
EXPOSE 8080
CMD ["cat", "/srv/made.txt"]
"#;

#[test]
fn multistage_build_checked_then_pushed() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b = Build::new(MULTISTAGE);
    let tar = b.out.path().join("img.tar");
    run_ok(&mut b.cmd(
        &base,
        &[format!(
            "--output=type=oci,dest={},name=multi:1",
            tar.display()
        )],
    ));
    let rootfs = unpack(&tar, "1", b.out.path());
    let made = rootfs.join("srv/made.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made by builder\n");
    let md = std::fs::metadata(&made).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (1234, 1234),
        "--chown=app:app resolved from /etc/passwd"
    );
    assert_eq!(md.mode() & 0o777, 0o640, "mode kept");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/whoami")).unwrap(),
        "1234\n",
        "USER app"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/cwd")).unwrap(),
        "/work\n",
        "WORKDIR"
    );
    assert!(rootfs.join("bin/busybox").exists());

    let cfg = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", tar.display()))
        .output()
        .unwrap();
    let c: Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert_eq!(c["config"]["User"], "app");
    assert_eq!(c["config"]["WorkingDir"], "/srv");
    assert!(
        c["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "MODE=test")
    );
    assert_eq!(
        c["config"]["Cmd"],
        serde_json::json!(["cat", "/srv/made.txt"])
    );
    assert!(c["config"]["ExposedPorts"]["8080/tcp"].is_object());

    // Push it, read it back.
    let name = format!("{}/kiln/multi:1", reg.host());
    let o = run_ok(&mut b.cmd(
        &base,
        &[format!("--output=type=image,name={name},push=true")],
    ));
    let log = String::from_utf8_lossy(&o.stderr);
    let pushed = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed {name}@")))
        .unwrap_or_else(|| panic!("no push line in {log}"))
        .trim()
        .to_string();
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        v["Digest"], pushed,
        "registry digest equals the pushed manifest digest"
    );
    let copy_dir = b.out.path().join("copied");
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:1", copy_dir.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(copy_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"], pushed,
        "skopeo copy keeps the digest"
    );
}

#[test]
fn cache_mount_persists_and_locked_serialises() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b = Build::new(
        r#"ARG BASE
FROM ${BASE} AS a
ARG N
RUN --mount=type=cache,target=/c,id=locktest,sharing=locked sh -c 'if [ -e /c/busy ]; then echo overlap >> /c/overlaps; fi; touch /c/busy; sleep 1; rm /c/busy; echo a$N > /a'
FROM ${BASE} AS b
ARG N
RUN --mount=type=cache,target=/c,id=locktest,sharing=locked sh -c 'if [ -e /c/busy ]; then echo overlap >> /c/overlaps; fi; touch /c/busy; sleep 1; rm /c/busy; echo b$N > /b'
FROM ${BASE}
ARG N
COPY --from=a /a /a
COPY --from=b /b /b
RUN --mount=type=cache,target=/keep,id=counter sh -c 'echo run$N >> /keep/log; wc -l < /keep/log | tr -d " " > /count'
RUN --mount=type=cache,target=/c,id=locktest,sharing=locked sh -c 'cat /c/overlaps 2>/dev/null > /overlaps; true'
"#,
    );
    let (d1, _) = b.local(&base, "1", &["--opt=build-arg:N=1".into()]);
    assert_eq!(std::fs::read_to_string(d1.join("count")).unwrap(), "1\n");
    assert_eq!(
        std::fs::read_to_string(d1.join("overlaps")).unwrap(),
        "",
        "locked RUNs never overlapped"
    );
    let (d2, _) = b.local(&base, "2", &["--opt=build-arg:N=2".into()]);
    assert_eq!(
        std::fs::read_to_string(d2.join("count")).unwrap(),
        "2\n",
        "the cache mount kept its content"
    );
}

#[test]
fn secret_is_readable_but_lands_nowhere() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let secret = "kiln-e2e-s3cr3t-7f3a9c";
    let b = Build::new(
        r#"ARG BASE
FROM ${BASE}
RUN --mount=type=secret,id=tok sh -c 'cat /run/secrets/tok | wc -c | tr -d " " > /len; echo "secret read"'
RUN --mount=type=secret,id=tok,env=TOK sh -c 'test "${#TOK}" -gt 10 && echo ok > /envok'
RUN --mount=type=secret,id=tok,target=/etc/custom-secret sh -c 'test -s /etc/custom-secret && echo ok > /targetok'
"#,
    );
    let sfile = b.out.path().join("secret.txt");
    std::fs::write(&sfile, secret).unwrap();
    let tar = b.out.path().join("img.tar");
    let o = run_ok(&mut b.cmd(
        &base,
        &[
            format!("--secret=id=tok,src={}", sfile.display()),
            format!("--output=type=oci,dest={},name=s:1", tar.display()),
        ],
    ));
    let rootfs = unpack(&tar, "1", &b.out.path().join("u"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("len")).unwrap(),
        format!("{}\n", secret.len())
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("envok")).unwrap(),
        "ok\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("targetok")).unwrap(),
        "ok\n"
    );
    assert!(
        !rootfs.join("etc/custom-secret").exists(),
        "the secret target is not left in the image"
    );

    // Not in the log, not in the exported tarball, not anywhere under the state dir.
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!log.contains(secret), "secret in the build log");
    assert!(
        !contains_bytes(&std::fs::read(&tar).unwrap(), secret.as_bytes()),
        "secret in the image tarball"
    );
    assert!(
        !grep_tree(&rootfs, secret.as_bytes()),
        "secret in the unpacked image"
    );
    assert!(
        !grep_tree(b.root.path(), secret.as_bytes()),
        "secret under the state dir"
    );
}

#[test]
fn missing_required_secret_fails_clearly() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b = Build::new(
        "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=absent,required=true cat /run/secrets/absent\n",
    );
    let o = run_fail(&mut b.cmd(&base, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("absent"), "{err}");
}

#[test]
fn tmpfs_bind_and_network_mounts() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b = Build::new(
        r#"ARG BASE
FROM ${BASE}
RUN --mount=type=tmpfs,target=/scratch sh -c 'ls -A /scratch | wc -l | tr -d " " > /tmpfs-count; echo x > /scratch/f; grep " /scratch " /proc/mounts | cut -d" " -f3 > /tmpfs-type'
RUN --mount=type=bind,target=/ctx sh -c 'if touch /ctx/new 2>/dev/null; then echo writable; else echo readonly; fi > /bind-default; cat /ctx/marker.txt > /bind-read'
RUN --mount=type=bind,target=/ctx,rw sh -c 'touch /ctx/new && echo writable > /bind-rw'
RUN --network=none sh -c 'ls /sys/class/net | tr "\n" " " > /net-none'
"#,
    );
    std::fs::write(b.ctx.path().join("marker.txt"), b"from the context\n").unwrap();
    let (d, _) = b.local(&base, "fs", &[]);
    assert_eq!(
        std::fs::read_to_string(d.join("tmpfs-count")).unwrap(),
        "0\n",
        "tmpfs starts empty"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("tmpfs-type")).unwrap(),
        "tmpfs\n"
    );
    assert!(
        !d.join("scratch/f").exists(),
        "tmpfs content is gone afterwards"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("bind-default")).unwrap(),
        "readonly\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("bind-read")).unwrap(),
        "from the context\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("bind-rw")).unwrap(),
        "writable\n"
    );
    assert!(
        !b.ctx.path().join("new").exists(),
        "an rw bind never writes back to the context"
    );
    assert!(
        !d.join("ctx/new").exists(),
        "writes to an rw bind are thrown away"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("net-none")).unwrap().trim(),
        "lo",
        "--network=none has only lo"
    );
}

#[test]
fn ssh_socket_reaches_the_container() {
    if !(tools() && require_tool("gcc")) {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b = Build::new(
        "ARG BASE\nFROM ${BASE}\nCOPY sockclient /usr/bin/sockclient\nRUN --mount=type=ssh sh -c 'sockclient > /reply'\n",
    );
    kiln_e2e::build_sockclient(&b.ctx.path().join("sockclient"));

    let sock = b.out.path().join("agent.sock");
    let server = kiln_e2e::pong_agent(&sock);
    let (d, _) = b.local(&base, "fs", &[format!("--ssh=default={}", sock.display())]);
    server.join().unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("reply")).unwrap(),
        "pong:ping\n"
    );
}

#[test]
fn ssh_mount_owner_and_mode_apply_to_its_socket() {
    if !(tools() && require_tool("gcc")) {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    // As uid 1000: the default socket (root, 0600) is closed to it; one
    // mounted with uid=1000 is its own.
    let b = Build::new(
        "ARG BASE\nFROM ${BASE}\nCOPY sockclient /usr/bin/sockclient\nUSER 1000\n\
         RUN --mount=type=ssh sh -c 'sockclient > /tmp/denied 2>&1 || echo refused > /tmp/denied'\n\
         RUN --mount=type=ssh,uid=1000,mode=0600 sh -c 'sockclient > /tmp/reply; stat -c %u:%a $SSH_AUTH_SOCK > /tmp/sock'\n",
    );
    kiln_e2e::build_sockclient(&b.ctx.path().join("sockclient"));
    let sock = b.out.path().join("agent.sock");
    let server = kiln_e2e::pong_agent(&sock);
    // The agent socket as a user agent's is: its owner's only.
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (d, o) = b.local(&base, "fs", &[format!("--ssh=default={}", sock.display())]);
    server.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        std::fs::read_to_string(d.join("tmp/denied")).unwrap(),
        "refused\n",
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("tmp/reply")).unwrap(),
        "pong:ping\n",
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("tmp/sock")).unwrap(),
        "1000:600\n"
    );
}

#[test]
fn registry_with_basic_auth() {
    if !tools() {
        return;
    }
    let reg = Registry::start_with_auth("kiln", "hunter2-pass");
    let (base, _) = busybox::push_image_as(&reg, "library/busybox:latest");
    let b = Build::new("ARG BASE\nFROM ${BASE}\nRUN echo authed > /ok\n");

    // Without credentials: a clear failure naming the image.
    let empty_cfg = b.out.path().join("nocreds");
    std::fs::create_dir_all(&empty_cfg).unwrap();
    std::fs::write(empty_cfg.join("config.json"), "{}").unwrap();
    let o = run_fail(b.cmd(&base, &[]).env("DOCKER_CONFIG", &empty_cfg));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("library/busybox"), "{err}");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    assert!(!err.contains("hunter2-pass"));

    // With a docker config.json: it builds.
    let cfg_dir = b.out.path().join("creds");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    reg.write_docker_config(&cfg_dir);
    let dest = b.out.path().join("fs");
    run_ok(
        b.cmd(
            &base,
            &[format!("--output=type=local,dest={}", dest.display())],
        )
        .env("DOCKER_CONFIG", &cfg_dir),
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("ok")).unwrap(),
        "authed\n"
    );
}

#[test]
fn hostile_layers_from_a_registry_are_neutralised() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let marker = format!("kiln-hostile-{}", std::process::id());
    let (layout, _) = kiln_e2e::hostile_oci_layout(work.path(), &marker);
    let name = format!("{}/evil/image:1", reg.host());
    let o = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let b = Build::new("ARG BASE\nFROM ${BASE}\n");
    let dest = b.out.path().join("fs");
    let o = b
        .cmd(
            &name,
            &[format!("--output=type=local,dest={}", dest.display())],
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    for p in [
        PathBuf::from(format!("/tmp/{marker}-dotdot")),
        PathBuf::from(format!("/tmp/{marker}-abs")),
        PathBuf::from(format!("/tmp/{marker}-link")),
        PathBuf::from(format!("/tmp/{marker}-hard")),
    ] {
        assert!(!p.exists(), "{} was written on the host", p.display());
    }
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether any regular file under `dir` contains `needle` (also inside
/// gzip-compressed blobs, which are decompressed first).
fn grep_tree(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() {
            if grep_tree(&p, needle) {
                return true;
            }
        } else if ft.is_file() {
            let Ok(data) = std::fs::read(&p) else {
                continue;
            };
            if contains_bytes(&data, needle) {
                eprintln!("found in {}", p.display());
                return true;
            }
            if data.starts_with(&[0x1f, 0x8b]) {
                let mut d = flate2::read::GzDecoder::new(&data[..]);
                let mut plain = Vec::new();
                if std::io::Read::read_to_end(&mut d, &mut plain).is_ok()
                    && contains_bytes(&plain, needle)
                {
                    eprintln!("found in {} (gzip)", p.display());
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn a_failing_run_shows_command_exit_code_line_and_output() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let b =
        Build::new("ARG BASE\nFROM ${BASE}\nRUN echo fine\nRUN echo last-words-$((6*7)); exit 7\n");
    let o = run_fail(&mut b.cmd(&base, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("exit 7") || err.contains("exit code 7") || err.contains("code 7"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:4"), "{err}");
    // The command as written, and its output (the shell computed 42).
    assert!(err.contains("echo last-words-$((6*7))"), "{err}");
    assert!(err.contains("last-words-42"), "{err}");
    eprintln!("{err}");
}
