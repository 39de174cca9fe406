//! `kiln du` and `kiln prune`: records listed with their types, sizes that
//! add up to the disk usage of the state dir, pruning by age, by size and
//! by filter, a prune during a running build that leaves the build's data
//! alone, and the automatic GC policy from `kiln.toml` over 20 builds.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_e2e::{busybox, kiln, rawjson_vertexes, registry::Registry, require_tool, run_ok};
use serde_json::Value;

fn build_cmd(root: &Path, ctx: &Path, dest: &Path) -> Command {
    let mut c = kiln(root);
    c.args(["build", "--progress=rawjson", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .arg(format!("--output=type=local,dest={}", dest.display()));
    c
}

fn build(root: &Path, ctx: &Path, dest: &Path) -> std::process::Output {
    run_ok(&mut build_cmd(root, ctx, dest))
}

fn total(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Total:").map(|t| t.trim().to_string()))
        .expect("a Total line")
}

/// `kiln du --format json`.
fn du_rows(root: &Path) -> Vec<Value> {
    let o = run_ok(kiln(root).args(["du", "--format", "json"]));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What the GC limits bound: every row but frontends and metadata.
fn cache_bytes(rows: &[Value]) -> u64 {
    rows.iter()
        .filter(|r| r["type"] != "frontend" && r["id"] != "internal:metadata")
        .map(|r| r["size"].as_u64().unwrap())
        .sum()
}

fn record_ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r["id"].as_str())
        .filter(|id| id.starts_with("sha256:"))
        .map(String::from)
        .collect()
}

fn context(dockerfile: &str, files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (n, b) in files {
        std::fs::write(ctx.path().join(n), b).unwrap();
    }
    ctx
}

/// Disk usage of a tree as `du` counts it (allocated bytes).
fn disk_usage(p: &Path) -> u64 {
    let o = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn du_lists_and_prune_frees() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        "FROM scratch\nCOPY big.bin /\nCOPY small.txt /\n",
        &[
            ("big.bin", vec![7u8; 300_000]),
            ("small.txt", b"small\n".to_vec()),
        ],
    );
    let out = tempfile::tempdir().unwrap();
    build(root.path(), ctx.path(), &out.path().join("1"));

    let du = run_ok(kiln(root.path()).arg("du"));
    let text = String::from_utf8_lossy(&du.stdout);
    assert!(
        text.lines().filter(|l| l.starts_with("sha256:")).count() >= 2,
        "{text}"
    );
    assert!(
        text.contains("source.local") && text.contains("regular"),
        "{text}"
    );
    assert_ne!(total(&du), "0B", "{text}");
    let verbose = run_ok(kiln(root.path()).args(["du", "--verbose"]));
    let v = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        v.contains("Description:") && v.contains("COPY big.bin") && v.contains("Type:"),
        "{v}"
    );

    // Filters select by type and by description.
    let rows = du_rows(root.path());
    let o =
        run_ok(kiln(root.path()).args(["du", "--format=json", "--filter", "type==source.local"]));
    let locals: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!locals.is_empty() && locals.len() < rows.len());
    assert!(locals.iter().all(|r| r["type"] == "source.local"));
    let o = run_ok(kiln(root.path()).args([
        "prune",
        "--format=json",
        "--filter",
        "description~=COPY big",
    ]));
    let gone: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(
        gone[0]["description"]
            .as_str()
            .unwrap()
            .contains("COPY big.bin")
    );
    let after = record_ids(&du_rows(root.path()));
    assert!(!after.contains(&gone[0]["id"].as_str().unwrap().to_owned()));
    assert_eq!(after.len() + 1, record_ids(&rows).len());
    // A bad filter is a clear error.
    let o = kiln_e2e::run_fail(kiln(root.path()).args(["du", "--filter", "colour==red"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("colour"));

    // Everything was used seconds ago: a one-hour age limit keeps it all.
    let p = run_ok(kiln(root.path()).args(["prune", "--keep-duration", "1h"]));
    assert_eq!(total(&p), "0B");

    let p = run_ok(kiln(root.path()).args(["prune", "--all"]));
    let _ = total(&p);
    assert_eq!(record_ids(&du_rows(root.path())), Vec::<String>::new());

    // The store still builds, and the result is right.
    build(root.path(), ctx.path(), &out.path().join("2"));
    assert_eq!(
        std::fs::read(out.path().join("2/small.txt")).unwrap(),
        b"small\n"
    );
}

#[test]
fn du_matches_the_disk_and_prune_honours_size_and_age() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let df = "FROM scratch\nCOPY a.bin /\nCOPY b.bin /\nCOPY c.bin /\n";
    let files_for = |seed: u8| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("a.bin", vec![seed; 400_000]),
            ("b.bin", vec![seed.wrapping_add(1); 300_000]),
            ("c.bin", vec![seed.wrapping_add(2); 200_000]),
        ]
    };
    let old_ctx = context(df, &files_for(1));
    build(root.path(), old_ctx.path(), &out.path().join("old"));
    let old_ids = record_ids(&du_rows(root.path()));

    // du's rows add up to what the state dir holds on disk.
    let rows = du_rows(root.path());
    let sum: u64 = rows.iter().map(|r| r["size"].as_u64().unwrap()).sum();
    let disk = disk_usage(root.path());
    let diff = sum.abs_diff(disk) as f64 / disk as f64;
    assert!(
        diff <= 0.05,
        "du says {sum}, the disk {disk} ({:.1}% apart)",
        diff * 100.0
    );

    // Records of a build 25 s later stay under a 20 s age limit; the old
    // ones go.
    std::thread::sleep(std::time::Duration::from_secs(25));
    let new_ctx = context(df, &files_for(50));
    build(root.path(), new_ctx.path(), &out.path().join("new"));
    let new_ids: Vec<String> = record_ids(&du_rows(root.path()))
        .into_iter()
        .filter(|id| !old_ids.contains(id))
        .collect();
    let p = run_ok(kiln(root.path()).args(["prune", "--keep-duration", "20s", "--format=json"]));
    let removed: Vec<String> = serde_json::from_slice::<Vec<Value>>(&p.stdout)
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .filter(|id| id.starts_with("sha256:"))
        .collect();
    let left = record_ids(&du_rows(root.path()));
    assert!(!removed.is_empty());
    for id in &removed {
        assert!(old_ids.contains(id), "{id} of the recent build was pruned");
    }
    for id in &new_ids {
        assert!(left.contains(id), "{id} of the recent build was pruned");
    }

    // A size bound: usage ends under it.
    build(root.path(), old_ctx.path(), &out.path().join("old2"));
    let before = cache_bytes(&du_rows(root.path()));
    let bound = before / 2;
    run_ok(kiln(root.path()).args(["prune", "--keep-storage", &format!("{bound}B")]));
    let after = cache_bytes(&du_rows(root.path()));
    assert!(
        after <= bound,
        "usage {after} is over the bound {bound} (was {before})"
    );

    // And du still matches the disk after pruning.
    let rows = du_rows(root.path());
    let sum: u64 = rows.iter().map(|r| r["size"].as_u64().unwrap()).sum();
    let disk = disk_usage(root.path());
    let diff = sum.abs_diff(disk) as f64 / disk as f64;
    assert!(diff <= 0.05, "after prune du says {sum}, the disk {disk}");
}

