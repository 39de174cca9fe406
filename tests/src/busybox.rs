//! The busybox base image for e2e tests, built offline from Debian's
//! `busybox-static` the way `peers/make-base-image.sh` builds it: a rootfs
//! with applet symlinks, `/etc/passwd`, `/etc/group`, `/tmp` 1777 and the
//! usual empty dirs; one gzip layer written reproducibly (GNU tar sorted by
//! name, numeric owners 0/0, mtimes fixed to `SOURCE_DATE_EPOCH`, `gzip -n`);
//! an OCI image layout; pushed with `skopeo copy`. The layout is byte for
//! byte the script's (same manifest digest, checked by a test), so kiln and
//! the peer tools in benchmarks start from the same base image.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::registry::Registry;

/// 2024-01-01T00:00:00Z, the default `SOURCE_DATE_EPOCH`.
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// What [`oci_layout_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
    pub layout: PathBuf,
    /// The tag recorded in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// `sha256:…` of the compressed layer.
    pub layer_digest: String,
    /// `sha256:…` of the uncompressed layer (the config's diff_id).
    pub diff_id: String,
}

/// Whether `/bin/busybox` (busybox-static), GNU tar and gzip are present;
/// tests skip loudly when not (and fail under `CI`).
pub fn available() -> bool {
    let ok = Path::new("/bin/busybox").is_file()
        && crate::require_tool("tar")
        && crate::require_tool("gzip");
    if !ok {
        let msg = "SKIPPING: /bin/busybox (busybox-static), tar or gzip is missing";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; .ci/run must install busybox-static");
        }
        eprintln!("{msg}");
    }
    ok
}

fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_EPOCH)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (UTC, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn run(cmd: &mut Command) {
    crate::run_ok(cmd);
}

/// The Go architecture name of this machine (`dpkg --print-architecture`
/// agrees on Debian for the common ones).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Build the busybox rootfs in `r` (which must not exist yet).
pub fn make_rootfs(r: &Path) {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "tmp", "dev", "proc",
        "sys",
    ] {
        std::fs::create_dir_all(r.join(d)).expect("create rootfs dir");
    }
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    mode(&r.join("tmp"), 0o1777);
    mode(&r.join("root"), 0o700);
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).expect("copy /bin/busybox");
    mode(&r.join("bin/busybox"), 0o755);
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for app in String::from_utf8_lossy(&list.stdout).lines() {
        // Skip `linuxrc` (no dir) and busybox itself.
        if !app.contains('/') || app == "bin/busybox" {
            continue;
        }
        let link = r.join(app);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/busybox", &link).expect("applet symlink");
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .expect("write group");
    mode(&r.join("etc/passwd"), 0o644);
    mode(&r.join("etc/group"), 0o644);
}

fn sha256_file(p: &Path) -> (String, u64) {
    let bytes = std::fs::read(p).expect("read blob");
    (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64)
}

/// Move `file` into `layout/blobs/sha256/<hex>`; returns (hex, size).
fn put_blob(layout: &Path, file: &Path) -> (String, u64) {
    let (hex, size) = sha256_file(file);
    // Copy, not rename: the layout may be on another filesystem.
    std::fs::copy(file, layout.join("blobs/sha256").join(&hex)).expect("copy blob");
    let _ = std::fs::remove_file(file);
    (hex, size)
}

