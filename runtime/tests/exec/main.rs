//! RuncExecutor against the real runc, with a busybox-static rootfs.
//!
//! Needs root, runc and /bin/busybox (busybox-static). Without them each
//! test prints a loud SKIPPING line (and fails under CI=true, where `.ci/run`
//! installs everything). Tests run in parallel threads: each has its own
//! temp dir and state dir, and container ids are unique.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_runtime::executor::{
    CancelToken, CapturedOutput, Error, ExecRequest, Executor, Mount, MountKind, NetworkMode,
    OverlaySpec, Rootfs, RuncConfig, RuncExecutor, UpperDir,
};

fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let runc = [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/sbin/runc",
        "/usr/local/sbin/runc",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    let busybox = Path::new("/bin/busybox").exists();
    if root && runc && busybox {
        return true;
    }
    let msg = format!(
        "SKIPPING runc executor test: root={root} runc={runc} /bin/busybox={busybox} (apt-get install runc busybox-static, run as root)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("{msg}");
    false
}

/// A busybox rootfs like the base image's: applet symlinks, passwd, group.
fn busybox_rootfs(r: &Path) {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "tmp", "dev", "proc",
        "sys",
    ] {
        fs_err::create_dir_all(r.join(d)).unwrap();
    }
    fs_err::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    fs_err::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for app in String::from_utf8(list.stdout).unwrap().lines() {
        if !app.contains('/') || app == "bin/busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", r.join(app));
    }
    fs_err::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbuilder:x:1000:1000:b:/home/builder:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs_err::write(
        r.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nstaff:x:50:builder\nbuilder:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    fs_err::write(r.join("etc/motd"), "lower file\n").unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    exec: RuncExecutor,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kiln-exec-")
            .tempdir()
            .unwrap();
        busybox_rootfs(&dir.path().join("lower"));
        let exec = RuncExecutor::new(RuncConfig::new(dir.path().join("state"))).unwrap();
        Self { dir, exec }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// An overlay rootfs over the busybox lower with a fresh upper.
    fn overlay(&self) -> Rootfs {
        let upper = self.path("upper");
        let work = self.path("work");
        fs_err::create_dir_all(&upper).unwrap();
        fs_err::create_dir_all(&work).unwrap();
        Rootfs::Overlay(OverlaySpec {
            lowerdirs: vec![self.path("lower")],
            upper: Some(UpperDir {
                upperdir: upper,
                workdir: work,
            }),
        })
    }

    fn sh(&self, script: &str) -> ExecRequest {
        ExecRequest::new(
            self.overlay(),
            vec![
                "/bin/busybox".into(),
                "sh".into(),
                "-c".into(),
                script.into(),
            ],
        )
    }

    fn run(&self, req: &ExecRequest) -> Result<CapturedOutput, Error> {
        let mut out = CapturedOutput::default();
        self.exec.run(req, &mut out, &CancelToken::new())?;
        Ok(out)
    }

    fn ok(&self, req: &ExecRequest) -> String {
        match self.run(req) {
            Ok(out) => out.stdout_text(),
            Err(e) => panic!("run failed: {e}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Every run must have cleaned up after itself.
        let bundles = self.path("state/bundles");
        let left: Vec<_> = fs_err::read_dir(&bundles)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "bundles left behind: {left:?}");
        }
    }
}

#[test]
fn exit_codes_pass_through() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    assert_eq!(f.ok(&f.sh("echo hello")), "hello\n");
    let e = f
        .run(&f.sh("echo first; echo boom >&2; exit 42"))
        .unwrap_err();
    match &e {
        Error::ExitCode {
            code,
            output_tail,
            argv,
            ..
        } => {
            assert_eq!(*code, 42);
            assert!(output_tail.contains("boom"), "{output_tail}");
            assert_eq!(argv[1], "sh");
        }
        other => panic!("expected ExitCode, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("exit code 42") && msg.contains("boom"),
        "{msg}"
    );
}

#[test]
fn missing_executable_is_a_runtime_error() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let req = ExecRequest::new(f.overlay(), vec!["/no/such/binary".into()]);
    let e = f.run(&req).unwrap_err();
    assert!(matches!(e, Error::Runtime { .. }), "{e:?}");
    assert!(e.to_string().contains("/no/such/binary"), "{e}");
}

