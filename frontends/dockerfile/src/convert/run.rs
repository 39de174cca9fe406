//! `RUN`: shell and exec form, heredocs, `--mount`, `--network`,
//! `--security`.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{
    self, ChownOpt, Exec, MkdirOptions, MkfileOptions, Mount, OpOptions, SecretMount, SshMount,
    State,
};
use kiln_frontend::llb::pb;

use super::dockerignore::clean;
use super::flags;
use super::from;
use super::stages::{self, StageRun, run_display_name};
use super::{Ctx, args};
use crate::parser::{Node, chomp_heredoc_content, parse_heredoc};
use crate::shell;

/// One `--mount` value.
#[derive(Debug, Default, Clone)]
struct MountSpec {
    kind: String,
    from: Option<String>,
    source: Option<String>,
    target: Option<String>,
    readonly: Option<bool>,
    id: Option<String>,
    sharing: Option<String>,
    required: bool,
    size: Option<i64>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    env: Option<String>,
}

/// Splits a CSV line; double quotes group text (commas included) and are
/// removed, `""` inside quotes is a literal quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            ',' => out.push(std::mem::take(&mut cur)),
            '"' => quoted = true,
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Docker's `RAMInBytes`: `64m`, `1g`, `512k`, `100`.
fn ram_in_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let body = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult): (&str, i64) = match body.chars().last()? {
        'k' => (&body[..body.len() - 1], 1 << 10),
        'm' => (&body[..body.len() - 1], 1 << 20),
        'g' => (&body[..body.len() - 1], 1 << 30),
        't' => (&body[..body.len() - 1], 1 << 40),
        'p' => (&body[..body.len() - 1], 1 << 50),
        _ => (body, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    if !(0.0..=9.0e18).contains(&n) {
        return None;
    }
    Some((n * mult as f64) as i64)
}

fn parse_mount(
    raw: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<MountSpec, String> {
    let mut m = MountSpec {
        kind: "bind".into(),
        ..Default::default()
    };
    let fields = csv_fields(raw)?;
    // The type decides the defaults, so read it first.
    for f in &fields {
        if let Some((k, v)) = f.split_once('=')
            && k.trim().eq_ignore_ascii_case("type")
        {
            m.kind = v.trim().to_ascii_lowercase();
        }
    }
    if !matches!(
        m.kind.as_str(),
        "bind" | "cache" | "tmpfs" | "secret" | "ssh"
    ) {
        return Err(format!("unsupported mount type {:?}", m.kind));
    }
    for f in fields {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        let (key, value) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (f.to_ascii_lowercase(), None),
        };
        let need = |v: &Option<String>| {
            v.clone()
                .ok_or_else(|| format!("invalid field '{f}' must be a key=value pair"))
        };
        match key.as_str() {
            "type" => {}
            "readonly" | "ro" => {
                let v = value.as_deref().unwrap_or("");
                m.readonly =
                    Some(parse_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"))?);
            }
            "readwrite" | "rw" => {
                let v = value.as_deref().unwrap_or("");
                m.readonly =
                    Some(!parse_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"))?);
            }
            "required" => {
                if !matches!(m.kind.as_str(), "secret" | "ssh") {
                    return Err(format!("unexpected key '{key}' for mount type {}", m.kind));
                }
                let v = value.as_deref().unwrap_or("");
                m.required =
                    parse_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"))?;
            }
            "from" => {
                let v = need(&value)?;
                if v.contains('$') && !v.ends_with('$') {
                    return Err(format!(
                        "'from' doesn't support variable expansion, define alias stage instead: {v}"
                    ));
                }
                m.from = Some(v);
            }
            _ => {
                let v = expand(&need(&value)?)?;
                match key.as_str() {
                    "source" | "src" => m.source = Some(v),
                    "target" | "dst" | "destination" => m.target = Some(v),
                    "id" => m.id = Some(v),
                    "sharing" => {
                        if m.kind != "cache" {
                            return Err(format!(
                                "unexpected key '{key}' for mount type {}",
                                m.kind
                            ));
                        }
                        let s = v.to_ascii_lowercase();
                        if !matches!(s.as_str(), "shared" | "private" | "locked") {
                            return Err(format!("unsupported sharing value {v:?}"));
                        }
                        m.sharing = Some(s);
                    }
                    "size" => {
                        if m.kind != "tmpfs" {
                            return Err(format!(
                                "unexpected key '{key}' for mount type {}",
                                m.kind
                            ));
                        }
                        m.size =
                            Some(ram_in_bytes(&v).ok_or_else(|| format!("invalid size {v:?}"))?);
                    }
                    "mode" | "uid" | "gid" => {
                        if !matches!(m.kind.as_str(), "secret" | "ssh" | "cache") {
                            return Err(format!(
                                "unexpected key '{key}' for mount type {}",
                                m.kind
                            ));
                        }
                        if key == "mode" {
                            m.mode = Some(
                                u32::from_str_radix(&v, 8)
                                    .map_err(|_| format!("invalid mode {v:?}"))?,
                            );
                        } else {
                            let n: u32 = v.parse().map_err(|_| format!("invalid {key} {v:?}"))?;
                            if key == "uid" {
                                m.uid = Some(n);
                            } else {
                                m.gid = Some(n);
                            }
                        }
                    }
                    "env" => {
                        if m.kind != "secret" {
                            return Err(format!(
                                "unexpected key '{key}' for mount type {}",
                                m.kind
                            ));
                        }
                        m.env = Some(v);
                    }
                    _ => return Err(format!("unexpected key '{key}' in '{f}'")),
                }
            }
        }
    }
    match m.kind.as_str() {
        "bind" | "cache" | "tmpfs" if m.target.as_deref().unwrap_or("").is_empty() => {
            return Err(format!("mount type {} requires a target", m.kind));
        }
        "secret" if m.id.is_none() && m.target.is_none() && m.env.is_none() => {
            return Err("secret mount requires an id or a target".into());
        }
        _ => {}
    }
    if m.from.is_some() && !matches!(m.kind.as_str(), "bind" | "cache") {
        return Err(format!("'from' is not supported for mount type {}", m.kind));
    }
    Ok(m)
}

/// Heredoc summary for progress names: the first line, `...` when more.
fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim().replace("\r\n", "\n");
    match doc.split_once('\n') {
        Some((first, _)) => format!("{first}..."),
        None => doc,
    }
}

/// `|2 A=1 B=2 /bin/sh -c …`: the history form of a RUN.
fn run_command_string(args: &[String], build_args: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

pub(crate) fn dispatch(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
) -> Result<(), FrontendError> {
    let f = flags::parse(&node.flags, stages::flag_defs("run")).map_err(|e| ctx.err.at(node, e))?;
    if !f.many("device").is_empty() {
        return Err(ctx.err.at(node, "RUN --device is not supported"));
    }
    if node.args.is_empty() || (!node.json && node.args.iter().all(|a| a.trim().is_empty())) {
        return Err(ctx.err.at(node, "RUN requires at least one argument"));
    }
    let mut args: Vec<String> = node.args.clone();
    let mut script_mount: Option<State> = None;
    let mut custom = node.original.trim().to_string();
    if !node.heredocs.is_empty() && !node.json {
        let first = &node.heredocs[0];
        let whole = parse_heredoc(args[0].trim()).ok().flatten();
        if whole.is_some() && node.heredocs.len() == 1 {
            let data = if first.chomp {
                chomp_heredoc_content(&first.content)
            } else {
                first.content.clone()
            };
            if data.starts_with("#!") {
                let c = builder::Constraints::default()
                    .custom_name("[internal] preparing inline document")
                    .platform(run.platform.clone());
                let file = builder::mkfile(
                    first.name.clone(),
                    0o755,
                    data.into_bytes(),
                    MkfileOptions::default(),
                );
                script_mount = Some(State::scratch().file_with(file, c));
                args = vec![format!("/dev/pipes/{}", first.name)];
            } else {
                args = vec![data];
            }
            custom = format!("{custom} ({})", summarize_heredoc(&first.content));
        } else {
            let mut full = args[0].clone();
            for doc in &node.heredocs {
                full.push('\n');
                full.push_str(&doc.content);
                full.push_str(&doc.name);
            }
            args = vec![full];
        }
    }
    let argv = super::meta::with_shell(run, node, &args);

    let mut vars = run.vars();
    let esc = ctx.ast.escape;
    let mut mounts = Vec::new();
    {
        let expand = |w: &str| shell::process_word(w, &vars, esc).map_err(|e| e.to_string());
        for raw in f.many("mount") {
            let m = parse_mount(raw, &expand).map_err(|e| {
                ctx.err
                    .at(node, format!("failed to parse --mount={raw}: {e}"))
            })?;
            mounts.push(m);
        }
    }
    // Variables filled from secrets are masked in the progress name.
    for m in &mounts {
        if let Some(env) = &m.env {
            vars.push((env.clone(), "****".to_string()));
        }
    }
    let name = run_display_name(ctx, &vars, &custom);
    let c = run.constraints(ctx, node, &name);
    let mut exec: Exec = run.state.run(argv.clone()).with_constraints(&c);
    if let Some(st) = &script_mount {
        exec = exec.mount(Mount::bind("/dev/pipes/", st).selector("/").readonly());
    }
    for m in mounts {
        exec = add_mount(ctx, run, node, exec, m)?;
    }

    match f.one("network") {
        None | Some("default") => {}
        Some("none") => exec = exec.network(pb::NetMode::None),
        Some("host") => exec = exec.network(pb::NetMode::Host),
        Some(other) => {
            return Err(ctx
                .err
                .at(node, format!("unsupported network mode {other:?}")));
        }
    }
    match f.one("security") {
        None | Some("sandbox") => {}
        Some("insecure") => exec = exec.security(pb::SecurityMode::Insecure),
        Some(other) => {
            return Err(ctx
                .err
                .at(node, format!("unsupported security mode {other:?}")));
        }
    }
    for (h, ip) in &ctx.opts.extra_hosts {
        exec = exec.extra_host(h.clone(), ip.clone());
    }
    if let Some(h) = &ctx.opts.hostname {
        exec = exec.hostname(h.clone());
    }
    for (n, soft, hard) in &ctx.opts.ulimits {
        exec = exec.ulimit(n.clone(), *soft, *hard);
    }
    if !ctx.opts.cgroup_parent.is_empty() {
        exec = exec.cgroup_parent(ctx.opts.cgroup_parent.clone());
    }
    if let Some(r) = &ctx.opts.linux_resources {
        exec = exec.linux_resources(r.clone());
    }
    if ctx.opts.shm_size > 0 {
        exec = exec.mount(Mount::tmpfs("/dev/shm").size(ctx.opts.shm_size));
    }
    if let Some(p) = args::proxy_env(ctx, run) {
        exec = exec.proxy_env(p);
    }
    let es = exec.build().map_err(|e| ctx.err.at(node, e))?;
    run.state = es.root();
    let env = run.vars();
    let shown_args: Vec<(String, String)> = run
        .args
        .iter()
        .map(|(k, v)| {
            let v = env
                .iter()
                .rev()
                .find(|(e, _)| e == k)
                .map_or(v, |(_, ev)| ev);
            (k.clone(), v.clone())
        })
        .collect();
    let hist = run_command_string(&argv, &shown_args);
    run.image.history(format!("RUN {hist} # buildkit"), false);
    Ok(())
}

fn add_mount(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
    exec: Exec,
    m: MountSpec,
) -> Result<Exec, FrontendError> {
    let dir = run.state.get_dir().to_string();
    let target = m.target.as_deref().map(|t| {
        if t.starts_with('/') {
            clean(t)
        } else {
            clean(&format!("{dir}/{t}"))
        }
    });
    let source_state =
        |ctx: &mut Ctx<'_>, from: &Option<String>| -> Result<Option<State>, FrontendError> {
            match from {
                Some(v) => Ok(Some(from::from_source(ctx, v, node, run.index)?.state)),
                None => Ok(None),
            }
        };
    if target.as_deref() == Some("/") {
        return Err(ctx.err.at(node, "invalid mount target \"/\""));
    }
    let selector = |s: &Option<String>| -> Option<String> {
        s.as_deref()
            .map(|s| clean(&format!("/{s}")))
            .filter(|s| s != "/")
    };
    match m.kind.as_str() {
        "bind" => {
            let target = target.unwrap_or_default();
            let src = match source_state(ctx, &m.from)? {
                Some(s) => s,
                None => ctx.context_state(),
            };
            let mut mount = Mount::bind(target, &src);
            if let Some(sel) = selector(&m.source) {
                mount = mount.selector(sel);
            }
            mount = if m.readonly.unwrap_or(true) {
                mount.readonly()
            } else {
                mount.no_output()
            };
            Ok(exec.mount(mount))
        }
        "cache" => {
            let target = target.unwrap_or_default();
            let id =
                m.id.clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| target.clone());
            let id = if ctx.opts.cache_mount_ns.is_empty() {
                id
            } else {
                format!("{}/{}", ctx.opts.cache_mount_ns, id.trim_start_matches('/'))
            };
            let sharing = match m.sharing.as_deref() {
                Some("private") => pb::CacheSharingOpt::Private,
                Some("locked") => pb::CacheSharingOpt::Locked,
                _ => pb::CacheSharingOpt::Shared,
            };
            let mut mount = Mount::cache(target, id, sharing);
            let mut sel = selector(&m.source);
            let seed = source_state(ctx, &m.from)?;
            if sel.is_none() && (m.mode.is_some() || m.uid.is_some() || m.gid.is_some()) {
                // A fresh cache gets a `/cache` directory with the requested
                // owner and mode (on top of the `from` state, if any).
                let c = builder::Constraints::default()
                    .custom_name("[internal] settings cache mount permissions")
                    .platform(run.platform.clone());
                let st = seed.unwrap_or_else(State::scratch).file_with(
                    builder::mkdir(
                        "/cache",
                        m.mode.unwrap_or(0o755),
                        MkdirOptions {
                            make_parents: false,
                            owner: Some(ChownOpt::ids(m.uid.unwrap_or(0), m.gid.unwrap_or(0))),
                            timestamp: None,
                        },
                    ),
                    c,
                );
                mount = mount.from(&st);
                sel = Some("/cache".to_string());
            } else if let Some(s) = seed {
                mount = mount.from(&s);
            }
            if let Some(s) = sel {
                mount = mount.selector(s);
            }
            if m.readonly == Some(true) {
                mount = mount.readonly();
            }
            Ok(exec.mount(mount))
        }
        "tmpfs" => {
            let mut mount = Mount::tmpfs(target.unwrap_or_default());
            if let Some(size) = m.size {
                mount = mount.size(size);
            }
            Ok(exec.mount(mount))
        }
        "secret" => {
            let raw_target = m.target.clone().filter(|t| !t.is_empty());
            let id = match m
                .source
                .clone()
                .or_else(|| m.id.clone())
                .filter(|s| !s.is_empty())
            {
                Some(id) => id,
                None => match &raw_target {
                    Some(t) => t
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or(t)
                        .to_string(),
                    None => {
                        return Err(ctx
                            .err
                            .at(node, "secret mount: one of source, target required"));
                    }
                },
            };
            let target = raw_target;
            let mut exec = exec;
            if let Some(env) = &m.env {
                exec = exec.secret_env(id.clone(), env.clone(), !m.required);
            }
            if m.env.is_none() || target.is_some() {
                let base = id.rsplit('/').next().unwrap_or(&id).to_string();
                let dest = target.unwrap_or_else(|| format!("/run/secrets/{base}"));
                exec = exec.secret(SecretMount {
                    id,
                    dest,
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    mode: m.mode.unwrap_or(0o400),
                    optional: !m.required,
                });
            }
            Ok(exec)
        }
        "ssh" => Ok(exec.ssh(SshMount {
            id: m
                .id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            dest: target.unwrap_or_default(),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            mode: m.mode.unwrap_or(0o600),
            optional: !m.required,
        })),
        other => Err(ctx
            .err
            .at(node, format!("unsupported mount type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        let id = |s: &str| Ok(s.to_string());
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked,id=x", &id).unwrap();
        assert_eq!(
            (m.kind.as_str(), m.id.as_deref(), m.sharing.as_deref()),
            ("cache", Some("x"), Some("locked"))
        );
        assert!(parse_mount("type=bogus,target=/x", &id).is_err());
        assert!(parse_mount("type=bind", &id).is_err());
        assert!(
            parse_mount("type=tmpfs,target=/t,size=64m", &id)
                .unwrap()
                .size
                == Some(64 << 20)
        );
        assert_eq!(csv_fields("a=\"b,c\",d").unwrap(), vec!["a=b,c", "d"]);
    }
}
