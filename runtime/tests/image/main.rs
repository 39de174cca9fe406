//! The whole lower half of a RUN step: pull the busybox base image from a
//! loopback registry into the content store, unpack it into a snapshot, run
//! a command on an overlay over it with runc, and commit the upper dir.
//! Also: a registry serving corrupt bytes is caught.
//!
//! Needs root, runc, docker-registry, skopeo and busybox-static; skips
//! loudly without them (fails under CI=true).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kiln_e2e::busybox;
use kiln_e2e::registry::{self, Registry};
use kiln_runtime::executor::{
    CancelToken, CapturedOutput, ExecRequest, Executor, OverlaySpec, Rootfs, RuncConfig,
    RuncExecutor,
};
use kiln_runtime::registry::{Error, ImageRef, Platform, RegistryClient, RegistryOptions};
use kiln_store::layer::unpack_layer_blob;
use kiln_store::{ContentStore, Digest, SnapshotStore};

fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let runc = ["/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !(root && runc) {
        let msg = format!("SKIPPING image test: root={root} runc={runc}");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return false;
    }
    registry::available() && busybox::available() && kiln_e2e::require_tool("skopeo")
}

fn client(dir: &Path) -> RegistryClient {
    RegistryClient::new(RegistryOptions {
        docker_config: Some(dir.join("none.json")),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpack_run_commit() {
    if !available() {
        return;
    }
    let reg = Registry::start();
    let reference = busybox::push_base_image(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let content = ContentStore::new(&state).unwrap();
    let snapshots = SnapshotStore::new(&state).unwrap();

    let r: ImageRef = reference.parse().unwrap();
    let pulled = client(tmp.path())
        .pull(&r, &Platform::default(), &content)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&pulled.config).unwrap();
    let mut parent = None;
    for (i, layer) in pulled.resolved.layers.iter().enumerate() {
        let diff_id: Digest = config["rootfs"]["diff_ids"][i]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let u = unpack_layer_blob(
            &content,
            &snapshots,
            parent.as_ref(),
            &layer.digest,
            Some(&diff_id),
        )
        .unwrap();
        parent = Some(u.id);
    }
    let base = parent.expect("one layer");

    let lowers = snapshots.overlay_lowers(Some(&base), 100).unwrap();
    let active = snapshots.prepare(Some(&base)).unwrap();
    let exec = RuncExecutor::new(RuncConfig::new(state.join("exec"))).unwrap();
    let req = ExecRequest::new(
        Rootfs::Overlay(OverlaySpec::for_active(&lowers, &active)),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo built > /built.txt && rm /etc/group && cat /etc/passwd | head -1".into(),
        ],
    );
    let exec_task = tokio::task::spawn_blocking(move || {
        let mut out = CapturedOutput::default();
        exec.run(&req, &mut out, &CancelToken::new()).map(|_| out)
    });
    let out = exec_task.await.unwrap().unwrap();
    assert_eq!(out.stdout_text(), "root:x:0:0:root:/root:/bin/sh\n");

    let id = snapshots.commit(active).unwrap();
    let diff = snapshots.diff_dir(&id).unwrap();
    assert_eq!(
        fs_err::read_to_string(diff.join("built.txt")).unwrap(),
        "built\n"
    );
    let wh = fs_err::symlink_metadata(diff.join("etc/group")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    for stub in ["etc/hosts", "etc/resolv.conf", "proc", "dev", "sys"] {
        assert!(!diff.join(stub).exists(), "{stub} leaked into the layer");
    }
}

#[tokio::test]
async fn corrupt_blob_from_registry_is_refused() {
    if !registry::available() || !busybox::available() || !kiln_e2e::require_tool("skopeo") {
        return;
    }
    let reg = Registry::start();
    let (reference, image) = busybox::push_image_as(&reg, "library/busybox:latest");
    // Flip bytes of the layer in the registry's storage (same size).
    let hex = image.layer_digest.trim_start_matches("sha256:");
    let data = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = fs_err::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs_err::write(&data, &bytes).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let content = ContentStore::new(tmp.path().join("state")).unwrap();
    let r: ImageRef = reference.parse().unwrap();
    let e = client(tmp.path())
        .pull(&r, &Platform::default(), &content)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("library/busybox"), "{msg}");
    assert!(
        matches!(e, Error::DigestMismatch { .. }) || msg.to_lowercase().contains("digest"),
        "{msg}"
    );
    let layer: Digest = image.layer_digest.parse().unwrap();
    assert!(!content.exists(&layer), "corrupt layer stored");
    assert!(
        content.list().unwrap().is_empty(),
        "nothing should be stored"
    );
}
