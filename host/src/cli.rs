//! The command line, in buildctl's words.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::control::{Controller, OutputSpec, SolveRequest};
use crate::frontend::FrontendLimits;
use kiln_engine::cache::CacheSpec;

/// kiln builds container images from Dockerfiles, buildpacks apps or any
/// LLB, with frontends that are WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    /// State directory (default: /var/lib/kiln as root, else ~/.local/share/kiln).
    #[arg(long, global = true, env = "KILN_ROOT")]
    pub root: Option<PathBuf>,

    /// OCI runtime for RUN steps: `runc` (default), or crun/youki on
    /// cgroup-v2 hosts; a name in PATH or a path.
    #[arg(long, global = true, env = "KILN_OCI_RUNTIME", value_name = "PATH")]
    pub oci_runtime: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Build, like `buildctl build`.
    Build(BuildArgs),
    /// Show disk usage of the build cache.
    Du(DuArgs),
    /// Remove build cache.
    Prune(PruneArgs),
    /// Debugging tools.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Publish and inspect frontends.
    #[command(subcommand)]
    Frontend(FrontendCommand),
    /// Run kiln as a daemon serving many clients.
    Daemon(crate::daemon::DaemonArgs),
}

/// `kiln build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Frontend: `dockerfile.v0`, `buildpacks.v0`, `gateway.v0` (with
    /// `--opt source=FILE`) or a path to a .wasm component. Without it,
    /// an LLB definition is read from stdin.
    #[arg(long)]
    pub frontend: Option<String>,
    /// Frontend option `key=value` (repeatable), e.g. `filename=Dockerfile`,
    /// `target=stage`, `build-arg:FOO=bar`.
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// Local directory `name=dir` (repeatable), e.g. `context=.`, `dockerfile=.`.
    #[arg(long = "local", value_name = "NAME=DIR")]
    pub locals: Vec<String>,
    /// Output `type=oci|docker|local|tar|image|llb,dest=…,name=…` (repeatable).
    #[arg(long = "output", short = 'o', value_name = "type=TYPE,KEY=VALUE")]
    pub outputs: Vec<String>,
    /// Progress output: auto, plain, tty or rawjson.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Secret `id=ID,src=FILE` or `id=ID,env=VAR` (repeatable).
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,
    /// OCI layout directory `NAME=DIR` (repeatable), for
    /// `--opt context:X=oci-layout://NAME@sha256:…` and `oci-layout://` sources.
    #[arg(long = "oci-layout", value_name = "NAME=DIR")]
    pub oci_layouts: Vec<String>,
    /// SSH agent socket `default` or `ID=PATH` (repeatable).
    #[arg(long = "ssh", value_name = "default|ID=PATH")]
    pub ssh: Vec<String>,
    /// Export build cache `type=local|registry|inline,…` (repeatable).
    #[arg(long = "export-cache", value_name = "type=TYPE,KEY=VALUE")]
    pub export_cache: Vec<String>,
    /// Import build cache `type=local|registry,…` (repeatable).
    #[arg(long = "import-cache", value_name = "type=TYPE,KEY=VALUE")]
    pub import_cache: Vec<String>,
    /// Do not use the cache for any step.
    #[arg(long)]
    pub no_cache: bool,
    /// Explain, for each step that missed the cache, why.
    #[arg(long)]
    pub explain_cache: bool,
    /// CPU time a frontend may spend, in seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub frontend_timeout: f64,
    /// Memory a frontend may use, in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub frontend_memory: u64,
    /// Number of solve calls a frontend may make.
    #[arg(long, default_value_t = 10_000)]
    pub frontend_max_solves: u64,
    /// Size of a frontend's result or of one solved definition, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub frontend_max_result: u64,
    /// Bytes of log a frontend may write, in KiB.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    pub frontend_max_log: u64,
    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
}

/// `kiln du`.
#[derive(Args, Debug)]
pub struct DuArgs {
    /// Show every record in detail.
    #[arg(long, short)]
    pub verbose: bool,
    /// Only records matching `key==value`, `key!=value` or `key~=regex`
    /// (keys: id, type, description, inuse, reclaimable).
    #[arg(long, short)]
    pub filter: Vec<String>,
    /// `json`: print the records as a JSON array.
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
}