#[test]
fn prune_during_a_build_skips_what_the_build_holds() {
    if !(require_tool("runc") && require_tool("skopeo") && require_tool("docker-registry")) {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let df =
        format!("FROM {base}\nRUN echo one > /one\nARG STEP\nRUN echo $STEP > /two && sleep 6\n");
    let ctx = context(&df, &[]);
    let mut first = build_cmd(root.path(), ctx.path(), &out.path().join("1"));
    first.arg("--opt=build-arg:STEP=a");
    run_ok(&mut first);

    // The second build reuses the base and step one, and runs step two.
    let mut second = build_cmd(root.path(), ctx.path(), &out.path().join("2"));
    second
        .arg("--opt=build-arg:STEP=b")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = second.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "build ended early");
        log.extend_from_slice(line.as_bytes());
        if line.contains("sleep 6") && line.contains("\"started\"") {
            break;
        }
    }
    let during = du_rows(root.path());
    let held: Vec<&Value> = during.iter().filter(|r| r["inUse"] == true).collect();
    assert!(
        held.iter()
            .any(|r| r["description"].as_str().unwrap_or("").contains("echo one")),
        "step one should be in use: {during:?}"
    );
    let p = run_ok(kiln(root.path()).args(["prune", "--all", "--format=json"]));
    let removed: Vec<Value> = serde_json::from_slice(&p.stdout).unwrap();
    assert!(
        !removed
            .iter()
            .any(|r| r["description"].as_str().unwrap_or("").contains("echo one")),
        "prune removed a record the build holds: {removed:?}"
    );
    // The first build's own step two is not held: it goes.
    assert!(
        removed
            .iter()
            .any(|r| r["description"].as_str().unwrap_or("").contains("sleep 6")),
        "{removed:?}"
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    log.extend_from_slice(&rest);
    assert!(
        child.wait().unwrap().success(),
        "{}",
        String::from_utf8_lossy(&log)
    );
    assert_eq!(std::fs::read(out.path().join("2/two")).unwrap(), b"b\n");
    assert_eq!(std::fs::read(out.path().join("2/one")).unwrap(), b"one\n");

    // What the build held survived: a rebuild is fully cached.
    let mut again = build_cmd(root.path(), ctx.path(), &out.path().join("3"));
    again.arg("--opt=build-arg:STEP=b");
    let o = run_ok(&mut again);
    let ran: Vec<String> = rawjson_vertexes(&o.stderr)
        .into_values()
        .filter(|(n, c)| !c && !n.starts_with("[internal]"))
        .map(|(n, _)| n)
        .collect();
    assert!(ran.is_empty(), "steps ran again: {ran:?}");
}

