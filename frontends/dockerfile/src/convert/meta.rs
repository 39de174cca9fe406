//! Instructions that change the image config (and WORKDIR, which also makes
//! the directory): ENV, LABEL, EXPOSE, VOLUME, USER, WORKDIR, CMD,
//! ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{self, MkdirOptions};
use serde_json::{Map, Value};

use super::Ctx;
use super::copy::chown_opt;
use super::dockerignore::clean;
use super::flags;
use super::stages::{self, StageRun, display_name};
use crate::parser::{self, Node, go_quote};
use crate::shell;

/// Go's `%q` of a string list: `["a" "b"]`.
pub(crate) fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

fn expand(ctx: &Ctx<'_>, run: &StageRun, node: &Node, word: &str) -> Result<String, FrontendError> {
    shell::process_word(word, &run.vars(), ctx.ast.escape).map_err(|e| ctx.err.at(node, e))
}

/// The command of CMD/ENTRYPOINT/HEALTHCHECK/RUN in exec form, or the shell
/// form wrapped in the stage's SHELL.
pub(crate) fn with_shell(run: &StageRun, node: &Node, args: &[String]) -> Vec<String> {
    if node.json {
        return args.to_vec();
    }
    let mut out = run
        .image
        .config
        .shell
        .clone()
        .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()]);
    out.push(args.join(" "));
    out
}

/// Key/value pairs of ENV and LABEL, expanded against the variables from
/// before the instruction.
fn pairs(
    ctx: &Ctx<'_>,
    run: &StageRun,
    node: &Node,
    what: &str,
) -> Result<Vec<(String, String)>, FrontendError> {
    if node.args.is_empty() {
        return Err(ctx
            .err
            .at(node, format!("{what} requires at least one argument")));
    }
    let mut out = Vec::new();
    for kv in node.args.chunks(3) {
        let [k, v, ..] = kv else {
            return Err(ctx.err.at(node, format!("{what} requires key and value")));
        };
        let k = expand(ctx, run, node, k)?;
        if k.is_empty() {
            return Err(ctx.err.at(node, format!("{what} names can not be blank")));
        }
        let v = expand(ctx, run, node, v)?;
        out.push((k, v));
    }
    Ok(out)
}

/// Parses a trigger stored in a base image's `OnBuild`.
pub(crate) fn parse_triggers(
    ctx: &Ctx<'_>,
    from: &Node,
    triggers: &[String],
) -> Result<Vec<Node>, FrontendError> {
    let mut out = Vec::new();
    for t in triggers {
        let ast = parser::parse(t.as_bytes()).map_err(|e| {
            ctx.err.at(
                from,
                format!(
                    "invalid ONBUILD trigger {t:?} of the base image: {}",
                    e.message()
                ),
            )
        })?;
        for mut n in ast.children {
            n.start_line = from.start_line;
            n.end_line = from.end_line;
            match n.name().as_str() {
                "onbuild" | "from" | "maintainer" => {
                    return Err(ctx.err.at(
                        from,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            n.value.to_ascii_uppercase()
                        ),
                    ));
                }
                _ => {}
            }
            stages::validate(&ctx.err, &n)?;
            out.push(n);
        }
    }
    Ok(out)
}

fn single_arg(ctx: &Ctx<'_>, node: &Node, what: &str) -> Result<String, FrontendError> {
    match node.args.as_slice() {
        [a] if !a.is_empty() => Ok(a.clone()),
        [] => Err(ctx
            .err
            .at(node, format!("{what} requires exactly one argument"))),
        _ => Err(ctx
            .err
            .at(node, format!("{what} requires exactly one argument"))),
    }
}