/// `kiln prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove cache mounts too, and every record whatever its age.
    #[arg(long)]
    pub all: bool,
    /// Keep records used within this duration (e.g. `48h`).
    #[arg(long)]
    pub keep_duration: Option<String>,
    /// Keep at most this much cache (e.g. `10GB`; plain numbers are MB, as
    /// in buildctl).
    #[arg(long, visible_alias = "max-used-space")]
    pub keep_storage: Option<String>,
    /// Never prune the cache below this size.
    #[arg(long, visible_alias = "keep-storage-min")]
    pub reserved_space: Option<String>,
    /// Prune until the disk has this much free.
    #[arg(long, visible_alias = "free-storage")]
    pub min_free_space: Option<String>,
    /// Only records matching `key==value`, `key!=value` or `key~=regex`
    /// (keys: id, type, description, inuse, reclaimable).
    #[arg(long, short)]
    pub filter: Vec<String>,
    /// Show every removed record in detail.
    #[arg(long, short)]
    pub verbose: bool,
    /// `json`: print the removed records as a JSON array.
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
}

/// `kiln frontend …`.
#[derive(Subcommand, Debug)]
pub enum FrontendCommand {
    /// Publish a frontend component to a registry as an OCI artifact.
    Push {
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: PathBuf,
        /// Where to push it, e.g. `registry.example.com/frontends/hello:1`.
        reference: String,
    },
}

/// `kiln debug …`.
#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print an LLB definition (from FILE or stdin) as JSON lines, like
    /// `buildctl debug dump-llb`.
    DumpLlb {
        /// A file holding a marshaled `pb.Definition`; stdin when absent.
        file: Option<PathBuf>,
        /// Print a Graphviz graph instead.
        #[arg(long)]
        dot: bool,
    },
    /// Version, state directory, executor and GC policy (of the daemon,
    /// with `--addr`).
    Info(crate::remote::RemoteArgs),
}

/// Split `a=b,c="d,e"` into pairs, the way buildctl reads its CSV flags.
pub fn parse_kv_csv(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        bail!("unterminated quote in {s:?}");
    }
    fields.push(cur);
    fields
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => Ok((f.trim().to_string(), String::new())),
        })
        .collect()
}

fn parse_output(s: &str) -> anyhow::Result<OutputSpec> {
    let mut kind = None;
    let mut attrs = BTreeMap::new();
    for (k, v) in parse_kv_csv(s)? {
        if k == "type" {
            kind = Some(v);
        } else {
            attrs.insert(k, v);
        }
    }
    let kind = kind.with_context(|| format!("--output {s:?} has no type="))?;
    match kind.as_str() {
        "oci" | "docker" | "local" | "tar" | "image" | "llb" => {}
        "registry" => {
            attrs.insert("push".into(), "true".into());
            return Ok(OutputSpec {
                kind: "image".into(),
                attrs,
            });
        }
        other => bail!(
            "--output type={other} is not an exporter kiln knows: use oci, docker, local, tar, \
             image (or registry) or llb"
        ),
    }
    Ok(OutputSpec { kind, attrs })
}

fn parse_secret(s: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let kv: BTreeMap<String, String> = parse_kv_csv(s)?.into_iter().collect();
    let id = kv
        .get("id")
        .cloned()
        .with_context(|| format!("--secret {s:?} has no id="))?;
    if let Some(src) = kv.get("src").or_else(|| kv.get("source")) {
        let data = std::fs::read(src).with_context(|| format!("reading secret {id} from {src}"))?;
        return Ok((id, data));
    }
    if let Some(var) = kv.get("env") {
        let v = std::env::var_os(var)
            .with_context(|| format!("secret {id}: environment variable {var} is not set"))?;
        return Ok((id, v.into_encoded_bytes()));
    }
    // buildctl: with neither, `id` names both the env var and the file.
    if let Some(v) = std::env::var_os(&id) {
        return Ok((id, v.into_encoded_bytes()));
    }
    bail!("--secret {s:?} needs src=FILE or env=VAR")
}

fn parse_ssh(s: &str) -> anyhow::Result<(String, PathBuf)> {
    let (id, path) = match s.split_once('=') {
        Some((id, p)) => (id.to_string(), PathBuf::from(p)),
        None => {
            let sock = std::env::var_os("SSH_AUTH_SOCK").with_context(|| {
                format!("--ssh {s}: no socket path given and SSH_AUTH_SOCK is not set")
            })?;
            (s.to_string(), PathBuf::from(sock))
        }
    };
    Ok((id, path))
}

fn default_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/kiln");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("kiln"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/kiln"),
    }
}