#[test]
fn gc_policy_keeps_usage_under_the_bound_over_twenty_builds() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path()).unwrap();
    let bound: u64 = 3_000_000;
    std::fs::write(
        root.path().join("kiln.toml"),
        format!("[gc]\nmax-used-space = \"{bound}\"\nreserved-space = \"0\"\n"),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let df = "FROM scratch\nCOPY fixed.bin /\nCOPY changing.bin /\n";
    let mut last = None;
    for i in 0..20u32 {
        let ctx = context(
            df,
            &[
                ("fixed.bin", vec![1u8; 200_000]),
                ("changing.bin", i.to_le_bytes().repeat(100_000)),
            ],
        );
        build(root.path(), ctx.path(), &out.path().join(i.to_string()));
        let used = cache_bytes(&du_rows(root.path()));
        assert!(
            used <= bound,
            "after build {i}: {used} bytes over the bound {bound}"
        );
        last = Some(ctx);
    }
    // The latest build is still cached.
    let ctx = last.unwrap();
    let o = build(root.path(), ctx.path(), &out.path().join("again"));
    let ran: Vec<String> = rawjson_vertexes(&o.stderr)
        .into_values()
        .filter(|(n, c)| !c && !n.starts_with("[internal]"))
        .map(|(n, _)| n)
        .collect();
    assert!(ran.is_empty(), "steps ran again: {ran:?}");
    assert_eq!(
        std::fs::read(out.path().join("again/changing.bin")).unwrap(),
        19u32.to_le_bytes().repeat(100_000)
    );
}

#[test]
fn git_mirrors_are_listed_and_pruned() {
    if !require_tool("git") {
        return;
    }
    let srv = kiln_e2e::gitserver::GitServer::start();
    let repo = srv.repo("app");
    repo.write("README", "hello\n");
    repo.commit("one");
    repo.push();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!("FROM scratch\nADD {}#main /src/\n", srv.url("app")),
        &[],
    );
    build(root.path(), ctx.path(), &out.path().join("1"));
    assert_eq!(
        std::fs::read(out.path().join("1/src/README")).unwrap(),
        b"hello\n"
    );
    let mirror = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .filter(|r| r["id"].as_str().unwrap_or("").starts_with("gitmirror:"))
            .cloned()
            .collect()
    };
    let rows = du_rows(root.path());
    let m = mirror(&rows);
    assert_eq!(m.len(), 1, "{rows:?}");
    assert_eq!(m[0]["type"], "source.git.checkout");
    assert!(m[0]["size"].as_u64().unwrap() > 0);
    // Just fetched: a build may still be using it, so it stays.
    run_ok(kiln(root.path()).args(["prune", "--all"]));
    assert_eq!(mirror(&du_rows(root.path())).len(), 1);
    // Ten minutes later it is reclaimable and prune removes it.
    let dir = root.path().join("engine/v1/git").join(
        m[0]["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("gitmirror:"),
    );
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [dir.clone(), dir.join("FETCH_HEAD")] {
        if p.exists() {
            std::fs::File::options()
                .write(p.is_file())
                .read(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    // A mirror whose lock another process holds (a build fetching into
    // it) stays.
    let holder = kiln_e2e::FlockHolder::hold(&dir.join("kiln.lock"));
    let p = run_ok(kiln(root.path()).args(["prune", "--all", "--format=json"]));
    let removed: Vec<Value> = serde_json::from_slice(&p.stdout).unwrap();
    assert!(
        !removed.iter().any(|r| r["id"] == m[0]["id"]),
        "{removed:?}"
    );
    assert!(dir.join("HEAD").is_file());
    drop(holder);
    let p = run_ok(kiln(root.path()).args(["prune", "--all", "--format=json"]));
    let removed: Vec<Value> = serde_json::from_slice(&p.stdout).unwrap();
    assert!(removed.iter().any(|r| r["id"] == m[0]["id"]), "{removed:?}");
    assert!(!dir.exists());
    assert!(mirror(&du_rows(root.path())).is_empty());
}
