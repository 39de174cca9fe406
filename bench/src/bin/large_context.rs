//! No-change rebuilds of a large build context against a bare `stat` walk of
//! the same tree.
//!
//! For each size (1,000 and 100,000 files by default) it writes a context of
//! `dirs × 100` small files and a `FROM scratch` + `COPY . /app` Dockerfile
//! (in its own directory, so it is not part of the context), builds it once
//! into a fresh state directory, then times:
//!
//! - `kiln build` with nothing changed (no `--output`: the solve runs, every
//!   step is a cache hit, nothing is exported), the whole process as a user
//!   sees it;
//! - a bare walk of the context: `read_dir` on every directory and an
//!   `lstat` (`symlink_metadata`) of every entry, in this process;
//! - `find DIR -printf '%s\n'` (the same walk in a new process; the `%s`
//!   makes find lstat every entry) and `find DIR -printf ''` (which only
//!   reads directories: find skips the lstat when nothing asks for it).
//!
//! It prints medians, the kiln/walk ratios and the peak RSS of the kiln
//! process (`/usr/bin/time -v`, "Maximum resident set size") for the first
//! build and for a rebuild. Targets from the issue: 100k files no-change
//! rebuild ≤ 2× the stat walk, 1k files ≤ 50 ms, peak RSS ≤ 150 MiB. It only
//! prints; it asserts nothing.
//!
//! ```sh
//! cargo build --release -p kiln -p kiln-bench
//! target/release/large_context                 # 1000 and 100000 files, 7 runs
//! target/release/large_context --files 100000 --runs 11 --keep
//! ```
//!
//! `KILN_BIN` picks the kiln binary (default: `kiln` next to this one);
//! `--dir DIR` puts the scratch trees there (default: a temporary directory
//! under `$TMPDIR`, removed at the end unless `--keep`).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kiln_bench::{median, ms, ratio};

const PER_DIR: usize = 100;

struct Opts {
    sizes: Vec<usize>,
    runs: usize,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        sizes: vec![1_000, 100_000],
        runs: 7,
        dir: None,
        keep: false,
    };
    let mut sizes = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--files" => sizes.push(
                it.next()
                    .context("--files needs a number")?
                    .replace('_', "")
                    .parse()?,
            ),
            "--runs" => o.runs = it.next().context("--runs needs a number")?.parse()?,
            "--dir" => o.dir = Some(it.next().context("--dir needs a path")?.into()),
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!(
                    "usage: large_context [--files N]... [--runs R] [--dir DIR] [--keep]\n\
                     defaults: --files 1000 --files 100000 --runs 7"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !sizes.is_empty() {
        o.sizes = sizes;
    }
    if o.runs == 0 || o.sizes.contains(&0) {
        bail!("--runs and --files must be positive");
    }
    Ok(o)
}

fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("dir").join("kiln")
}

/// `files` small files in directories of `PER_DIR` (the last one may hold fewer).
fn make_context(dir: &Path, files: usize) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let dirs = files.div_ceil(PER_DIR);
    let mut n = 0;
    for d in 0..dirs {
        let sub = dir.join(format!("d{d:04}"));
        fs::create_dir(&sub)?;
        for f in 0..PER_DIR {
            if n == files {
                break;
            }
            let mut fh = fs::File::create(sub.join(format!("f{f:03}.txt")))?;
            writeln!(fh, "file {n} in d{d:04}: {}", (n * 7919) % 10007)?;
            n += 1;
        }
    }
    Ok(())
}

/// readdir + lstat of every entry; returns the number of entries seen.
fn stat_walk(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            let md = fs::symlink_metadata(&p).expect("lstat");
            n += 1;
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    n
}

/// Sorted wall times of `runs` runs of a command, its stdout discarded.
fn time_runs(runs: usize, mk: impl Fn() -> Command) -> Vec<Duration> {
    sorted(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let st = mk().stdout(Stdio::null()).status().expect("spawn find");
                assert!(st.success(), "find failed");
                t.elapsed()
            })
            .collect(),
    )
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn range(v: &[Duration]) -> String {
    format!(
        "{} ({}–{})",
        ms(median(v)),
        ms(v[0]).trim_end_matches(" ms"),
        ms(v[v.len() - 1]).trim_end_matches(" ms")
    )
}

struct Case<'a> {
    kiln: &'a Path,
    ctx: PathBuf,
    dockerfile: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Case<'_> {
    fn build_cmd(&self) -> Command {
        let mut c = Command::new(self.kiln);
        c.arg("build")
            .args(["--frontend", "dockerfile.v0"])
            .arg("--local")
            .arg(format!("context={}", self.ctx.display()))
            .arg("--local")
            .arg(format!("dockerfile={}", self.dockerfile.display()))
            .args(["--progress", "plain"])
            .arg("--root")
            .arg(&self.root);
        c
    }

    /// One build, its wall time; output goes to the log file.
    fn build(&self) -> anyhow::Result<Duration> {
        let log = fs::File::create(&self.log)?;
        let t = Instant::now();
        let st = self
            .build_cmd()
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {}", self.kiln.display()))?;
        let el = t.elapsed();
        if !st.success() {
            bail!("kiln build failed ({st}); see {}", self.log.display());
        }
        Ok(el)
    }

    /// One build under `/usr/bin/time -v`; its peak RSS in KiB.
    fn build_rss(&self) -> anyhow::Result<Option<u64>> {
        let time = Path::new("/usr/bin/time");
        if !time.exists() {
            return Ok(None);
        }
        let report = self.log.with_extension("time");
        let inner = self.build_cmd();
        let log = fs::File::create(&self.log)?;
        let st = Command::new(time)
            .arg("-v")
            .arg("-o")
            .arg(&report)
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .status()?;
        if !st.success() {
            bail!(
                "kiln build under time -v failed ({st}); see {}",
                self.log.display()
            );
        }
        let text = fs::read_to_string(&report)?;
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok()))
    }
}

fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "n/a (no /usr/bin/time)".into(),
    }
}

fn run_case(kiln: &Path, base: &Path, files: usize, runs: usize) -> anyhow::Result<()> {
    let dir = base.join(format!("files-{files}"));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let case = Case {
        kiln,
        ctx: dir.join("context"),
        dockerfile: dir.join("dockerfile"),
        root: dir.join("root"),
        log: dir.join("build.log"),
    };
    let t = Instant::now();
    make_context(&case.ctx, files)?;
    let made = t.elapsed();
    fs::create_dir_all(&case.dockerfile)?;
    fs::write(
        case.dockerfile.join("Dockerfile"),
        "FROM scratch\nCOPY . /app\n",
    )?;

    // Fill the frontend's compiled-artifact cache first, so the first build
    // below measures the context, not the component compiler.
    let warmup_ctx = dir.join("warmup");
    fs::create_dir_all(&warmup_ctx)?;
    fs::write(warmup_ctx.join("x"), "x\n")?;
    Case {
        ctx: warmup_ctx.clone(),
        log: dir.join("warmup.log"),
        ..case.clone_paths()
    }
    .build()?;

    let first_rss = case.build_rss()?;
    // the build above filled the cache; time a first build again in a fresh
    // state (frontend cache kept) for the record
    let first = {
        let fresh = Case {
            root: dir.join("root-first"),
            log: dir.join("first.log"),
            ..case.clone_paths()
        };
        copy_frontend_cache(&case.root, &fresh.root)?;
        // left in place: deleting 100k files takes minutes on some disks;
        // the whole scratch tree goes at the end unless --dir/--keep
        fresh.build()?
    };

    let rebuild = sorted(
        (0..runs)
            .map(|_| case.build())
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let rebuild_rss = case.build_rss()?;
    let mut entries = 0;
    let walk = sorted(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                entries = stat_walk(&case.ctx);
                t.elapsed()
            })
            .collect(),
    );
    let find_cmd = |fmt: &str| {
        let mut c = Command::new("find");
        c.arg(&case.ctx).args(["-printf", fmt]);
        c
    };
    // `%s` needs an lstat of every entry; with an empty format find only
    // reads directories (it stats nothing but the directories it enters).
    let find_stat = time_runs(runs, || find_cmd("%s\n"));
    let find_readdir = time_runs(runs, || find_cmd(""));

    let r = median(&rebuild);
    let line = |what: &str, value: String| println!("  {what:<50} {value}");
    println!(
        "context: {files} files in {} dirs ({entries} entries; written in {})",
        files.div_ceil(PER_DIR),
        ms(made)
    );
    line("first build (empty state but the frontend)", ms(first));
    line(&format!("no-change rebuild, n={runs}"), range(&rebuild));
    line(
        "stat walk (readdir + lstat, in-process)",
        format!("{}   kiln/walk {}", range(&walk), ratio(r, median(&walk))),
    );
    line(
        "find DIR -printf '%s\\n' (lstat all, new process)",
        format!(
            "{}   kiln/find {}",
            range(&find_stat),
            ratio(r, median(&find_stat))
        ),
    );
    line(
        "find DIR -printf '' (readdir only, new process)",
        format!(
            "{}   kiln/find {}",
            range(&find_readdir),
            ratio(r, median(&find_readdir))
        ),
    );
    line("peak RSS of kiln, first build", mib(first_rss));
    line("peak RSS of kiln, no-change rebuild", mib(rebuild_rss));
    if files >= 100_000 {
        line(
            "target",
            "rebuild ≤ 2.00x the stat walk; peak RSS ≤ 150 MiB".into(),
        );
    } else if files <= 1_000 {
        line("target", "rebuild ≤ 50 ms; peak RSS ≤ 150 MiB".into());
    }
    Ok(())
}

impl Case<'_> {
    fn clone_paths(&self) -> Self {
        Case {
            kiln: self.kiln,
            ctx: self.ctx.clone(),
            dockerfile: self.dockerfile.clone(),
            root: self.root.clone(),
            log: self.log.clone(),
        }
    }
}

/// Copy `<root>/frontends` (the compiled-artifact cache) into a new root.
fn copy_frontend_cache(from: &Path, to: &Path) -> anyhow::Result<()> {
    let src = from.join("frontends");
    if !src.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(to)?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(to.join("frontends"))
        .status()?;
    if !st.success() {
        bail!("copying {}", src.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let kiln = kiln_bin();
    if !kiln.exists() {
        bail!(
            "no kiln binary at {} (cargo build --release -p kiln, or set KILN_BIN)",
            kiln.display()
        );
    }
    let tmp = match &o.dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            None
        }
        None => Some(
            tempfile::Builder::new()
                .prefix("kiln-large-ctx")
                .tempdir()?,
        ),
    };
    let base = match (&o.dir, &tmp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!(),
    };
    let version = Command::new(&kiln).arg("--version").output()?;
    println!(
        "{} ({}), {} cores",
        String::from_utf8_lossy(&version.stdout).trim(),
        kiln.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &files in &o.sizes {
        run_case(&kiln, &base, files, o.runs)?;
    }
    if o.keep {
        println!("kept {}", base.display());
        std::mem::forget(tmp);
    }
    Ok(())
}