/// Run the CLI; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let root = cli.root.clone().unwrap_or_else(default_root);
    // Everything below (runc bundles, overlay mounts) wants an absolute path.
    let root = if root.is_absolute() {
        root
    } else {
        std::env::current_dir()
            .context("finding the current directory")?
            .join(root)
    };
    if let Some(remote) = crate::remote::target(&cli.command) {
        return crate::remote::run(remote, cli.command);
    }
    match cli.command {
        Command::Debug(DebugCommand::DumpLlb { file, dot }) => dump_llb(file, dot),
        Command::Debug(DebugCommand::Info(_)) => info(root, cli.oci_runtime),
        Command::Build(args) => build(root, cli.oci_runtime, args),
        Command::Frontend(FrontendCommand::Push { file, reference }) => {
            frontend_push(root, file, reference)
        }
        Command::Du(a) => du(root, a),
        Command::Prune(a) => prune(root, a),
        Command::Daemon(args) => crate::daemon::run(root, cli.oci_runtime, args),
    }
}

/// `kiln debug info`, embedded.
fn info(root: PathBuf, oci_runtime: Option<PathBuf>) -> anyhow::Result<()> {
    let ctl = Controller::open(root, oci_runtime)?;
    print_info(&crate::daemon::info_of(&ctl, None, 0));
    Ok(())
}

/// Prints `kiln debug info`'s fields.
pub(crate) fn print_info(i: &crate::daemon::proto::InfoResponse) {
    println!("Version:\t{}", i.version);
    println!("Root:\t\t{}", i.root);
    println!("Executor:\t{}", i.executor);
    println!("GC policy:\t{}", i.gc_policy);
    if !i.addr.is_empty() {
        println!("Daemon:\t\t{}", i.addr);
        println!("Builds:\t\t{}", i.active_builds);
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[i])
    }
}

fn ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let d = now.saturating_sub(secs);
    match d {
        0..=59 => format!("{d} seconds ago"),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// A size for `prune`: plain numbers are MB (1e6 bytes), as in buildctl;
/// otherwise `10GB`, `512MiB`, `20%` of the disk.
pub(crate) fn parse_prune_size(s: &str, root: &std::path::Path) -> anyhow::Result<u64> {
    let s = s.trim();
    if let Ok(mb) = s.parse::<f64>() {
        return Ok((mb * 1e6) as u64);
    }
    let disk = kiln_engine::gc::disk_size(root);
    kiln_engine::gc::policy::parse_size(s, disk)
}

fn open_engine(root: &std::path::Path) -> anyhow::Result<std::sync::Arc<kiln_engine::Engine>> {
    kiln_engine::Engine::open(root, kiln_engine::EngineConfig::default())
        .with_context(|| format!("opening the state directory {}", root.display()))
}

fn records_json(rows: &[kiln_engine::UsageRecord]) -> String {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "type": r.kind,
                "size": r.size,
                "reclaimable": r.reclaimable(),
                "inUse": r.in_use,
                "createdAt": r.created,
                "lastUsedAt": r.last_used,
                "usageCount": r.usage_count,
                "description": r.description,
                "snapshots": r.snapshots,
            })
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn check_format(f: &Option<String>) -> anyhow::Result<bool> {
    match f.as_deref() {
        None => Ok(false),
        Some("json") => Ok(true),
        Some(other) => bail!("--format {other:?}: kiln prints table (default) or json"),
    }
}

fn print_record_verbose(r: &kiln_engine::UsageRecord) {
    println!("ID:\t\t{}", r.id);
    if !r.snapshots.is_empty() {
        println!("Snapshots:\t{}", r.snapshots.join(";"));
    }
    if r.created > 0 {
        println!("Created at:\t{}", ago(r.created));
    }
    println!("Reclaimable:\t{}", r.reclaimable());
    println!("In use:\t\t{}", r.in_use);
    println!("Size:\t\t{}", human_bytes(r.size));
    println!("Description:\t{}", r.description);
    println!("Usage count:\t{}", r.usage_count);
    if r.last_used > 0 {
        println!("Last used:\t{}", ago(r.last_used));
    }
    println!("Type:\t\t{}", r.kind);
    println!();
}

fn print_table_header() {
    println!(
        "{:<72} {:<12} {:<10} {:<16} LAST ACCESSED",
        "ID", "RECLAIMABLE", "SIZE", "TYPE"
    );
}

fn print_table_row(r: &kiln_engine::UsageRecord) {
    println!(
        "{:<72} {:<12} {:<10} {:<16} {}",
        r.id,
        r.reclaimable(),
        human_bytes(r.size),
        r.kind,
        if r.last_used > 0 {
            ago(r.last_used)
        } else {
            String::new()
        }
    );
}

