//! `ARG` scoping: global args (before the first `FROM`), per-stage args,
//! the predefined platform and proxy args, and build-arg overrides.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::pb;

use super::stages::StageRun;
use super::{Ctx, options};
use crate::parser::Node;
use crate::shell;

/// Proxy variables BuildKit passes to `RUN` without making them part of the
/// cache key unless a stage declares them.
pub(crate) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Args that never reach the environment.
pub(crate) const NON_ENV_ARGS: [&str; 2] =
    ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Build args the frontend itself understands; never reported as unused.
pub(crate) fn is_builtin_arg(k: &str) -> bool {
    PROXY_ARGS.contains(&k)
        || k.starts_with("BUILDKIT_")
        || k == "SOURCE_DATE_EPOCH"
        || matches!(
            k,
            "TARGETPLATFORM"
                | "TARGETOS"
                | "TARGETARCH"
                | "TARGETVARIANT"
                | "BUILDPLATFORM"
                | "BUILDOS"
                | "BUILDARCH"
                | "BUILDVARIANT"
        )
}

fn platform_args(prefix: &str, p: &pb::Platform) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}PLATFORM"), options::from_pb(p).format()),
        (format!("{prefix}OS"), p.os.clone()),
        (format!("{prefix}ARCH"), p.architecture.clone()),
        (format!("{prefix}VARIANT"), p.variant.clone()),
    ]
}

/// Splits one `ARG` word into name and optional default.
fn split_arg(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    }
}

/// Evaluates the global `ARG`s, seeding the predefined platform args.
pub(crate) fn eval_global(ctx: &mut Ctx<'_>, meta: &[Node]) -> Result<(), FrontendError> {
    let mut env = platform_args("TARGET", &ctx.target_platform);
    env.extend(platform_args("BUILD", &ctx.build_platform));
    for node in meta {
        if node.args.is_empty() {
            return Err(ctx.err.at(node, "ARG requires at least one argument"));
        }
        for word in &node.args {
            let (k, default) = split_arg(word);
            if k.is_empty() {
                return Err(ctx.err.at(node, "ARG names can not be blank"));
            }
            let value = if let Some(v) = ctx.opts.build_args.get(k) {
                ctx.used_build_args.insert(k.to_string());
                Some(v.clone())
            } else if let Some(d) = default {
                Some(
                    shell::process_word(d, &env, ctx.ast.escape)
                        .map_err(|e| ctx.err.at(node, e))?,
                )
            } else {
                None
            };
            if let Some(v) = value {
                env.retain(|(key, _)| key != k);
                env.push((k.to_string(), v));
            }
        }
    }
    ctx.global_args = env;
    Ok(())
}

/// `ARG` inside a stage.
pub(crate) fn dispatch_arg(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
) -> Result<(), FrontendError> {
    if node.args.is_empty() {
        return Err(ctx.err.at(node, "ARG requires at least one argument"));
    }
    let mut shown = Vec::new();
    for word in &node.args {
        let (k, default) = split_arg(word);
        if k.is_empty() {
            return Err(ctx.err.at(node, "ARG names can not be blank"));
        }
        let value = if let Some(v) = ctx.opts.build_args.get(k) {
            ctx.used_build_args.insert(k.to_string());
            Some(v.clone())
        } else if let Some(d) = default {
            let vars = run.vars();
            Some(shell::process_word(d, &vars, ctx.ast.escape).map_err(|e| ctx.err.at(node, e))?)
        } else {
            ctx.global_args
                .iter()
                .find(|(g, _)| g == k)
                .map(|(_, v)| v.clone())
        };
        if looks_secret(k) {
            ctx.lint(
                node,
                "SecretsUsedInArgOrEnv",
                format!("Do not use ARG or ENV instructions for sensitive data (ARG {k:?})"),
            );
        }
        match &value {
            Some(v) => shown.push(format!("{k}={v}")),
            None => shown.push(k.to_string()),
        }
        run.declare_arg(k, value);
    }
    run.image.history(format!("ARG {}", shown.join(" ")), true);
    Ok(())
}

/// Proxy settings from build args the stage did not declare.
pub(crate) fn proxy_env(ctx: &Ctx<'_>, run: &StageRun) -> Option<pb::ProxyEnv> {
    let get = |upper: &str, lower: &str| -> String {
        for k in [upper, lower] {
            if !run.is_declared(k)
                && let Some(v) = ctx.opts.build_args.get(k)
            {
                return v.clone();
            }
        }
        String::new()
    };
    let p = pb::ProxyEnv {
        http_proxy: get("HTTP_PROXY", "http_proxy"),
        https_proxy: get("HTTPS_PROXY", "https_proxy"),
        ftp_proxy: get("FTP_PROXY", "ftp_proxy"),
        no_proxy: get("NO_PROXY", "no_proxy"),
        all_proxy: get("ALL_PROXY", "all_proxy"),
    };
    let empty = p.http_proxy.is_empty()
        && p.https_proxy.is_empty()
        && p.ftp_proxy.is_empty()
        && p.no_proxy.is_empty()
        && p.all_proxy.is_empty();
    (!empty).then_some(p)
}

/// Whether a variable name looks like it holds a secret (`API_TOKEN`,
/// `DB_PASSWORD`, …).
pub(crate) fn looks_secret(key: &str) -> bool {
    const WORDS: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    key.to_ascii_lowercase()
        .split('_')
        .any(|p| WORDS.contains(&p))
}