fn busybox_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "busybox-static"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Write the busybox image as an OCI layout at `dest` (replaced if it
/// exists), tagged `latest`. Same inputs give the same digests.
pub fn oci_layout_dir(dest: &Path) -> BaseImage {
    let work = tempfile::Builder::new()
        .prefix("kiln-busybox-")
        .tempdir()
        .expect("temp dir");
    let rootfs = work.path().join("rootfs");
    make_rootfs(&rootfs);
    let epoch = epoch();
    let created = rfc3339(epoch);

    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest.join("blobs/sha256")).expect("create layout");

    let mut top: Vec<String> = std::fs::read_dir(&rootfs)
        .expect("read rootfs")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    top.sort();
    let tar = work.path().join("layer.tar");
    // GNU format: no PAX headers (whose default names embed the pid).
    run(Command::new("tar")
        .env("LC_ALL", "C")
        .arg("-C")
        .arg(&rootfs)
        .args([
            "--format=gnu",
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .arg("-cf")
        .arg(&tar)
        .arg("--")
        .args(&top));
    let (diff_hex, _) = sha256_file(&tar);
    run(Command::new("gzip").args(["-n", "-6"]).arg(&tar));
    let (layer_hex, layer_size) = put_blob(dest, &work.path().join("layer.tar.gz"));

    let config = serde_json::json!({
        "created": created,
        "architecture": arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_hex}")] },
        "history": [{
            "created": created,
            "created_by": format!(
                "peers/make-base-image.sh: busybox-static {}",
                busybox_version()
            ),
        }],
    });
    let cfg_file = work.path().join("config.json");
    std::fs::write(&cfg_file, serde_json::to_vec(&config).expect("json")).expect("write config");
    let (cfg_hex, cfg_size) = put_blob(dest, &cfg_file);

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{cfg_hex}"),
            "size": cfg_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer_size,
        }],
    });
    let man_file = work.path().join("manifest.json");
    std::fs::write(&man_file, serde_json::to_vec(&manifest).expect("json"))
        .expect("write manifest");
    let (man_hex, man_size) = put_blob(dest, &man_file);

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{man_hex}"),
            "size": man_size,
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
            "platform": { "architecture": arch(), "os": "linux" },
        }],
    });
    std::fs::write(
        dest.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index.json");
    std::fs::write(dest.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");

    BaseImage {
        layout: dest.to_path_buf(),
        tag: "latest".into(),
        manifest_digest: format!("sha256:{man_hex}"),
        config_digest: format!("sha256:{cfg_hex}"),
        layer_digest: format!("sha256:{layer_hex}"),
        diff_id: format!("sha256:{diff_hex}"),
    }
}

/// Build the busybox image and push it to `registry` with skopeo as
/// `library/busybox:latest`; returns `127.0.0.1:PORT/library/busybox:latest`.
/// Panics when skopeo is missing or the push fails.
pub fn push_base_image(registry: &Registry) -> String {
    push_image_as(registry, "library/busybox:latest").0
}

/// Like [`push_base_image`] with another `repo:tag`; also returns what was
/// built (its digests).
pub fn push_image_as(registry: &Registry, repo_tag: &str) -> (String, BaseImage) {
    assert!(
        crate::require_tool("skopeo"),
        "skopeo is required to push the base image (apt-get install skopeo)"
    );
    // The layout lives as long as the registry, so callers can reuse it.
    let name: String = repo_tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let image = oci_layout_dir(&registry.scratch_dir().join("images").join(name));
    let reference = format!("{}/{repo_tag}", registry.host());
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(creds) = registry.skopeo_creds() {
        cmd.arg("--dest-creds").arg(creds);
    }
    cmd.arg(format!("oci:{}:latest", image.layout.display()))
        .arg(format!("docker://{reference}"));
    run(&mut cmd);
    (reference, image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(DEFAULT_EPOCH), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn layout_is_reproducible() {
        if !available() {
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let a = oci_layout_dir(&d.path().join("a"));
        let b = oci_layout_dir(&d.path().join("b"));
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert!(a.layout.join("index.json").is_file());
        let blob = a
            .layout
            .join("blobs/sha256")
            .join(a.layer_digest.trim_start_matches("sha256:"));
        assert!(blob.is_file());
    }

    /// Same bytes as the shared peers script, so kiln and the peer tools
    /// start from one base image digest.
    #[test]
    fn matches_the_peers_script() {
        let script = crate::workspace_root().join("../shared/peers/make-base-image.sh");
        if !available() || !script.is_file() || !crate::require_tool("jq") {
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(&script)
            .arg(d.path())
            .arg("--no-push")
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("run make-base-image.sh");
        if !out.status.success() {
            // The script needs skopeo & co. even without pushing; that is
            // the script's business, not this fixture's.
            eprintln!(
                "SKIPPING comparison: make-base-image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let theirs =
            std::fs::read_to_string(d.path().join("base/busybox/oci.digest")).expect("oci.digest");
        // Compare at the script's default epoch.
        if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
            return;
        }
        let ours = oci_layout_dir(&d.path().join("ours"));
        assert_eq!(ours.manifest_digest, theirs.trim());
    }

    #[test]
    fn push_to_local_registry() {
        if !available() || !crate::registry::available() || !crate::require_tool("skopeo") {
            return;
        }
        let reg = Registry::start();
        let (reference, image) = push_image_as(&reg, "library/busybox:latest");
        assert_eq!(reference, format!("{}/library/busybox:latest", reg.host()));
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo inspect");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            image.manifest_digest,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
