//! Remote sources end to end: `ADD <url>` against a loopback HTTP server
//! and `ADD <git url>` against `git daemon` on loopback, through the CLI
//! with `FROM scratch` Dockerfiles (or hand-built LLB on stdin where the
//! Dockerfile has no syntax for it), exported to a directory. Downloads
//! are counted on the server; caching is read from `--progress=rawjson`;
//! hostile inputs (`../` tarballs, redirect loops, oversize bodies, git
//! trees with symlinks out of the root) must fail or stay inside.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_e2e::gitserver::{GitServer, Repo, git};
use kiln_e2e::httpserver::{HttpServer, Route};
use kiln_e2e::{kiln, raw_tar, require_tool, run_fail, run_ok};
use sha2::Digest as _;

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A state dir, a context holding a Dockerfile, and an output dir.
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
        b.dockerfile(dockerfile);
        b
    }

    fn dockerfile(&self, text: &str) {
        std::fs::write(self.ctx.path().join("Dockerfile"), text).unwrap();
    }

    /// `kiln build` of the context into `<out>/<dest>`, rawjson progress.
    fn cmd(&self, dest: &str) -> Command {
        let mut c = kiln(self.root.path());
        c.args(["build", "--frontend", "dockerfile.v0", "--progress=rawjson"])
            .arg(format!("--local=context={}", self.ctx.path().display()))
            .arg(format!("--local=dockerfile={}", self.ctx.path().display()))
            .arg(format!(
                "--output=type=local,dest={}",
                self.dest(dest).display()
            ));
        c
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.out.path().join(name.trim_start_matches('/'))
    }

    fn read(&self, dest: &str, path: &str) -> String {
        let p = self.dest(dest).join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

/// The vertexes of a rawjson progress stream: digest → (name, cached).
fn vertexes(stderr: &[u8]) -> BTreeMap<String, (String, bool)> {
    kiln_e2e::rawjson_vertexes(stderr)
}

/// Whether any vertex whose name contains `needle` ran (was not cached);
/// panics when no vertex has that name.
fn ran(v: &BTreeMap<String, (String, bool)>, needle: &str) -> bool {
    let hits: Vec<_> = v.values().filter(|(n, _)| n.contains(needle)).collect();
    assert!(!hits.is_empty(), "no vertex named like {needle:?}: {v:?}");
    hits.iter().any(|(_, c)| !c)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file under `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// Files left in the content store's ingest dirs (partial downloads).
fn ingest_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == "ingest" {
                    left.extend(
                        std::fs::read_dir(e.path())
                            .unwrap()
                            .flatten()
                            .map(|e| e.path()),
                    );
                } else {
                    stack.push(e.path());
                }
            }
        }
    }
    left
}

// ---------------------------------------------------------------------------
// HTTP

/// A tar.gz holding `inner/from-tar.txt`.
fn tarball() -> Vec<u8> {
    gzip(&raw_tar(&[
        ("inner/", b'5', "", b""),
        ("inner/from-tar.txt", b'0', "", b"from a remote tar\n"),
    ]))
}

#[test]
fn add_file_and_tarball_urls_with_and_without_checksum() {
    let srv = HttpServer::start();
    let hello = b"hello over http\n".to_vec();
    let tgz = tarball();
    srv.route("/files/hello.txt", Route::body(hello.clone()));
    srv.route("/dl/bundle.tar.gz", Route::body(tgz.clone()));
    let b = Build::new(&format!(
        "FROM scratch\n\
         ADD {hello_url} /plain/\n\
         ADD --checksum={hello_sum} {hello_url} /pinned/renamed.txt\n\
         ADD {tgz_url} /kept/\n\
         ADD --unpack=true {tgz_url} /unpacked/\n\
         ADD --unpack=true --checksum={tgz_sum} {tgz_url} /unpacked-pinned/\n",
        hello_url = srv.url("/files/hello.txt"),
        hello_sum = sha256(&hello),
        tgz_url = srv.url("/dl/bundle.tar.gz"),
        tgz_sum = sha256(&tgz),
    ));
    run_ok(&mut b.cmd("1"));
    assert_eq!(b.read("1", "plain/hello.txt"), "hello over http\n");
    assert_eq!(b.read("1", "pinned/renamed.txt"), "hello over http\n");
    // As in Docker, a downloaded file gets mode 0600.
    let mode = std::fs::metadata(b.dest("1").join("plain/hello.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A remote tarball is kept as a file unless --unpack says otherwise.
    assert_eq!(
        std::fs::read(b.dest("1").join("kept/bundle.tar.gz")).unwrap(),
        tgz
    );
    assert_eq!(
        b.read("1", "unpacked/inner/from-tar.txt"),
        "from a remote tar\n"
    );
    assert_eq!(
        b.read("1", "unpacked-pinned/inner/from-tar.txt"),
        "from a remote tar\n"
    );
    assert!(!b.dest("1").join("unpacked/bundle.tar.gz").exists());
}

#[test]
fn second_build_with_an_unchanged_server_downloads_nothing() {
    let srv = HttpServer::start();
    let etagged = b"etag body v1\n".to_vec();
    srv.route(
        "/etag.txt",
        Route {
            etag: Some("\"v1\"".into()),
            ..Route::body(etagged.clone())
        },
    );
    srv.route(
        "/dated.txt",
        Route {
            last_modified: Some("Wed, 21 Oct 2026 07:28:00 GMT".into()),
            ..Route::body("dated body\n")
        },
    );
    let pinned = b"pinned body\n".to_vec();
    srv.route("/pinned.txt", Route::body(pinned.clone()));
    let b = Build::new(&format!(
        "FROM scratch\nADD {} /e/\nADD {} /d/\nADD --checksum={} {} /p/\n",
        srv.url("/etag.txt"),
        srv.url("/dated.txt"),
        sha256(&pinned),
        srv.url("/pinned.txt"),
    ));
    let first = run_ok(&mut b.cmd("1"));
    assert!(!vertexes(&first.stderr).is_empty(), "{}", stderr(&first));
    assert_eq!(srv.downloads("/etag.txt"), (1, 0));
    assert_eq!(srv.downloads("/dated.txt"), (1, 0));
    // Progress shows the byte count.
    assert!(
        stderr(&first).contains(&format!(
            "downloaded {} bytes from {}",
            etagged.len(),
            srv.url("/etag.txt")
        )),
        "{}",
        stderr(&first)
    );
    assert_eq!(srv.downloads("/pinned.txt"), (1, 0));

    let second = run_ok(&mut b.cmd("2"));
    let v = vertexes(&second.stderr);
    assert!(v.values().all(|(_, c)| *c), "all cached: {v:?}");
    // Revalidated, not downloaded: one 304 each; a checksum needs no request.
    assert_eq!(srv.downloads("/etag.txt"), (1, 1));
    assert_eq!(srv.downloads("/dated.txt"), (1, 1));
    assert_eq!(srv.requests("/pinned.txt").len(), 1);
    assert_eq!(b.read("2", "e/etag.txt"), "etag body v1\n");

    // The server changes: that download runs again, with the new body; the
    // other two sources stay cached (the ADDs after it re-run: their input
    // changed).
    srv.route(
        "/etag.txt",
        Route {
            etag: Some("\"v2\"".into()),
            ..Route::body("etag body v2\n")
        },
    );
    let third = run_ok(b.cmd("3").arg("--explain-cache"));
    let v = vertexes(&third.stderr);
    assert!(ran(&v, "/etag.txt"), "{v:?}");
    let why = format!(
        "content of {} changed from {} to {}",
        srv.url("/etag.txt"),
        sha256(&etagged),
        sha256(b"etag body v2\n")
    );
    assert!(stderr(&third).contains(&why), "{}", stderr(&third));
    for other in ["/pinned.txt", "/dated.txt"] {
        assert!(
            v.values().any(|(n, c)| n.contains(other) && *c),
            "the {other} source stays cached: {v:?}"
        );
    }
    assert_eq!(srv.downloads("/etag.txt"), (2, 1));
    assert_eq!(srv.downloads("/dated.txt"), (1, 2));
    assert_eq!(srv.requests("/pinned.txt").len(), 1);
    assert_eq!(b.read("3", "e/etag.txt"), "etag body v2\n");
    assert_eq!(b.read("3", "p/pinned.txt"), "pinned body\n");
}

#[test]
fn wrong_checksum_fails_clearly_and_keeps_nothing() {
    let srv = HttpServer::start();
    let body = b"kiln-e2e body that must not be kept 5d1c\n".to_vec();
    srv.route("/f.txt", Route::body(body.clone()));
    let wrong = sha256(b"something else");
    let b = Build::new(&format!(
        "FROM scratch\nADD --checksum={wrong} {} /f.txt\n",
        srv.url("/f.txt")
    ));
    let o = run_fail(&mut b.cmd("bad"));
    let err = stderr(&o);
    assert!(err.contains("does not match its checksum"), "{err}");
    assert!(err.contains(&wrong), "names the expected digest: {err}");
    assert!(
        err.contains(&sha256(&body)),
        "names the actual digest: {err}"
    );
    assert!(!b.dest("bad").exists(), "nothing exported");
    assert_eq!(
        files_containing(b.root.path(), &body),
        Vec::<PathBuf>::new(),
        "the body is kept nowhere in the state dir"
    );
    assert_eq!(ingest_leftovers(b.root.path()), Vec::<PathBuf>::new());

    // The right checksum then works (downloading again: nothing was kept).
    b.dockerfile(&format!(
        "FROM scratch\nADD --checksum={} {} /f.txt\n",
        sha256(&body),
        srv.url("/f.txt")
    ));
    run_ok(&mut b.cmd("good"));
    assert_eq!(std::fs::read(b.dest("good").join("f.txt")).unwrap(), body);
    assert_eq!(srv.downloads("/f.txt"), (2, 0));
}

/// `kiln build` of hand-built LLB on stdin into a local dir.
fn build_llb(root: &Path, def: &[u8], dest: &Path, extra: &[String]) -> Output {
    let mut child = kiln(root)
        .args(["build", "--progress", "plain"])
        .arg(format!("--output=type=local,dest={}", dest.display()))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(def).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn auth_header_secret_is_required_by_the_server_and_sent() {
    use kiln_llb::builder::{MarshalOptions, http};
    let secret = "Bearer kiln-e2e-http-t0ken-9c41e7";
    let srv = HttpServer::start();
    srv.route(
        "/private.txt",
        Route {
            auth: Some(secret.into()),
            ..Route::body("private body\n")
        },
    );
    // The Dockerfile has no syntax for an http auth secret: hand-built LLB.
    let def = http(srv.url("/private.txt"))
        .filename("private.txt")
        .auth_header_secret("httpauth")
        .state()
        .marshal_to_vec(&MarshalOptions::default())
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sfile = out.path().join("secret");
    std::fs::write(&sfile, format!("{secret}\n")).unwrap();
    let wrong = out.path().join("wrong");
    std::fs::write(&wrong, "Bearer not-the-token").unwrap();

    // No secret: a clear error before any request.
    let mut logs = String::new();
    let o = build_llb(root.path(), &def, &out.path().join("a"), &[]);
    logs.push_str(&stderr(&o));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("\"httpauth\"") && stderr(&o).contains("not provided"),
        "{}",
        stderr(&o)
    );
    assert!(srv.requests("/private.txt").is_empty());

    // A wrong secret: the server says 401 and kiln says so.
    let o = build_llb(
        root.path(),
        &def,
        &out.path().join("b"),
        &[format!("--secret=id=httpauth,src={}", wrong.display())],
    );
    logs.push_str(&stderr(&o));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // The right one: downloaded, and the server saw it.
    let o = build_llb(
        root.path(),
        &def,
        &out.path().join("c"),
        &[format!("--secret=id=httpauth,src={}", sfile.display())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.path().join("c/private.txt")).unwrap(),
        "private body\n"
    );
    let reqs = srv.requests("/private.txt");
    assert_eq!(
        reqs.last()
            .unwrap()
            .headers
            .get("authorization")
            .map(String::as_str),
        Some(secret)
    );
    assert_eq!(reqs.iter().filter(|r| r.status == 401).count(), 1);

    // The secret lands in no log, output or state file.
    logs.push_str(&stderr(&o));
    logs.push_str(&String::from_utf8_lossy(&o.stdout));
    assert!(!logs.contains("t0ken"), "secret in a log: {logs}");
    assert_eq!(
        files_containing(root.path(), b"t0ken"),
        Vec::<PathBuf>::new(),
        "secret under the state dir"
    );
    assert_eq!(
        files_containing(&out.path().join("c"), b"t0ken"),
        Vec::<PathBuf>::new(),
        "secret in the output"
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let srv = HttpServer::start();
    srv.route(
        "/flaky.txt",
        Route {
            fail_first: 2,
            ..Route::body("eventually\n")
        },
    );
    let b = Build::new(&format!("FROM scratch\nADD {} /\n", srv.url("/flaky.txt")));
    run_ok(&mut b.cmd("1"));
    assert_eq!(b.read("1", "flaky.txt"), "eventually\n");
    let statuses: Vec<u16> = srv
        .requests("/flaky.txt")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);

    // A 404 is not retried.
    let b = Build::new(&format!(
        "FROM scratch\nADD {} /\n",
        srv.url("/missing.txt")
    ));
    let o = run_fail(&mut b.cmd("2"));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    assert_eq!(srv.requests("/missing.txt").len(), 1);
}

// ---------------------------------------------------------------------------
// HTTP: hostile inputs

#[test]
fn tarball_with_dotdot_entries_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("escaped.txt");
    let depth = "../".repeat(24);
    let evil = format!(
        "{depth}{}",
        marker.to_str().unwrap().trim_start_matches('/')
    );
    let tgz = gzip(&raw_tar(&[
        ("fine.txt", b'0', "", b"fine\n"),
        (&evil, b'0', "", b"ESCAPED\n"),
    ]));
    let srv = HttpServer::start();
    srv.route("/evil.tar.gz", Route::body(tgz));
    let b = Build::new(&format!(
        "FROM scratch\nADD --unpack=true {} /x/\n",
        srv.url("/evil.tar.gz")
    ));
    let o = run_fail(&mut b.cmd("1"));
    assert!(stderr(&o).contains("`..`"), "{}", stderr(&o));
    assert!(!marker.exists(), "a ../ entry was written outside");
    assert!(!b.dest("1").exists());
    // The archive is compressed: plain text in the state dir would be an
    // extracted entry left behind.
    assert_eq!(
        files_containing(b.root.path(), b"ESCAPED\n"),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn redirect_loops_are_refused() {
    let srv = HttpServer::start();
    let redirect = |to: &str| Route {
        redirect: Some(to.into()),
        ..Default::default()
    };
    srv.route("/loop", redirect("/loop"));
    srv.route("/a", redirect("/b"));
    srv.route("/b", redirect("/a"));
    let b = Build::new("");
    for path in ["/loop", "/a"] {
        b.dockerfile(&format!("FROM scratch\nADD {} /f\n", srv.url(path)));
        let o = run_fail(&mut b.cmd(path));
        assert!(
            stderr(&o).contains("too many redirects"),
            "{path}: {}",
            stderr(&o)
        );
        assert!(!b.dest(path).exists());
    }
    // Bounded, and not retried: at most 11 requests each.
    assert!(
        srv.requests("/loop").len() <= 11,
        "{:?}",
        srv.requests("/loop").len()
    );
}

#[test]
fn oversize_bodies_are_refused_at_the_configured_cap() {
    let srv = HttpServer::start();
    srv.route(
        "/declared",
        Route {
            endless: true,
            claim_len: Some(64 << 20),
            ..Default::default()
        },
    );
    srv.route(
        "/undeclared",
        Route {
            endless: true,
            ..Default::default()
        },
    );
    srv.route("/small", Route::body(vec![b'x'; 1000]));
    // One state dir for all of it: the frontend is compiled once.
    let b = Build::new("");
    for path in ["/declared", "/undeclared"] {
        b.dockerfile(&format!("FROM scratch\nADD {} /f\n", srv.url(path)));
        let o = run_fail(b.cmd(path).env("KILN_HTTP_MAX_BYTES", "1048576"));
        let err = stderr(&o);
        assert!(
            err.contains("larger than the download limit of 1048576 bytes")
                && err.contains("KILN_HTTP_MAX_BYTES"),
            "{path}: {err}"
        );
        assert!(!b.dest(path).exists());
        assert_eq!(ingest_leftovers(b.root.path()), Vec::<PathBuf>::new());
    }
    // Under the cap it works; a bad setting is an error, not a default.
    b.dockerfile(&format!("FROM scratch\nADD {} /f\n", srv.url("/small")));
    run_ok(b.cmd("small").env("KILN_HTTP_MAX_BYTES", "1048576"));
    assert_eq!(
        std::fs::read(b.dest("small").join("f")).unwrap().len(),
        1000
    );
    let o = run_fail(b.cmd("bad").env("KILN_HTTP_MAX_BYTES", "lots"));
    assert!(stderr(&o).contains("KILN_HTTP_MAX_BYTES"), "{}", stderr(&o));
    // The same cap from the state dir's kiln.toml; the variable wins.
    let toml = b.root.path().join("kiln.toml");
    std::fs::write(&toml, "[sources]\nhttp-max-size = \"1MiB\"\n").unwrap();
    b.dockerfile(&format!("FROM scratch\nADD {} /f\n", srv.url("/declared")));
    let o = run_fail(&mut b.cmd("toml"));
    let err = stderr(&o);
    assert!(
        err.contains("larger than the download limit of 1048576 bytes")
            && err.contains("http-max-size"),
        "{err}"
    );
    b.dockerfile(&format!("FROM scratch\nADD {} /f\n", srv.url("/small")));
    let o = run_fail(b.cmd("tiny").env("KILN_HTTP_MAX_BYTES", "10"));
    assert!(stderr(&o).contains("limit of 10 bytes"), "{}", stderr(&o));
    std::fs::write(&toml, "[sources]\nhttp-max-size = \"50%\"\n").unwrap();
    let o = run_fail(&mut b.cmd("share"));
    assert!(stderr(&o).contains("http-max-size"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------
// git

/// A served repository: `README` and `docs/guide.md` at commit `c1`
/// (annotated tag `v1`), then `README` changed at `c2` on `main`.
struct Fixture {
    srv: GitServer,
    repo: Repo,
    c1: String,
    c2: String,
}

fn fixture() -> Option<Fixture> {
    if !require_tool("git") {
        return None;
    }
    let srv = GitServer::start();
    let repo = srv.repo("project");
    repo.write("README", "v1\n")
        .write("docs/guide.md", "guide\n");
    let c1 = repo.commit("one");
    repo.git(&["tag", "-a", "v1", "-m", "release one"]);
    repo.write("README", "v2\n");
    let c2 = repo.commit("two");
    repo.push();
    Some(Fixture { srv, repo, c1, c2 })
}

#[test]
fn add_git_branch_tag_commit_subdir_keep_git_dir_and_git_context() {
    let Some(f) = fixture() else { return };
    let url = f.srv.url("project");
    let b = Build::new(&format!(
        "FROM scratch\n\
         ADD {url}#main /branch/\n\
         ADD {url}#v1 /tag/\n\
         ADD {url}#{c1} /commit/\n\
         ADD {url}#main:docs /docs/\n\
         ADD --keep-git-dir=true {url}#main /kept/\n\
         COPY --from=released /README /from-context\n",
        c1 = f.c1
    ));
    run_ok(
        b.cmd("1")
            .arg("--opt")
            .arg(format!("context:released={url}#v1")),
    );
    assert_eq!(b.read("1", "from-context"), "v1\n");
    assert_eq!(b.read("1", "branch/README"), "v2\n");
    assert_eq!(b.read("1", "branch/docs/guide.md"), "guide\n");
    assert_eq!(b.read("1", "tag/README"), "v1\n");
    assert_eq!(b.read("1", "commit/README"), "v1\n");
    assert_eq!(b.read("1", "docs/guide.md"), "guide\n");
    assert!(!b.dest("1").join("docs/README").exists());
    assert!(!b.dest("1").join("branch/.git").exists(), ".git dropped");
    let kept = b.dest("1").join("kept");
    assert!(kept.join(".git").is_dir(), "--keep-git-dir keeps .git");
    assert_eq!(git(&kept, &["rev-parse", "HEAD"]), f.c2);
    assert_eq!(git(&kept, &["remote", "get-url", "origin"]), url);
    assert_eq!(git(&kept, &["status", "--porcelain"]), "");
}

#[test]
fn git_checksum_pins_the_commit() {
    let Some(f) = fixture() else { return };
    let url = f.srv.url("project");
    let b = Build::new(&format!(
        "FROM scratch\nADD --checksum={} {url}#v1 /v1/\n",
        f.c1
    ));
    run_ok(&mut b.cmd("1"));
    assert_eq!(b.read("1", "v1/README"), "v1\n");
    b.dockerfile(&format!(
        "FROM scratch\nADD --checksum={} {url}#main /m/\n",
        f.c1
    ));
    let o = run_fail(&mut b.cmd("2"));
    let err = stderr(&o);
    assert!(
        err.contains(&f.c2) && err.contains("not the expected checksum"),
        "{err}"
    );
    assert!(!b.dest("2").exists());
}

#[test]
fn a_pushed_commit_reruns_only_what_depends_on_it() {
    let Some(f) = fixture() else { return };
    let url = f.srv.url("project");
    let b = Build::new(&format!(
        "FROM scratch AS pinned\n\
         ADD {url}#v1 /v1/\n\
         FROM scratch\n\
         COPY ctx.txt /ctx.txt\n\
         ADD {url}#main /src/\n\
         COPY --from=pinned /v1/README /v1-readme\n"
    ));
    std::fs::write(b.ctx.path().join("ctx.txt"), "context\n").unwrap();
    run_ok(&mut b.cmd("1"));
    assert_eq!(b.read("1", "src/README"), "v2\n");
    let again = run_ok(&mut b.cmd("2"));
    let v = vertexes(&again.stderr);
    assert!(
        v.values().all(|(_, c)| *c),
        "unchanged repo: all cached {v:?}"
    );

    f.repo.write("README", "v3\n");
    let c3 = f.repo.commit("three");
    f.repo.push();
    let third = run_ok(b.cmd("3").arg("--explain-cache"));
    let v = vertexes(&third.stderr);
    assert!(
        stderr(&third).contains(&format!("main moved from {} to {c3}", f.c2)),
        "explain-cache says the branch moved: {}",
        stderr(&third)
    );
    assert!(ran(&v, "#main"), "the branch ADD re-runs: {v:?}");
    assert!(!ran(&v, "#v1"), "the tag ADD stays cached: {v:?}");
    assert!(
        !ran(&v, "COPY ctx.txt"),
        "COPY before it stays cached: {v:?}"
    );
    assert_eq!(b.read("3", "src/README"), "v3\n");
    assert_eq!(b.read("3", "v1-readme"), "v1\n");
}

#[test]
fn a_fetched_commit_needs_no_fetch_again() {
    let Some(mut f) = fixture() else { return };
    let url = f.srv.url("project");
    let b = Build::new(&format!("FROM scratch\nADD {url}#main /a/\n"));
    run_ok(&mut b.cmd("1"));
    let first = f.srv.upload_packs();
    assert!(first >= 2, "the first build resolved and fetched: {first}");
    // Another step on the same commit (a new key: another subdir) only
    // resolves the ref; the checkout comes from the mirror in the state dir.
    b.dockerfile(&format!("FROM scratch\nADD {url}#main:docs /b/\n"));
    run_ok(&mut b.cmd("2"));
    assert_eq!(b.read("2", "b/guide.md"), "guide\n");
    assert_eq!(f.srv.upload_packs(), first + 1, "one ls-remote, no fetch");
    // With the server gone a pinned commit still checks out...
    f.srv.stop();
    b.dockerfile(&format!(
        "FROM scratch\nADD --keep-git-dir=true {url}#{} /c/\n",
        f.c2
    ));
    let o = run_ok(&mut b.cmd("3"));
    assert_eq!(b.read("3", "c/README"), "v2\n");
    assert!(
        stderr(&o).contains(&format!("{} is in the local mirror", f.c2)),
        "progress says so: {}",
        stderr(&o)
    );
    // ...but a branch has to be resolved, even for a step that is cached,
    // which now fails, clearly.
    b.dockerfile(&format!("FROM scratch\nADD {url}#main /d/\n"));
    let o = run_fail(&mut b.cmd("4"));
    assert!(stderr(&o).contains("ls-remote"), "{}", stderr(&o));
}

#[test]
fn concurrent_builds_on_one_root_fetch_into_the_mirror_once() {
    let Some(f) = fixture() else { return };
    let url = f.srv.url("project");
    let text = format!("FROM scratch\nADD {url}#main /a/\n");
    // What one build asks of the server: a resolve, and the fetch(es).
    let alone = Build::new(&text);
    let before = f.srv.upload_packs();
    run_ok(&mut alone.cmd("1"));
    let one = f.srv.upload_packs() - before;
    // Three processes on one fresh root: each resolves the branch, and the
    // mirror is filled once (the others wait for its lock, then find the
    // commit there).
    let b = Build::new(&text);
    let before = f.srv.upload_packs();
    let kids: Vec<_> = (0..3)
        .map(|i| {
            b.cmd(&format!("c{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for i in 0..3 {
        assert_eq!(b.read(&format!("c{i}"), "a/README"), "v2\n");
    }
    assert_eq!(f.srv.upload_packs() - before, one + 2);

    // While another process holds the mirror's lock, a build that needs
    // the mirror waits for it.
    let mirrors: Vec<_> = std::fs::read_dir(b.root.path().join("engine/v1/git"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    let holder = kiln_e2e::FlockHolder::hold(&mirrors[0].join("kiln.lock"));
    let mut waiting = b
        .cmd("w")
        .arg("--no-cache")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the build went on while the mirror was locked"
    );
    drop(holder);
    let o = waiting.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(b.read("w", "a/README"), "v2\n");
}

#[test]
fn a_submodule_is_checked_out() {
    let Some(f) = fixture() else { return };
    let lib = f.srv.repo("lib");
    lib.write("lib.txt", "from the submodule\n");
    lib.commit("lib");
    lib.push();
    let app = f.srv.repo("app");
    app.write("app.txt", "app\n");
    app.git(&["submodule", "add", "-q", &f.srv.url("lib"), "vendor/lib"]);
    app.commit("app with lib");
    app.push();
    let url = f.srv.url("app");
    let b = Build::new(&format!(
        "FROM scratch\nADD {url}#main /app/\nADD {url}?ref=main&submodules=false /bare/\n"
    ));
    run_ok(&mut b.cmd("1"));
    assert_eq!(b.read("1", "app/app.txt"), "app\n");
    assert_eq!(
        b.read("1", "app/vendor/lib/lib.txt"),
        "from the submodule\n"
    );
    assert!(!b.dest("1").join("app/vendor/lib/.git").exists());
    assert!(b.dest("1").join("bare/app.txt").exists());
    assert!(
        !b.dest("1").join("bare/vendor/lib/lib.txt").exists(),
        "submodules=false skips it"
    );

    // A submodule naming a local path on the build host is refused.
    let sneaky = f.srv.repo("sneaky");
    sneaky.write("x.txt", "x\n");
    sneaky.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        lib.bare.to_str().unwrap(),
        "host",
    ]);
    sneaky.commit("local submodule");
    sneaky.push();
    b.dockerfile(&format!(
        "FROM scratch\nADD {}#main /s/\n",
        f.srv.url("sneaky")
    ));
    let o = run_fail(&mut b.cmd("2"));
    assert!(
        stderr(&o).contains("transport 'file' not allowed"),
        "{}",
        stderr(&o)
    );
    assert!(!b.dest("2").exists());
}

#[test]
fn git_auth_secrets_reach_an_http_remote() {
    let Some(f) = fixture() else { return };
    f.repo
        .git(&["-C", f.repo.bare.to_str().unwrap(), "update-server-info"]);
    let header = "Bearer kiln-e2e-git-h3ader-51b0";
    let token = "kiln-e2e-git-t0ken-8e2f";
    use base64::Engine as _;
    let basic = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    // One repository per credential, served as dumb HTTP (so the shallow
    // fetch is refused and the full-fetch fallback runs too).
    let srv = HttpServer::start();
    srv.serve_dir("/h/project.git", &f.repo.bare, Some(header));
    srv.serve_dir("/t/project.git", &f.repo.bare, Some(&basic));
    let b = Build::new("");
    let secrets = tempfile::tempdir().unwrap();
    let hfile = secrets.path().join("h");
    std::fs::write(&hfile, header).unwrap();
    let tfile = secrets.path().join("t");
    std::fs::write(&tfile, format!("{token}\n")).unwrap();

    b.dockerfile(&format!(
        "FROM scratch\nADD {}#v1 /src/\n",
        srv.url("/h/project.git")
    ));
    let o = run_fail(&mut b.cmd("none"));
    assert!(stderr(&o).contains("ls-remote"), "{}", stderr(&o));
    let mut logs = stderr(&o);
    let o = run_ok(b.cmd("header").arg(format!(
        "--secret=id=GIT_AUTH_HEADER,src={}",
        hfile.display()
    )));
    logs.push_str(&stderr(&o));
    assert_eq!(b.read("header", "src/README"), "v1\n");

    b.dockerfile(&format!(
        "FROM scratch\nADD {}#main /src/\n",
        srv.url("/t/project.git")
    ));
    let o = run_ok(b.cmd("token").arg(format!(
        "--secret=id=GIT_AUTH_TOKEN,src={}",
        tfile.display()
    )));
    logs.push_str(&stderr(&o));
    assert_eq!(b.read("token", "src/README"), "v2\n");
    assert!(
        srv.requests_under("/t/")
            .iter()
            .any(|r| r.status == 200 && r.headers.get("authorization") == Some(&basic)),
        "the token went out as basic auth"
    );

    for needle in [&b"h3ader"[..], b"t0ken"] {
        let n = String::from_utf8_lossy(needle);
        assert!(!logs.contains(&*n), "secret in a log: {logs}");
        assert_eq!(
            files_containing(b.root.path(), needle),
            Vec::<PathBuf>::new(),
            "secret {n} under the state dir"
        );
        assert_eq!(
            files_containing(b.out.path(), needle),
            Vec::<PathBuf>::new(),
            "secret {n} in the output"
        );
    }
}

#[test]
fn git_symlinks_out_of_the_root_are_kept_but_never_followed() {
    let Some(f) = fixture() else { return };
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host.txt"), "HOST FILE\n").unwrap();
    let out_dir = outside.path().to_str().unwrap().to_owned();
    let evil = f.srv.repo("evil");
    evil.write("ok.txt", "ok\n")
        .symlink("abs", &out_dir)
        .symlink(
            "rel",
            &format!("{}{}", "../".repeat(24), out_dir.trim_start_matches('/')),
        );
    evil.commit("links");
    // A crafted tree: `link` is a symlink out AND a directory holding a
    // file, so a naive checkout would write through the link.
    let w = &evil.work;
    let blob = pipe(w, &["hash-object", "-w", "--stdin"], b"WRITTEN THROUGH\n");
    let target = pipe(w, &["hash-object", "-w", "--stdin"], out_dir.as_bytes());
    let sub = pipe(
        w,
        &["mktree"],
        format!("100644 blob {blob}\tpwned.txt\n").as_bytes(),
    );
    let base = evil.git(&["write-tree"]);
    let listing = evil.git(&["ls-tree", &base]);
    let tree = pipe(
        w,
        &["mktree"],
        format!("{listing}\n120000 blob {target}\tlink\n040000 tree {sub}\tlink\n").as_bytes(),
    );
    let head = evil.git(&["rev-parse", "HEAD"]);
    let c = evil.git(&["commit-tree", &tree, "-p", &head, "-m", "crafted"]);
    evil.git(&["update-ref", "refs/heads/main", &c]);
    evil.push();

    let url = f.srv.url("evil");
    let b = Build::new(&format!("FROM scratch\nADD {url}#main /src/\n"));
    run_ok(&mut b.cmd("1"));
    let src = b.dest("1").join("src");
    assert_eq!(b.read("1", "src/ok.txt"), "ok\n");
    assert_eq!(std::fs::read_link(src.join("abs")).unwrap(), outside.path());
    assert!(
        std::fs::symlink_metadata(src.join("rel"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        1,
        "nothing was written outside"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("host.txt")).unwrap(),
        "HOST FILE\n"
    );

    // A subdir through a link resolves inside the checkout: not found,
    // and the host file is read by nothing.
    for sub in ["abs", "rel"] {
        b.dockerfile(&format!("FROM scratch\nADD {url}#main:{sub} /x/\n"));
        let o = run_fail(&mut b.cmd(sub));
        assert!(stderr(&o).contains("not found"), "{sub}: {}", stderr(&o));
        assert!(!b.dest(sub).exists());
    }
    assert_eq!(
        files_containing(b.root.path(), b"HOST FILE"),
        Vec::<PathBuf>::new(),
        "the host file was not copied into the state dir"
    );
}

/// Runs git with `input` on stdin; returns trimmed stdout.
fn pipe(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut c = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A tar.gz of `(path, content)` files.
fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let entries: Vec<(&str, u8, &str, &[u8])> = files
        .iter()
        .map(|(p, c)| (*p, b'0', "", c.as_bytes()))
        .collect();
    gzip(&raw_tar(&entries))
}

#[test]
fn remote_build_contexts_from_git_a_tarball_and_a_dockerfile_url() {
    let Some(f) = fixture() else { return };
    let srv = HttpServer::start();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let build = |context: &str, dest: &str| {
        let mut c = kiln(root.path());
        c.args(["build", "--frontend", "dockerfile.v0", "--progress=plain"])
            .arg(format!("--local=context={context}"))
            .arg(format!(
                "--output=type=local,dest={}",
                out.path().join(dest).display()
            ));
        run_ok(&mut c)
    };

    // A git repository: the Dockerfile and the files come from the commit.
    f.repo
        .write("Dockerfile", "FROM scratch\nCOPY README /from-git/\n")
        .write("README", "from the repository\n");
    f.repo.commit("with a Dockerfile");
    f.repo.push();
    build(&format!("{}#main", f.srv.url("project")), "git");
    assert_eq!(
        std::fs::read_to_string(out.path().join("git/from-git/README")).unwrap(),
        "from the repository\n"
    );

    // A tarball: unpacked into the context.
    srv.route(
        "/ctx.tar.gz",
        Route::body(tgz(&[
            ("Dockerfile", "FROM scratch\nCOPY data.txt /from-tar/\n"),
            ("data.txt", "packed\n"),
        ])),
    );
    build(&srv.url("/ctx.tar.gz"), "tar");
    assert_eq!(
        std::fs::read_to_string(out.path().join("tar/from-tar/data.txt")).unwrap(),
        "packed\n"
    );

    // A plain file: it is the Dockerfile, and the context is empty.
    srv.route(
        "/Dockerfile",
        Route::body("FROM scratch\nWORKDIR /empty-context\n"),
    );
    build(&srv.url("/Dockerfile"), "plain");
    assert!(out.path().join("plain/empty-context").is_dir());

    // Anything else is refused clearly.
    let mut c = kiln(root.path());
    c.args([
        "build",
        "--frontend",
        "dockerfile.v0",
        "--opt",
        "context=not-a-url",
    ])
    .arg(format!(
        "--output=type=local,dest={}",
        out.path().join("x").display()
    ));
    let o = run_fail(&mut c);
    assert!(stderr(&o).contains("git or http(s) URL"), "{}", stderr(&o));
}
