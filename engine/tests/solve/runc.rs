//! Exec ops through the real runc with overlay rootfs snapshots.
//!
//! Needs root, runc and a static /bin/busybox; without them the test says so
//! loudly and passes.

use std::path::Path;
use std::sync::Arc;

use kiln_engine::{Engine, EngineConfig};
use kiln_llb::pb;
use kiln_runtime::executor::{RuncConfig, RuncExecutor};

use crate::defs::*;
use crate::session_with;

fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let runc = ["/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc"]
        .iter()
        .any(|p| Path::new(p).exists());
    let busybox = Path::new("/bin/busybox").exists();
    if !(root && runc && busybox) {
        eprintln!("SKIPPING runc exec test: root={root} runc={runc} /bin/busybox={busybox}");
    }
    root && runc && busybox
}

fn busybox_context(d: &Path) {
    fs_err::create_dir_all(d.join("bin")).unwrap();
    fs_err::create_dir_all(d.join("etc")).unwrap();
    fs_err::copy("/bin/busybox", d.join("bin/busybox")).unwrap();
    for app in ["sh", "cat", "echo", "mkdir", "test", "ls"] {
        std::os::unix::fs::symlink("busybox", d.join("bin").join(app)).unwrap();
    }
    fs_err::write(d.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs_err::write(d.join("etc/group"), "root:x:0:\n").unwrap();
}

fn sh(inputs: &[&str], script: &str, extra: Vec<pb::Mount>) -> pb::Op {
    let mut mounts = vec![pb::Mount {
        input: 0,
        dest: "/".into(),
        output: 0,
        ..Default::default()
    }];
    mounts.extend(extra);
    pb::Op {
        inputs: inputs.iter().map(|d| input(d)).collect(),
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts,
            network: pb::NetMode::None as i32,
            ..Default::default()
        })),
        platform: Some(pb::Platform {
            os: "linux".into(),
            architecture: kiln_store::exporter::host_arch().into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_exec_chain_with_cache_mount_and_secret() {
    if !available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_context(ctx.path());
    let runc = RuncExecutor::new(RuncConfig::new(root.path().join("runc"))).unwrap();
    let e = Engine::open(
        root.path(),
        EngineConfig {
            executor: Some(Arc::new(runc)),
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Overlay),
            ..Default::default()
        },
    )
    .unwrap();
    let mut def = Def::default();
    let base = def.add(local("context", &[]));
    let cache = pb::Mount {
        input: -1,
        dest: "/cache".into(),
        output: -1,
        mount_type: pb::MountType::Cache as i32,
        cache_opt: Some(pb::CacheOpt {
            id: "counter".into(),
            sharing: pb::CacheSharingOpt::Locked as i32,
        }),
        ..Default::default()
    };
    let secret = pb::Mount {
        input: -1,
        dest: "/run/secrets/tok".into(),
        output: -1,
        mount_type: pb::MountType::Secret as i32,
        secret_opt: Some(pb::SecretOpt {
            id: "tok".into(),
            mode: 0o400,
            ..Default::default()
        }),
        ..Default::default()
    };
    let one = def.add(sh(
        &[&base],
        "echo hello > /greeting && test \"$(cat /run/secrets/tok)\" = s3cr3t && n=$(cat /cache/n 2>/dev/null || echo 0) && echo $((n+1)) > /cache/n && echo ran",
        vec![cache.clone(), secret],
    ));
    def.name(&one, "[2/3] RUN first");
    let two = def.add(sh(
        &[&one],
        "cat /greeting > /copy && echo world >> /copy",
        vec![],
    ));
    def.name(&two, "[3/3] RUN second");
    let bytes = def.finish(&two);
    let with_secret = |s: &mut kiln_engine::Session| {
        s.secrets.insert("tok", b"s3cr3t".to_vec());
    };
    let (s, buf) = session_with(with_secret, &[("context", ctx.path())]);
    let r = match e.solve(&bytes, s).await {
        Ok(r) => r,
        Err(err) => panic!("{}\n{}", crate::chain(&err), buf.text()),
    };
    assert!(buf.text().contains("#2 ran"), "{}", buf.text());
    assert_eq!(
        e.read_file(&r, "/copy", 0, None).unwrap(),
        b"hello\nworld\n"
    );
    assert!(
        e.stat(&r, "/run/secrets/tok")
            .map(|s| s.size == 0)
            .unwrap_or(true),
        "the secret is not in the layer"
    );
    // Cached the second time; the cache mount kept its state across a
    // no-cache run.
    let (s, buf) = session_with(with_secret, &[("context", ctx.path())]);
    e.solve(&bytes, s).await.unwrap();
    assert_eq!(crate::count(&buf.text(), "CACHED"), 3, "{}", buf.text());
    let (s, _) = session_with(
        |s| {
            with_secret(s);
            s.no_cache = true;
        },
        &[("context", ctx.path())],
    );
    e.solve(&bytes, s).await.unwrap();
    let dirs: Vec<_> = std::fs::read_dir(root.path().join("engine/v1/cachemounts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(
        std::fs::read_to_string(dirs[0].path().join("n"))
            .unwrap()
            .trim(),
        "2"
    );
    // A failing command names the vertex and its output.
    let mut def = Def::default();
    let base = def.add(local("context", &[]));
    let bad = def.add(sh(&[&base], "echo oops >&2; exit 3", vec![]));
    def.name(&bad, "[2/2] RUN exit 3");
    let (s, buf) = session_with(|_| {}, &[("context", ctx.path())]);
    let err = e.solve(&def.finish(&bad), s).await.unwrap_err();
    let msg = crate::chain(&err);
    assert!(msg.contains("[2/2] RUN exit 3"), "{msg}");
    assert!(buf.text().contains("oops"), "{}", buf.text());
    // validExitCodes turns exit 3 into success.
    let mut def = Def::default();
    let base = def.add(local("context", &[]));
    let mut op = sh(&[&base], "echo done > /marker; exit 3", vec![]);
    if let Some(pb::op::Op::Exec(e)) = &mut op.op {
        e.meta.as_mut().unwrap().valid_exit_codes = vec![0, 3];
    }
    let ok = def.add(op);
    let (s, _) = session_with(|_| {}, &[("context", ctx.path())]);
    let r = e.solve(&def.finish(&ok), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/marker", 0, None).unwrap(), b"done\n");
}