/// Dispatches the metadata instructions.
pub(crate) fn dispatch(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
) -> Result<(), FrontendError> {
    let name = node.name();
    match name.as_str() {
        "env" => {
            let kvs = pairs(ctx, run, node, "ENV")?;
            for (k, _) in &kvs {
                if super::args::looks_secret(k) {
                    ctx.lint(
                        node,
                        "SecretsUsedInArgOrEnv",
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data (ENV {k:?})"
                        ),
                    );
                }
            }
            let mut msg = String::from("ENV");
            for (k, v) in &kvs {
                run.set_env(k, v);
                msg.push_str(&format!(" {k}={v}"));
            }
            run.image.history(msg, true);
        }
        "label" => {
            let kvs = pairs(ctx, run, node, "LABEL")?;
            let mut msg = String::from("LABEL");
            for (k, v) in kvs {
                msg.push_str(&format!(" {k}={v}"));
                run.image.config.labels.insert(k, v);
            }
            run.image.history(msg, true);
        }
        "expose" => {
            if node.args.is_empty() {
                return Err(ctx.err.at(node, "EXPOSE requires at least one argument"));
            }
            let mut ports = Vec::new();
            for a in &node.args {
                for word in shell::process_words(a, &run.vars(), ctx.ast.escape)
                    .map_err(|e| ctx.err.at(node, e))?
                {
                    ports.extend(parse_port(ctx, node, &word)?);
                }
            }
            let shown = format!("EXPOSE [{}]", ports.join(" "));
            for p in ports {
                run.image.config.exposed_ports.insert(p);
            }
            run.image.history(shown, true);
        }
        "volume" => {
            if node.args.is_empty() {
                return Err(ctx.err.at(node, "VOLUME requires at least one argument"));
            }
            let mut vols = Vec::new();
            for a in &node.args {
                let v = expand(ctx, run, node, a)?;
                if v.trim().is_empty() {
                    return Err(ctx
                        .err
                        .at(node, "VOLUME specified can not be an empty string"));
                }
                vols.push(v);
            }
            for v in &vols {
                run.image.config.volumes.insert(v.clone());
            }
            run.image
                .history(format!("VOLUME [{}]", vols.join(" ")), true);
        }
        "user" => {
            let raw = single_arg(ctx, node, "USER")?;
            let u = expand(ctx, run, node, &raw)?;
            run.image.config.user = u.clone();
            run.state = run.state.user(u.clone());
            run.image.history(format!("USER {u}"), true);
        }
        "workdir" => {
            let raw = single_arg(ctx, node, "WORKDIR")?;
            let p = expand(ctx, run, node, &raw)?;
            if !run.workdir_set && !p.starts_with('/') {
                ctx.lint(
                    node,
                    "WorkdirRelativePath",
                    format!("Relative workdir {p:?} can have unexpected results if the base image changes"),
                );
            }
            run.workdir_set = true;
            let cur = if run.image.config.working_dir.is_empty() {
                "/".to_string()
            } else {
                run.image.config.working_dir.clone()
            };
            let wd = if p.starts_with('/') {
                clean(&p)
            } else {
                clean(&format!("{cur}/{p}"))
            };
            run.image.config.working_dir = wd.clone();
            run.state = run.state.dir(&wd);
            if wd != "/" {
                let text = display_name(ctx, run, &node.original);
                let c = run.constraints(ctx, node, &text);
                let owner = if run.image.config.user.is_empty() {
                    None
                } else {
                    Some(chown_opt(&run.image.config.user))
                };
                let action = builder::mkdir(
                    wd.clone(),
                    0o755,
                    MkdirOptions {
                        make_parents: true,
                        owner,
                        timestamp: run.epoch_ns,
                    },
                );
                run.state = run.state.file_with(action, c);
                run.image.history(format!("WORKDIR {wd}"), false);
            } else {
                run.image.history(format!("WORKDIR {wd}"), true);
            }
        }
        "cmd" | "entrypoint" => {
            let upper = name.to_ascii_uppercase();
            if !node.json && !node.args.is_empty() && run.image.config.shell.is_none() {
                ctx.lint(
                    node,
                    "JSONArgsRecommended",
                    format!("JSON arguments recommended for {upper} to prevent unintended behavior related to OS signals"),
                );
            }
            let args = with_shell(run, node, &node.args);
            let shown = go_list(&args);
            if name == "cmd" {
                run.image.config.cmd = Some(args);
                run.image.config.args_escaped = true;
                run.cmd_set = true;
            } else {
                run.image.config.entrypoint = Some(args);
                if !run.cmd_set {
                    run.image.config.cmd = None;
                }
            }
            run.image.history(format!("{upper} {shown}"), true);
        }
        "shell" => {
            if !node.json {
                return Err(ctx
                    .err
                    .at(node, "SHELL requires the arguments to be in JSON form"));
            }
            if node.args.is_empty() {
                return Err(ctx.err.at(node, "SHELL requires at least one argument"));
            }
            run.image.config.shell = Some(node.args.clone());
            run.image
                .history(format!("SHELL [{}]", node.args.join(" ")), true);
        }
        "stopsignal" => {
            let raw = single_arg(ctx, node, "STOPSIGNAL")?;
            let sig = expand(ctx, run, node, &raw)?;
            if !valid_signal(&sig) {
                return Err(ctx.err.at(node, format!("invalid signal: {sig}")));
            }
            run.image.config.stop_signal = sig.clone();
            run.image.history(format!("STOPSIGNAL {sig}"), true);
        }
        "healthcheck" => {
            let hc = healthcheck(ctx, run, node)?;
            let shown = healthcheck_history(&hc);
            run.image.config.healthcheck = Some(hc);
            run.image.history(format!("HEALTHCHECK {shown}"), true);
        }
        "onbuild" => {
            let text = node.original.trim();
            let expr = text
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r.trim());
            if expr.is_empty() {
                return Err(ctx.err.at(node, "ONBUILD requires at least one argument"));
            }
            run.image.config.on_build.push(expr.to_string());
        }
        "maintainer" => {
            let m = single_arg(ctx, node, "MAINTAINER")?;
            ctx.lint(
                node,
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label",
            );
            run.image.author = m.clone();
            run.image.history(format!("MAINTAINER {m}"), true);
        }
        other => {
            return Err(ctx.err.at(
                node,
                format!("unknown instruction: {}", other.to_ascii_uppercase()),
            ));
        }
    }
    Ok(())
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … (warns about upper-case
/// protocols).
fn parse_port(ctx: &mut Ctx<'_>, node: &Node, word: &str) -> Result<Vec<String>, FrontendError> {
    if let Some((_, proto)) = word.rsplit_once('/')
        && proto != proto.to_ascii_lowercase()
    {
        ctx.lint(
            node,
            "ExposeProtoCasing",
            format!("Defined protocol '{proto}' in EXPOSE instruction should be lowercase"),
        );
    }
    crate::instructions::expose_ports(word).map_err(|e| ctx.err.at(node, e))
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    const NAMES: [&str; 31] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "WINCH",
    ];
    NAMES.contains(&name)
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|r| {
                r.is_empty() || r.trim_start_matches(['+', '-']).parse::<u32>().is_ok()
            })
}