fn du(root: PathBuf, a: DuArgs) -> anyhow::Result<()> {
    // Bad flags fail before the state dir is opened.
    kiln_engine::gc::Filter::parse_all(&a.filter)?;
    check_format(&a.format)?;
    let engine = open_engine(&root)?;
    print_du(engine.du()?, &a)
}

/// Prints `kiln du`'s records (filtered, as a table, verbose or JSON).
pub(crate) fn print_du(
    mut records: Vec<kiln_engine::UsageRecord>,
    a: &DuArgs,
) -> anyhow::Result<()> {
    let filters = kiln_engine::gc::Filter::parse_all(&a.filter)?;
    let json = check_format(&a.format)?;
    records.retain(|r| filters.iter().all(|f| f.matches(r)));
    records.sort_by(|x, y| y.size.cmp(&x.size).then(x.id.cmp(&y.id)));
    if json {
        println!("{}", records_json(&records));
        return Ok(());
    }
    let total: u64 = records.iter().map(|r| r.size).sum();
    let reclaimable: u64 = records
        .iter()
        .filter(|r| r.reclaimable())
        .map(|r| r.size)
        .sum();
    if a.verbose {
        records.iter().for_each(print_record_verbose);
    } else {
        print_table_header();
        records.iter().for_each(print_table_row);
    }
    println!("Reclaimable:\t{}", human_bytes(reclaimable));
    println!("Total:\t\t{}", human_bytes(total));
    Ok(())
}

fn prune(root: PathBuf, a: PruneArgs) -> anyhow::Result<()> {
    check_format(&a.format)?;
    let engine = open_engine(&root)?;
    let opts = prune_options(&a, &root)?;
    print_pruned(&engine.prune(&opts)?, &a)
}

/// `kiln prune`'s flags as options; sizes in `%` are of `root`'s disk.
pub(crate) fn prune_options(
    a: &PruneArgs,
    root: &std::path::Path,
) -> anyhow::Result<kiln_engine::gc::PruneOptions> {
    let size = |s: &Option<String>| s.as_deref().map(|v| parse_prune_size(v, root)).transpose();
    Ok(kiln_engine::gc::PruneOptions {
        keep_duration: a
            .keep_duration
            .as_deref()
            .map(kiln_engine::gc::policy::parse_duration)
            .transpose()?,
        keep_bytes: size(&a.keep_storage)?,
        reserved_bytes: size(&a.reserved_space)?,
        min_free_bytes: size(&a.min_free_space)?,
        all: a.all,
        filters: kiln_engine::gc::Filter::parse_all(&a.filter)?,
    })
}

/// Prints what `kiln prune` removed.
pub(crate) fn print_pruned(
    removed: &[kiln_engine::UsageRecord],
    a: &PruneArgs,
) -> anyhow::Result<()> {
    let json = check_format(&a.format)?;
    let freed: u64 = removed.iter().map(|r| r.size).sum();
    if json {
        println!("{}", records_json(removed));
        return Ok(());
    }
    if a.verbose {
        removed.iter().for_each(print_record_verbose);
    } else {
        print_table_header();
        removed.iter().for_each(print_table_row);
    }
    println!("Total:\t{}", human_bytes(freed));
    Ok(())
}

