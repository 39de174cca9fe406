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
use crate::instructions::{CacheSharing, MountType, RunMount, parse_mount};
use crate::parser::{Node, chomp_heredoc_content, parse_heredoc};
use crate::shell;

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
        let mut expand = |w: &str| shell::process_word(w, &vars, esc);
        for raw in f.many("mount") {
            let m = parse_mount(raw, Some(&mut expand)).map_err(|e| {
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
    m: RunMount,
) -> Result<Exec, FrontendError> {
    if m.from.is_some() && !matches!(m.mount_type, MountType::Bind | MountType::Cache) {
        return Err(ctx.err.at(
            node,
            format!(
                "failed to parse --mount={}: 'from' is not supported for mount type {}",
                m.raw,
                m.mount_type.as_str()
            ),
        ));
    }
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
    match m.mount_type {
        MountType::Bind => {
            let target = target.unwrap_or_default();
            let src = match source_state(ctx, &m.from)? {
                Some(s) => s,
                None => ctx.context_state(),
            };
            let mut mount = Mount::bind(target, &src);
            if let Some(sel) = selector(&m.source) {
                mount = mount.selector(sel);
            }
            mount = if m.read_only {
                mount.readonly()
            } else {
                mount.no_output()
            };
            Ok(exec.mount(mount))
        }
        MountType::Cache => {
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
            let sharing = match m.sharing {
                Some(CacheSharing::Private) => pb::CacheSharingOpt::Private,
                Some(CacheSharing::Locked) => pb::CacheSharingOpt::Locked,
                Some(CacheSharing::Shared) | None => pb::CacheSharingOpt::Shared,
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
            if m.read_only {
                mount = mount.readonly();
            }
            Ok(exec.mount(mount))
        }
        MountType::Tmpfs => {
            let mut mount = Mount::tmpfs(target.unwrap_or_default());
            if let Some(size) = m.size {
                mount = mount.size(i64::try_from(size).unwrap_or(i64::MAX));
            }
            Ok(exec.mount(mount))
        }
        MountType::Secret => {
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
        MountType::Ssh => Ok(exec.ssh(SshMount {
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
    }
}