#[test]
fn env_cwd_and_hostname() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let mut req = f.sh("echo $FOO; pwd; hostname; echo $PATH; cat /etc/hosts");
    req.process.env = vec!["FOO=bar baz".into()];
    req.process.cwd = "/work/dir".into();
    req.extra_hosts = vec![("db.internal".into(), "10.1.2.3".parse().unwrap())];
    let out = f.ok(&req);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bar baz");
    assert_eq!(lines[1], "/work/dir");
    assert_eq!(lines[2], "buildkitsandbox");
    assert!(lines[3].contains("/usr/bin"), "{out}");
    assert!(out.contains("10.1.2.3\tdb.internal"), "{out}");
    // The working dir is part of the result, the hosts stub is not.
    assert!(f.path("upper/work/dir").is_dir());
    assert!(!f.path("upper/etc/hosts").exists());
}

#[test]
fn user_by_name_and_number() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let mut req = f.sh("id -u; id -g; id -G; touch /tmp/mine; stat -c %u:%g /tmp/mine; echo $HOME");
    req.process.user = "builder".into();
    let out = f.ok(&req);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    assert!(lines[2].split(' ').any(|g| g == "50"), "{out}");
    assert_eq!(lines[3], "1000:1000");
    assert_eq!(lines[4], "/home/builder");
    let mut req = f.sh("id -u; id -g");
    req.process.user = "daemon:nogroup".into();
    assert_eq!(f.ok(&req), "1\n65534\n");
    let mut req = f.sh("true");
    req.process.user = "ghost".into();
    let e = f.run(&req).unwrap_err();
    assert!(e.to_string().contains("unknown user `ghost`"), "{e}");
}

#[test]
fn capabilities_allow_chown_and_mknod() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let out = f.ok(&f.sh(
        "touch /tmp/f && chown 1000:1000 /tmp/f && mknod /tmp/null c 1 3 && echo ok; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; ulimit -n",
    ));
    assert!(out.starts_with("ok\n"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let nofile: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(nofile > 1024, "{out}");
    // Masked and read-only paths.
    let e = f.run(&f.sh("echo 1 > /proc/sys/kernel/panic")).unwrap_err();
    assert!(matches!(e, Error::ExitCode { .. }), "{e}");
    assert_eq!(f.ok(&f.sh("cat /proc/kcore | wc -c")).trim(), "0");
}

#[test]
fn tmpfs_is_empty_and_discarded() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let mut req = f.sh("ls -A /cache | wc -l; echo x > /cache/f; grep ' /cache ' /proc/mounts");
    req.mounts.push(Mount {
        dest: "/cache".into(),
        kind: MountKind::Tmpfs {
            size: Some(1 << 20),
        },
    });
    let out = f.ok(&req);
    assert!(out.starts_with("0\n"), "{out}");
    assert!(out.contains("tmpfs") && out.contains("size=1024k"), "{out}");
    assert!(!f.path("upper/cache").exists());
}

#[test]
fn bind_mounts_ro_rw_and_scratch() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let ro = f.path("ro-src");
    let rw = f.path("rw-src");
    let scratch = f.path("scratch-src");
    for d in [&ro, &rw, &scratch] {
        fs_err::create_dir_all(d).unwrap();
    }
    fs_err::write(ro.join("in"), "from host\n").unwrap();
    fs_err::write(scratch.join("keep"), "original\n").unwrap();
    let mut req = f.sh(
        "cat /mnt/ro/in; touch /mnt/ro/x 2>/dev/null && echo ro-writable || echo ro-refused; \
         echo w > /mnt/rw/out; echo changed > /mnt/scratch/keep; cat /mnt/scratch/keep",
    );
    req.mounts = vec![
        Mount {
            dest: "/mnt/ro".into(),
            kind: MountKind::Bind {
                source: ro.clone(),
                readonly: true,
            },
        },
        Mount {
            dest: "/mnt/rw".into(),
            kind: MountKind::Bind {
                source: rw.clone(),
                readonly: false,
            },
        },
        Mount {
            dest: "/mnt/scratch".into(),
            kind: MountKind::BindScratch {
                source: scratch.clone(),
            },
        },
    ];
    let out = f.ok(&req);
    assert_eq!(out, "from host\nro-refused\nchanged\n");
    assert_eq!(fs_err::read_to_string(rw.join("out")).unwrap(), "w\n");
    assert_eq!(
        fs_err::read_to_string(scratch.join("keep")).unwrap(),
        "original\n"
    );
    assert!(!ro.join("x").exists());
    // All three mount points were stubs: none is left in the layer.
    assert!(!f.path("upper/mnt").exists());
}