fn frontend_push(root: PathBuf, file: PathBuf, reference: String) -> anyhow::Result<()> {
    let wasm = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    // Refuse what kiln itself could not load.
    let rt = crate::frontend::FrontendRuntime::new(None)?;
    rt.load(&wasm)
        .with_context(|| format!("{} is not a loadable frontend", file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let digest = runtime.block_on(async {
        let store = kiln_store::ContentStore::new(&root)?;
        let registry = kiln_runtime::registry::RegistryClient::default();
        crate::frontend::artifact::push(&registry, &store, &wasm, &reference).await
    })?;
    println!("{reference}@{digest}");
    Ok(())
}

fn read_input(file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(f) => std::fs::read(&f).with_context(|| format!("reading {}", f.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            Ok(buf)
        }
    }
}

fn dump_llb(file: Option<PathBuf>, dot: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let bytes = read_input(file)?;
    let def = kiln_llb::Definition::decode(&bytes).context("reading the LLB definition")?;
    let text = if dot {
        kiln_llb::dump::dump_dot(&def)
    } else {
        kiln_llb::dump::dump_json_lines(&def)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// An `--export-cache` entry, checked before the build starts.
fn parse_cache_export(s: &str) -> anyhow::Result<CacheSpec> {
    let spec = CacheSpec::parse(s)?;
    let need = match spec.kind.as_str() {
        "local" => "dest",
        "registry" => "ref",
        _ => return Ok(spec),
    };
    kiln_engine::cache::CacheExportOptions::from_spec(&spec)?;
    if !spec.attrs.contains_key(need) {
        bail!("type={} needs {need}=", spec.kind);
    }
    Ok(spec)
}

fn build(root: PathBuf, oci_runtime: Option<PathBuf>, a: BuildArgs) -> anyhow::Result<()> {
    let req = solve_request(a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let ctl = Controller::open(root, oci_runtime)?;
        ctl.solve(req).await
    })
}

/// Turns `kiln build`'s flags into a [`SolveRequest`] (reading secrets,
/// and the definition from stdin when there is no frontend).
pub(crate) fn solve_request(a: BuildArgs) -> anyhow::Result<SolveRequest> {
    let mut export_cache = Vec::new();
    for s in &a.export_cache {
        export_cache.push(parse_cache_export(s).with_context(|| format!("--export-cache {s}"))?);
    }
    let import_cache = a
        .import_cache
        .iter()
        .map(|s| CacheSpec::parse(s).with_context(|| format!("--import-cache {s}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut frontend_opts = BTreeMap::new();
    for o in &a.opts {
        let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
        frontend_opts.insert(k.to_string(), v.to_string());
    }
    let mut locals = BTreeMap::new();
    for l in &a.locals {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--local {l:?} must be NAME=DIR"))?;
        // `--local context=URL` builds from a git repository or an http(s)
        // resource, as `docker build URL` does: the frontend's `context`.
        if k == "context" && (v.contains("://") || v.starts_with("git@")) {
            frontend_opts
                .entry("context".to_string())
                .or_insert_with(|| v.to_string());
            continue;
        }
        let dir = PathBuf::from(v);
        if !dir.is_dir() {
            bail!("--local {k}={v}: {v} is not a directory");
        }
        locals.insert(k.to_string(), std::fs::canonicalize(&dir)?);
    }
    let outputs = a
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secrets = a
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let ssh = a
        .ssh
        .iter()
        .map(|s| parse_ssh(s))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let mut oci_layouts = BTreeMap::new();
    for l in &a.oci_layouts {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--oci-layout {l:?} must be NAME=DIR"))?;
        let dir = PathBuf::from(v);
        if !dir.join("index.json").is_file() {
            bail!("--oci-layout {k}={v}: {v} is not an OCI layout (no index.json)");
        }
        oci_layouts.insert(k.to_string(), std::fs::canonicalize(&dir)?);
    }
    let definition = if a.frontend.is_none() {
        Some(read_input(None)?)
    } else {
        None
    };
    let limits = FrontendLimits {
        timeout: Duration::from_secs_f64(a.frontend_timeout.max(0.001)),
        max_memory_bytes: a.frontend_memory << 20,
        max_solves: a.frontend_max_solves,
        max_result_bytes: a.frontend_max_result << 20,
        max_log_bytes: a.frontend_max_log << 10,
        ..FrontendLimits::default()
    };
    let progress = match a.progress.as_str() {
        "auto" => {
            use std::io::IsTerminal as _;
            if std::io::stderr().is_terminal() {
                "tty"
            } else {
                "plain"
            }
            .to_string()
        }
        "plain" | "tty" | "rawjson" | "quiet" => a.progress.clone(),
        other => bail!("--progress {other}: use auto, plain, tty or rawjson"),
    };
    let req = SolveRequest {
        frontend: a.frontend,
        frontend_opts,
        definition,
        locals,
        outputs,
        secrets,
        secret_source: None,
        ssh,
        oci_layouts,
        no_cache: a.no_cache,
        explain_cache: a.explain_cache,
        progress,
        limits,
        export_cache,
        import_cache,
        frontend_component: None,
    };
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        let kv = parse_kv_csv(r#"type=oci,dest=a.tar,name="x,y""#).unwrap();
        assert_eq!(kv[2], ("name".to_string(), "x,y".to_string()));
        assert!(parse_kv_csv(r#"a="b"#).is_err());
    }

    #[test]
    fn outputs() {
        let o = parse_output("type=local,dest=out").unwrap();
        assert_eq!(o.kind, "local");
        assert_eq!(o.attrs["dest"], "out");
        assert!(parse_output("dest=x").is_err());
        let e = parse_output("type=zip").unwrap_err().to_string();
        assert!(e.contains("type=zip"), "{e}");
    }
}
