//! The registry client against Debian's `docker-registry` on loopback, with
//! skopeo as the independent witness. Skips loudly when docker-registry,
//! skopeo or busybox-static is missing (and fails under CI=true).

mod fake;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use kiln_e2e::busybox::{self, BaseImage};
use kiln_e2e::registry::{self, Registry};
use kiln_runtime::registry::{
    Credentials, Error, ImageRef, Platform, RegistryClient, RegistryOptions,
};
use kiln_store::{ContentStore, Digest};

fn available() -> bool {
    registry::available() && busybox::available() && kiln_e2e::require_tool("skopeo")
}

/// Copy a layout's blobs into a content store; returns the manifest bytes.
fn import_layout(image: &BaseImage, store: &ContentStore) -> Vec<u8> {
    let blobs = image.layout.join("blobs/sha256");
    for e in fs_err::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let bytes = fs_err::read(&p).unwrap();
        store.write_bytes(&bytes, None).unwrap();
    }
    let d: Digest = image.manifest_digest.parse().unwrap();
    store.read(&d).unwrap()
}

fn skopeo_digest(reference: &str, creds: Option<String>) -> String {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"]);
    if let Some(c) = creds {
        cmd.arg("--creds").arg(c);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn client_without_credentials(dir: &Path) -> RegistryClient {
    RegistryClient::new(RegistryOptions {
        docker_config: Some(dir.join("no-such-config.json")),
        ..Default::default()
    })
}

#[tokio::test]
async fn push_then_pull_round_trip() {
    if !available() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox::oci_layout_dir(&tmp.path().join("oci"));
    let src = ContentStore::new(tmp.path().join("src")).unwrap();
    let manifest = import_layout(&image, &src);
    let client = client_without_credentials(tmp.path());

    let r: ImageRef = format!("{}/kiln/roundtrip:v1", reg.host()).parse().unwrap();
    let pushed = client.push(&r, &manifest, &src).await.unwrap();
    assert_eq!(pushed.as_str(), image.manifest_digest);
    // Pushing again skips the blobs and gives the same digest.
    assert_eq!(client.push(&r, &manifest, &src).await.unwrap(), pushed);
    client
        .tag(&r, &manifest, &["v2".to_string()])
        .await
        .unwrap();

    // skopeo sees what we pushed, under both tags.
    assert_eq!(skopeo_digest(&r.to_string(), None), image.manifest_digest);
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/roundtrip:v2", reg.host()), None),
        image.manifest_digest
    );

    // Pull into a fresh store: every blob arrives, verified.
    let dst = ContentStore::new(tmp.path().join("dst")).unwrap();
    let pulled = client.pull(&r, &Platform::default(), &dst).await.unwrap();
    assert_eq!(pulled.resolved.manifest_digest, pushed);
    assert_eq!(pulled.resolved.digest, pushed);
    assert!(pulled.resolved.index.is_none());
    assert_eq!(
        pulled.resolved.reference.to_string(),
        format!("{}/kiln/roundtrip:v1@{pushed}", reg.host())
    );
    assert_eq!(pulled.resolved.layers.len(), 1);
    for d in [
        &image.manifest_digest,
        &image.config_digest,
        &image.layer_digest,
    ] {
        let d: Digest = d.parse().unwrap();
        assert!(dst.exists(&d), "{d} missing after pull");
        assert_eq!(dst.read(&d).unwrap(), src.read(&d).unwrap());
    }
    let config: serde_json::Value = serde_json::from_slice(&pulled.config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_id.as_str());
}

#[tokio::test]
async fn resolve_image_config_of_skopeo_pushed_image() {
    if !available() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let reference = busybox::push_base_image(&reg);
    assert_eq!(reference, format!("{}/library/busybox:latest", reg.host()));
    let want = skopeo_digest(&reference, None);

    let client = client_without_credentials(tmp.path());
    // The short form normalises to :latest.
    let r: ImageRef = format!("{}/library/busybox", reg.host()).parse().unwrap();
    let cfg = client
        .resolve_image_config(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(cfg.digest.as_str(), want);
    assert_eq!(cfg.manifest_digest.as_str(), want);
    assert_eq!(cfg.reference.digest(), Some(want.as_str()));
    let config: serde_json::Value = serde_json::from_slice(&cfg.config).unwrap();
    assert_eq!(config["config"]["Cmd"][0], "sh");
    assert_eq!(config["os"], "linux");

    // Pinning by digest resolves to the same thing.
    let pinned: ImageRef = format!("{}/library/busybox@{want}", reg.host())
        .parse()
        .unwrap();
    let again = client
        .resolve_image_config(&pinned, &Platform::default())
        .await
        .unwrap();
    assert_eq!(again.manifest_digest.as_str(), want);
}

#[tokio::test]
async fn index_selects_the_platform() {
    if !available() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox::oci_layout_dir(&tmp.path().join("oci"));
    let store = ContentStore::new(tmp.path().join("store")).unwrap();
    let manifest = import_layout(&image, &store);
    let size = manifest.len();
    // Two index entries naming the same manifest for two platforms.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest,
             "size": size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest,
             "size": size, "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }))
    .unwrap();
    let (index_digest, _) = store.write_bytes(&index, None).unwrap();

    let client = client_without_credentials(tmp.path());
    let r: ImageRef = format!("{}/kiln/multi:latest", reg.host()).parse().unwrap();
    assert_eq!(client.push(&r, &index, &store).await.unwrap(), index_digest);
    assert_eq!(skopeo_digest(&r.to_string(), None), index_digest.as_str());

    let resolved = client
        .resolve(&r, &"linux/arm64".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.digest, index_digest);
    assert_eq!(resolved.manifest_digest.as_str(), image.manifest_digest);
    assert_eq!(resolved.index.as_deref(), Some(index.as_slice()));

    let dst = ContentStore::new(tmp.path().join("dst")).unwrap();
    client.pull(&r, &Platform::default(), &dst).await.unwrap();
    assert!(dst.exists(&index_digest));

    let e = client
        .resolve(&r, &"linux/s390x".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoMatchingPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/arm64/v8, linux/amd64"), "{e}");
}

#[tokio::test]
async fn errors_name_the_reference_and_quote_the_registry() {
    if !available() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = client_without_credentials(tmp.path());
    let r: ImageRef = format!("{}/kiln/absent:nope", reg.host()).parse().unwrap();
    let e = client.resolve(&r, &Platform::default()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("kiln/absent:nope"), "{msg}");
    assert!(
        msg.contains("MANIFEST_UNKNOWN") || msg.contains("404"),
        "{msg}"
    );
    assert_eq!(e.status(), Some(404), "{e:?}");
}

#[tokio::test]
async fn basic_auth_with_docker_config() {
    if !available() {
        return;
    }
    let reg = Registry::start_with_auth("kiln", "s3cr3t-pw");
    let tmp = tempfile::tempdir().unwrap();
    let (reference, image) = busybox::push_image_as(&reg, "private/busybox:latest");
    let r: ImageRef = reference.parse().unwrap();

    // Credentials from $DOCKER_CONFIG/config.json.
    let cfg_dir = tmp.path().join("docker");
    let cfg = reg.write_docker_config(&cfg_dir);
    let client = RegistryClient::new(RegistryOptions {
        docker_config: Some(cfg),
        ..Default::default()
    });
    let resolved = client
        .resolve_image_config(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest.as_str(), image.manifest_digest);

    // Push with the same credentials, then check with skopeo.
    let store = ContentStore::new(tmp.path().join("store")).unwrap();
    let manifest = import_layout(&image, &store);
    let r2: ImageRef = format!("{}/private/copy:v1", reg.host()).parse().unwrap();
    client.push(&r2, &manifest, &store).await.unwrap();
    assert_eq!(
        skopeo_digest(&r2.to_string(), reg.skopeo_creds()),
        image.manifest_digest
    );

    // Without credentials: a clear 401 naming the image, and no secret in it.
    let anon = client_without_credentials(tmp.path());
    let e = anon.resolve(&r, &Platform::default()).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.status(), Some(401), "{msg}");
    assert!(msg.contains("private/busybox"), "{msg}");
    assert!(!msg.contains("s3cr3t-pw"));

    // Wrong password given directly.
    let mut creds = HashMap::new();
    creds.insert(
        reg.host(),
        Credentials {
            username: "kiln".into(),
            password: "wr0ng-pw-7x".into(),
        },
    );
    let bad = RegistryClient::new(RegistryOptions {
        credentials: creds,
        docker_config: Some(tmp.path().join("none.json")),
        ..Default::default()
    });
    let e = bad.resolve(&r, &Platform::default()).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!e.to_string().contains("wr0ng-pw-7x"), "{e}");
}

fn reply(media_type: &str, body: &[u8]) -> fake::Reply {
    fake::Reply {
        status: 200,
        headers: vec![
            ("Content-Type".into(), media_type.into()),
            (
                "Docker-Content-Digest".into(),
                Digest::of_bytes(body).to_string(),
            ),
        ],
        body: body.to_vec(),
    }
}

/// A one-config, no-layer image; returns (manifest, config).
fn tiny_image(config_size_override: Option<usize>) -> (Vec<u8>, Vec<u8>) {
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": Digest::of_bytes(&config).to_string(),
            "size": config_size_override.unwrap_or(config.len()),
        },
        "layers": []
    }))
    .unwrap();
    (manifest, config)
}