#[test]
fn network_none_has_only_lo() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let mut req = f.sh("ls /sys/class/net");
    req.network = NetworkMode::None;
    assert_eq!(f.ok(&req), "lo\n");
    let host = f.ok(&f.sh("ls /sys/class/net"));
    assert!(host.lines().count() >= 1, "{host}");
}

#[test]
fn overlay_upper_gets_writes_and_whiteouts() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    f.ok(&f.sh("echo new > /new.txt; rm /etc/motd; mkdir -p /opt/app; echo 1 > /opt/app/a"));
    let upper = f.path("upper");
    assert_eq!(
        fs_err::read_to_string(upper.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs_err::read_to_string(upper.join("opt/app/a")).unwrap(),
        "1\n"
    );
    let wh = fs_err::symlink_metadata(upper.join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device(), "{wh:?}");
    assert_eq!(wh.rdev(), 0);
    // The lower layer is untouched.
    assert!(f.path("lower/etc/motd").exists());
    // No stubs for the standard mounts and generated files.
    for p in ["etc/hosts", "etc/resolv.conf", "proc", "dev", "sys"] {
        assert!(!upper.join(p).exists(), "stub {p} left in upper");
    }
}

#[test]
fn mount_stubs_are_removed() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let secret = f.path("secret");
    fs_err::write(&secret, "s3cr3t").unwrap();
    fs_err::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    let ctx = f.path("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    let mut req = f.sh("cat /run/secrets/mysecret; echo; ls /run/secrets; touch /root/real");
    req.mounts = vec![
        Mount {
            dest: "/run/secrets/mysecret".into(),
            kind: MountKind::Secret {
                source: secret.clone(),
            },
        },
        Mount {
            dest: "/root/.cache".into(),
            kind: MountKind::Bind {
                source: ctx.clone(),
                readonly: false,
            },
        },
        Mount {
            dest: "/mnt/ctx".into(),
            kind: MountKind::Bind {
                source: ctx,
                readonly: true,
            },
        },
    ];
    let out = f.ok(&req);
    assert_eq!(out, "s3cr3t\nmysecret\n");
    let upper = f.path("upper");
    assert!(!upper.join("run").exists(), "run/ left in upper");
    assert!(!upper.join("mnt").exists(), "mnt/ left in upper");
    assert!(!upper.join("root/.cache").exists());
    assert!(upper.join("root/real").exists());
}

#[test]
fn ssh_socket_round_trip() {
    if !available() || !Path::new("/usr/bin/perl").exists() {
        return;
    }
    let f = Fixture::new();
    // perl (perl-base) is the client: busybox has no unix-socket client. It
    // runs from a rootfs that borrows the host's /usr read-only.
    let root = f.path("perlroot");
    for d in ["usr", "tmp", "proc", "dev", "sys", "etc"] {
        fs_err::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let sock_dir = f.path("sock");
    fs_err::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping\n");
        c.write_all(b"pong from host\n").unwrap();
    });
    let script = r#"use Socket; socket(S, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!"; connect(S, pack_sockaddr_un("/run/buildkit/ssh_agent.0")) or die "connect: $!"; syswrite(S, "ping\n"); my $b; sysread(S, $b, 100); print $b;"#;
    let mut req = ExecRequest::new(
        Rootfs::Dir(root.clone()),
        vec!["/usr/bin/perl".into(), "-e".into(), script.into()],
    );
    req.mounts = vec![
        Mount {
            dest: "/usr".into(),
            kind: MountKind::Bind {
                source: "/usr".into(),
                readonly: true,
            },
        },
        Mount {
            dest: "/run/buildkit/ssh_agent.0".into(),
            kind: MountKind::SshSocket { source: sock },
        },
    ];
    req.process.env = vec!["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".into()];
    assert_eq!(f.ok(&req), "pong from host\n");
    server.join().unwrap();
    assert!(!root.join("run").exists(), "socket stub left behind");
}