fn healthcheck(ctx: &Ctx<'_>, run: &StageRun, node: &Node) -> Result<Value, FrontendError> {
    let Some(kind) = node.args.first() else {
        return Err(ctx
            .err
            .at(node, "HEALTHCHECK requires at least one argument"));
    };
    let mut hc = Map::new();
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 {
                return Err(ctx.err.at(node, "HEALTHCHECK NONE takes no arguments"));
            }
            hc.insert("Test".into(), Value::from(vec!["NONE".to_string()]));
            return Ok(Value::Object(hc));
        }
        "CMD" => {}
        other => {
            return Err(ctx.err.at(
                node,
                format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            ));
        }
    }
    let cmd = &node.args[1..];
    if cmd.is_empty() || cmd.iter().all(|s| s.is_empty()) {
        return Err(ctx.err.at(node, "Missing command after HEALTHCHECK CMD"));
    }
    let test: Vec<String> = if node.json {
        std::iter::once("CMD".to_string())
            .chain(cmd.iter().cloned())
            .collect()
    } else {
        vec!["CMD-SHELL".to_string(), cmd.join(" ")]
    };
    let _ = run;
    hc.insert("Test".into(), Value::from(test));
    let f = flags::parse(&node.flags, stages::flag_defs("healthcheck"))
        .map_err(|e| ctx.err.at(node, e))?;
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = f.one(flag) {
            let ns = flags::parse_duration(v).map_err(|e| ctx.err.at(node, e))?;
            if ns != 0 && ns < 1_000_000 {
                return Err(ctx
                    .err
                    .at(node, format!("{key} \"--{flag}\" cannot be less than 1ms")));
            }
            if ns != 0 {
                hc.insert(key.into(), Value::from(ns));
            }
        }
    }
    if let Some(r) = f.one("retries") {
        let n: i64 = r.parse().map_err(|_| {
            ctx.err
                .at(node, format!("invalid value for --retries: {r}"))
        })?;
        if n < 0 {
            return Err(ctx
                .err
                .at(node, format!("--retries cannot be negative ({n})")));
        }
        if n > 0 {
            hc.insert("Retries".into(), Value::from(n));
        }
    }
    Ok(Value::Object(hc))
}

/// Go's `time.Duration.String`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, div: u64, digits: usize| -> String {
        let int = v / div;
        let rem = v % div;
        if rem == 0 {
            int.to_string()
        } else {
            let f = format!("{rem:0digits$}");
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}\u{b5}s", frac(u, 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000, 6))
    } else {
        let secs = u / 1_000_000_000;
        let (h, m, sec) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac(
            sec * 1_000_000_000 + u % 1_000_000_000,
            1_000_000_000,
            9,
        ));
        out.push('s');
        out
    };
    format!("{sign}{body}")
}

/// The history text of a healthcheck, shaped like Go's `%+v` of Docker's
/// `HealthConfig`.
fn healthcheck_history(hc: &Value) -> String {
    let test: Vec<String> = hc
        .get("Test")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let d = |k: &str| go_duration(hc.get(k).and_then(Value::as_i64).unwrap_or(0));
    format!(
        "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        test.join(" "),
        d("Interval"),
        d("Timeout"),
        d("StartPeriod"),
        d("StartInterval"),
        hc.get("Retries").and_then(Value::as_i64).unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(2_500_000), "2.5ms");
    }
}