fn fake_client(host: &str) -> RegistryClient {
    let mut credentials = HashMap::new();
    credentials.insert(
        host.to_string(),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    );
    RegistryClient::new(RegistryOptions {
        credentials,
        docker_config: Some("/nonexistent/kiln/config.json".into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn bearer_token_auth() {
    let (manifest, config) = tiny_image(None);
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/team/app/manifests/v1".to_string(),
        reply(
            "application/vnd.docker.distribution.manifest.v2+json",
            &manifest,
        ),
    );
    routes.insert(
        format!("/v2/team/app/blobs/{}", Digest::of_bytes(&config)),
        reply("application/octet-stream", &config),
    );
    let reg = fake::start("tok-123", routes);
    let r: ImageRef = format!("{}/team/app:v1", reg.host).parse().unwrap();
    let got = fake_client(&reg.host)
        .resolve_image_config(&r, &Platform::default())
        .await
        .unwrap();
    assert_eq!(got.config, config);
    assert_eq!(got.manifest_digest, Digest::of_bytes(&manifest));
    let seen = reg.seen.lock().unwrap().clone();
    let token_req = seen
        .iter()
        .find(|(_, p, _)| p == "/token")
        .expect("token request");
    // Basic credentials go to the token endpoint ("u:p")...
    assert_eq!(token_req.2.as_deref(), Some("Basic dTpw"));
    // ...and the token to the registry.
    assert!(
        seen.iter()
            .any(|(_, p, a)| p.contains("/manifests/") && a.as_deref() == Some("Bearer tok-123")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn hostile_answers_are_refused() {
    // A config longer than its descriptor says.
    let (manifest, config) = tiny_image(Some(10));
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/x/long/manifests/latest".to_string(),
        reply(
            "application/vnd.docker.distribution.manifest.v2+json",
            &manifest,
        ),
    );
    routes.insert(
        format!("/v2/x/long/blobs/{}", Digest::of_bytes(&config)),
        reply("application/octet-stream", &config),
    );
    // A manifest asked for by digest that comes back different.
    let (other, _) = tiny_image(None);
    let wanted = Digest::of_bytes(b"something else");
    routes.insert(
        format!("/v2/x/pinned/manifests/{wanted}"),
        reply(
            "application/vnd.docker.distribution.manifest.v2+json",
            &other,
        ),
    );
    // Not JSON at all.
    routes.insert(
        "/v2/x/junk/manifests/latest".to_string(),
        reply(
            "application/vnd.oci.image.manifest.v1+json",
            b"<html>oops</html>",
        ),
    );
    let reg = fake::start("t", routes);
    let client = fake_client(&reg.host);

    let r: ImageRef = format!("{}/x/long", reg.host).parse().unwrap();
    let e = client
        .resolve_image_config(&r, &Platform::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("x/long"), "{e}");
    assert!(
        matches!(e, Error::TooLarge { .. } | Error::Registry { .. }),
        "{e:?}"
    );

    let r: ImageRef = format!("{}/x/pinned@{wanted}", reg.host).parse().unwrap();
    let e = client.resolve(&r, &Platform::default()).await.unwrap_err();
    assert!(e.to_string().contains("x/pinned"), "{e}");
    assert!(e.to_string().to_lowercase().contains("digest"), "{e}");

    let r: ImageRef = format!("{}/x/junk", reg.host).parse().unwrap();
    let e = client.resolve(&r, &Platform::default()).await.unwrap_err();
    assert!(e.to_string().contains("x/junk"), "{e}");
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest([seed]);
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn large_blobs_stream_both_ways() {
    if !registry::available() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = ContentStore::new(tmp.path().join("src")).unwrap();
    // Two layers: one above the in-memory push limit, one small.
    let big = noise(9 * 1024 * 1024 + 123, 1);
    let small = noise(4096, 2);
    let (big_d, _) = src.write_bytes(&big, None).unwrap();
    let (small_d, _) = src.write_bytes(&small, None).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (cfg_d, _) = src.write_bytes(config, None).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg_d.to_string(), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": big_d.to_string(), "size": big.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": small_d.to_string(), "size": small.len()},
        ]
    }))
    .unwrap();
    let client = client_without_credentials(tmp.path());
    let r: ImageRef = format!("{}/kiln/big:1", reg.host()).parse().unwrap();
    let digest = client.push(&r, &manifest, &src).await.unwrap();
    assert_eq!(digest, Digest::of_bytes(&manifest));

    #[derive(Default)]
    struct Count(std::sync::Mutex<(u64, usize)>);
    impl kiln_runtime::registry::PullProgress for Count {
        fn layer_bytes(&self, _: &kiln_runtime::registry::Descriptor, total: u64) {
            let mut g = self.0.lock().unwrap();
            g.0 = g.0.max(total);
        }
        fn layer_done(&self, _: &kiln_runtime::registry::Descriptor) {
            self.0.lock().unwrap().1 += 1;
        }
    }
    let progress = Count::default();
    let dst = ContentStore::new(tmp.path().join("dst")).unwrap();
    let pulled = client
        .pull_with_progress(&r, &Platform::default(), &dst, &progress)
        .await
        .unwrap();
    assert_eq!(*progress.0.lock().unwrap(), (big.len() as u64, 2));
    assert_eq!(pulled.resolved.layers.len(), 2);
    assert_eq!(dst.read(&big_d).unwrap(), big);
    assert_eq!(dst.read(&small_d).unwrap(), small);
}

#[tokio::test]
async fn stalled_registry_times_out() {
    let reg = fake::start("t", HashMap::new());
    let mut opts = RegistryOptions {
        docker_config: Some("/nonexistent/kiln/config.json".into()),
        read_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    opts.credentials.insert(
        reg.host.clone(),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
    );
    let client = RegistryClient::new(opts);
    let r: ImageRef = format!("{}/x/stall/app", reg.host).parse().unwrap();
    let start = std::time::Instant::now();
    let e = client.resolve(&r, &Platform::default()).await.unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(8), "{e}");
    assert!(e.to_string().contains("x/stall/app"), "{e}");
}