#[test]
fn cancel_kills_the_container() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        c2.cancel();
    });
    let start = Instant::now();
    let mut out = CapturedOutput::default();
    let e = f
        .exec
        .run(&f.sh("echo started; sleep 60"), &mut out, &cancel)
        .unwrap_err();
    assert!(matches!(e, Error::Canceled { .. }), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn parallel_runs() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let f = &f;
                s.spawn(move || {
                    let d = f.path(&format!("par{i}"));
                    fs_err::create_dir_all(d.join("u")).unwrap();
                    fs_err::create_dir_all(d.join("w")).unwrap();
                    let req = ExecRequest::new(
                        Rootfs::Overlay(OverlaySpec {
                            lowerdirs: vec![f.path("lower")],
                            upper: Some(UpperDir {
                                upperdir: d.join("u"),
                                workdir: d.join("w"),
                            }),
                        }),
                        vec!["sh".into(), "-c".into(), format!("echo {i} > /id; cat /id")],
                    );
                    assert_eq!(f.ok(&req), format!("{i}\n"));
                    assert!(d.join("u/id").exists());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn deep_overlay_stack_mounts() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    // 80 layers with long absolute paths: far past the 4 KiB option limit.
    let mut lowers = Vec::new();
    for i in (0..80).rev() {
        let d = f.path(&format!("layers/{i:064}/fs"));
        fs_err::create_dir_all(&d).unwrap();
        fs_err::write(d.join(format!("f{i}")), "").unwrap();
        lowers.push(d);
    }
    lowers.push(f.path("lower"));
    let upper = f.path("deep-upper");
    let work = f.path("deep-work");
    fs_err::create_dir_all(&upper).unwrap();
    fs_err::create_dir_all(&work).unwrap();
    let req = ExecRequest::new(
        Rootfs::Overlay(OverlaySpec {
            lowerdirs: lowers,
            upper: Some(UpperDir {
                upperdir: upper,
                workdir: work,
            }),
        }),
        vec!["sh".into(), "-c".into(), "ls / | grep -c '^f'".into()],
    );
    assert_eq!(f.ok(&req), "80\n");
}

#[test]
fn insecure_mode_is_privileged() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let script = "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; grep -E '^(CapEff|Seccomp):' /proc/self/status; test -e /dev/loop-control && echo host-devices";
    let mut req = f.sh(script);
    req.security = kiln_runtime::executor::SecurityMode::Insecure;
    let out = f.ok(&req);
    assert!(out.starts_with("mounted\n"), "{out}");
    assert!(out.contains("Seccomp:\t0"), "{out}");
    if Path::new("/dev/loop-control").exists() {
        assert!(out.contains("host-devices"), "{out}");
    }
    // The sandbox refuses the same mount.
    let e = f.run(&f.sh("mount -t tmpfs none /tmp")).unwrap_err();
    assert!(matches!(e, Error::ExitCode { .. }), "{e}");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let mut req = f.sh("touch /x 2>/dev/null && echo writable || echo refused");
    req.readonly_rootfs = true;
    assert_eq!(f.ok(&req), "refused\n");
}

#[test]
fn stale_bundles_of_dead_processes_are_recovered() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A bundle left by a crashed process (pid 0x7fffffff cannot exist) with
    // its rootfs still mounted, and one of a live process (ours, pid 1).
    let stale = state.join("bundles/kiln-2147483647-0-deadbeef");
    let live = state.join("bundles/kiln-1-0-cafe");
    fs_err::create_dir_all(stale.join("rootfs")).unwrap();
    fs_err::create_dir_all(&live).unwrap();
    let lower = dir.path().join("lower");
    fs_err::create_dir_all(&lower).unwrap();
    kiln_runtime::executor::mount_overlay(
        &OverlaySpec {
            lowerdirs: vec![lower],
            upper: None,
        },
        &stale.join("rootfs"),
    )
    .unwrap();
    let _exec = RuncExecutor::new(RuncConfig::new(&state)).unwrap();
    assert!(!stale.exists(), "stale bundle survived");
    assert!(live.exists(), "a live process' bundle was removed");
    fs_err::remove_dir_all(&live).unwrap();
}

#[test]
fn read_only_overlay_of_two_lowers() {
    if !available() {
        return;
    }
    let f = Fixture::new();
    let top = f.path("top");
    fs_err::create_dir_all(top.join("etc")).unwrap();
    fs_err::write(top.join("etc/motd"), "from top\n").unwrap();
    let req = ExecRequest::new(
        Rootfs::Overlay(OverlaySpec {
            lowerdirs: vec![top, f.path("lower")],
            upper: None,
        }),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /etc/motd; touch /x 2>/dev/null || echo read-only".into(),
        ],
    );
    assert_eq!(f.ok(&req), "from top\nread-only\n");
}
