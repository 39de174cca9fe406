//! Splitting the AST into stages and dispatching a stage's instructions.

use std::collections::BTreeSet;

use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{Constraints, OpOptions, State};
use kiln_frontend::llb::pb;

use super::error::ErrCtx;
use super::flags::{self, Kind};
use super::image::ImageSpec;
use super::{Ctx, Dispatched, Warning, args, copy, from, lint_warning, meta, run};
use crate::parser::{Ast, Node};
use crate::shell;

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone)]
pub(crate) struct StageDef {
    /// Position in the file.
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The `FROM` node.
    pub from: Node,
    /// Base name as written.
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// The instructions of the stage.
    pub commands: Vec<Node>,
}

const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// The flags each instruction takes.
pub(crate) fn flag_defs(name: &str) -> &'static [(&'static str, Kind)] {
    match name {
        "from" => &[("platform", Kind::One)],
        "run" => &[
            ("mount", Kind::Many),
            ("network", Kind::One),
            ("security", Kind::One),
            ("device", Kind::Many),
        ],
        "copy" => &[
            ("from", Kind::One),
            ("chown", Kind::One),
            ("chmod", Kind::One),
            ("link", Kind::Bool),
            ("parents", Kind::Bool),
            ("exclude", Kind::Many),
        ],
        "add" => &[
            ("chown", Kind::One),
            ("chmod", Kind::One),
            ("link", Kind::Bool),
            ("keep-git-dir", Kind::Bool),
            ("checksum", Kind::One),
            ("unpack", Kind::Bool),
            ("exclude", Kind::Many),
            ("parents", Kind::Bool),
        ],
        "healthcheck" => &[
            ("interval", Kind::One),
            ("timeout", Kind::One),
            ("start-period", Kind::One),
            ("start-interval", Kind::One),
            ("retries", Kind::One),
        ],
        _ => &[],
    }
}

/// Closest known instruction, for "did you mean".
fn suggest(name: &str) -> Option<&'static str> {
    let lev = |a: &str, b: &str| -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            }
            prev = cur;
        }
        prev[b.len()]
    };
    INSTRUCTIONS
        .iter()
        .map(|i| (lev(name, i), *i))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, i)| i)
}

/// Checks a node's keyword and flags (and an ONBUILD's trigger).
pub(crate) fn validate(err: &ErrCtx, node: &Node) -> Result<(), FrontendError> {
    let name = node.name();
    if !INSTRUCTIONS.contains(&name.as_str()) {
        let upper = node.value.to_ascii_uppercase();
        let hint = suggest(&name)
            .map(|s| format!(" (did you mean {}?)", s.to_ascii_uppercase()))
            .unwrap_or_default();
        return Err(err.at(node, format!("unknown instruction: {upper}{hint}")));
    }
    flags::parse(&node.flags, flag_defs(&name))
        .map_err(|e| err.at(node, format!("{}: {e}", name.to_ascii_uppercase())))?;
    if name == "onbuild" {
        let Some(sub) = &node.sub else {
            return Err(err.at(node, "ONBUILD requires at least one argument"));
        };
        match sub.name().as_str() {
            "onbuild" => {
                return Err(err.at(node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
            }
            "from" | "maintainer" => {
                return Err(err.at(
                    node,
                    format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        sub.value.to_ascii_uppercase()
                    ),
                ));
            }
            _ => validate(err, sub)?,
        }
    }
    Ok(())
}

fn valid_stage_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
}

/// Splits the AST into global ARGs and stages, checking every instruction.
pub(crate) fn split(
    ast: &Ast,
    err: &ErrCtx,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<Node>, Vec<StageDef>), FrontendError> {
    // The typed instruction layer checks arguments and flags of every
    // instruction (also in stages the target does not need), like BuildKit.
    if let Err(e) = crate::instructions::parse_dockerfile(ast) {
        let node = ast.children.iter().find(|n| n.start_line == e.line);
        let kind = e.kind.to_string();
        let msg = if kind.starts_with(&e.instruction) || kind.starts_with("unknown instruction") {
            kind
        } else {
            format!("{}: {kind}", e.instruction)
        };
        return Err(match node {
            Some(n) => err.at(n, msg),
            None => FrontendError::new(msg),
        });
    }
    let mut meta = Vec::new();
    let mut stages: Vec<StageDef> = Vec::new();
    for node in &ast.children {
        validate(err, node)?;
        let name = node.name();
        if name == "from" {
            let f = flags::parse(&node.flags, flag_defs("from")).map_err(|e| err.at(node, e))?;
            let stage_name = match node.args.as_slice() {
                [base] => {
                    let _ = base;
                    None
                }
                [_, kw, n] if kw.eq_ignore_ascii_case("as") => {
                    if kw != "AS" && kw != "as"
                        || (kw == "AS") != (node.value == node.value.to_ascii_uppercase())
                    {
                        warnings.push(lint_warning(
                            "FromAsCasing",
                            format!("'{kw}' and '{}' keywords' casing do not match", node.value),
                            Some(err.location(node)),
                        ));
                    }
                    let lower = n.to_ascii_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(err.at(
                            node,
                            format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    if lower != *n {
                        warnings.push(lint_warning(
                            "StageNameCasing",
                            format!("Stage name '{n}' should be lowercase"),
                            Some(err.location(node)),
                        ));
                    }
                    if lower == "scratch" || lower == "context" {
                        warnings.push(lint_warning(
                            "ReservedStageName",
                            format!("'{lower}' is reserved and should not be used as a stage name"),
                            Some(err.location(node)),
                        ));
                    }
                    if stages
                        .iter()
                        .any(|s| s.name.as_deref() == Some(lower.as_str()))
                    {
                        warnings.push(lint_warning(
                            "DuplicateStageName",
                            format!("Duplicate stage name {lower:?}, stage names should be unique"),
                            Some(err.location(node)),
                        ));
                    }
                    Some(lower)
                }
                _ => return Err(err.at(node, "FROM requires either one or three arguments")),
            };
            stages.push(StageDef {
                index: stages.len(),
                name: stage_name,
                from: node.clone(),
                base: node.args[0].clone(),
                platform: f.one("platform").map(str::to_string),
                commands: Vec::new(),
            });
            continue;
        }
        match stages.last_mut() {
            Some(s) => s.commands.push(node.clone()),
            None if name == "arg" => meta.push(node.clone()),
            None => return Err(err.at(node, "no build stage in current context")),
        }
    }
    if stages.is_empty() {
        return Err(FrontendError::new("dockerfile contains no stages to build"));
    }
    // Keyword casing should follow the majority of the file.
    let keywords: Vec<&Node> = stages
        .iter()
        .flat_map(|s| std::iter::once(&s.from).chain(s.commands.iter()))
        .collect();
    let consistent = |v: &str| v == v.to_ascii_lowercase() || v == v.to_ascii_uppercase();
    let lower = keywords
        .iter()
        .filter(|n| consistent(&n.value) && n.value == n.value.to_ascii_lowercase())
        .count();
    let upper = keywords
        .iter()
        .filter(|n| consistent(&n.value) && n.value != n.value.to_ascii_lowercase())
        .count();
    let majority_lower = lower > upper;
    for n in &keywords {
        let want = if majority_lower && n.value != n.value.to_ascii_lowercase() {
            "lowercase"
        } else if !majority_lower && n.value != n.value.to_ascii_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        warnings.push(lint_warning(
            "ConsistentInstructionCasing",
            format!(
                "Command '{}' should match the case of the command majority ({want})",
                n.value
            ),
            Some(err.location(n)),
        ));
    }
    // Instructions whose earlier uses in a stage are overridden.
    for st in &stages {
        for kw in ["cmd", "entrypoint", "healthcheck"] {
            let uses: Vec<&Node> = st.commands.iter().filter(|n| n.name() == kw).collect();
            if let Some((_, earlier)) = uses.split_last() {
                for n in earlier {
                    warnings.push(lint_warning(
                        "MultipleInstructionsDisallowed",
                        format!(
                            "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                            kw.to_ascii_uppercase()
                        ),
                        Some(err.location(n)),
                    ));
                }
            }
        }
        for n in &st.commands {
            let name = n.name();
            if (name == "env" || name == "label") && n.args.len() == 3 && n.args[2].is_empty() {
                let upper = name.to_ascii_uppercase();
                warnings.push(lint_warning(
                    "LegacyKeyValueFormat",
                    format!("\"{upper} key=value\" should be used instead of legacy \"{upper} key value\" format"),
                    Some(err.location(n)),
                ));
            }
        }
    }
    Ok((meta, stages))
}

/// How many `--from` references name no stage (images, named contexts) plus
/// cache mounts without `from`: BuildKit counts each as a state of its own,
/// which decides whether stage names are printed.
pub(crate) fn implicit_refs(stages: &[StageDef]) -> usize {
    let is_stage = |v: &str| {
        let lower = v.to_ascii_lowercase();
        stages
            .iter()
            .any(|s| s.name.as_deref() == Some(lower.as_str()))
            || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut n = 0;
    for node in stages.iter().flat_map(|s| s.commands.iter()) {
        let name = node.name();
        let Ok(f) = flags::parse(&node.flags, flag_defs(&name)) else {
            continue;
        };
        match name.as_str() {
            "copy" => {
                if let Some(v) = f.one("from")
                    && !is_stage(v)
                {
                    n += 1;
                }
            }
            "run" => {
                for m in f.many("mount") {
                    let fields: Vec<(String, String)> = m
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let get =
                        |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
                    match get("from") {
                        Some(v) if !is_stage(v) => n += 1,
                        None if get("type").is_some_and(|t| t.eq_ignore_ascii_case("cache")) => {
                            n += 1
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    n
}

/// The stages the target needs: itself, the stages its `FROM` names and the
/// stages `COPY --from` / `RUN --mount=from=` read, transitively. Every
/// such reference points at an earlier stage, so one backward pass finds
/// them all, and dispatching them in file order keeps recursion shallow.
pub(crate) fn needed(ctx: &Ctx<'_>, target: usize) -> Vec<bool> {
    let n = ctx.stages.len();
    let mut need = vec![false; n];
    if target >= n {
        return need;
    }
    need[target] = true;
    for j in (0..=target).rev() {
        if !need[j] {
            continue;
        }
        let st = &ctx.stages[j];
        if st
            .name
            .as_deref()
            .is_some_and(|name| from::lookup_named(ctx, name, &ctx.target_platform).is_some())
        {
            continue;
        }
        let mut refs: Vec<String> = Vec::new();
        if let Ok(base) = shell::process_word(&st.base, &ctx.global_args, ctx.ast.escape)
            && let Some(i) = super::find_stage(&ctx.stages, &base, j)
        {
            need[i] = true;
        }
        for node in &st.commands {
            let name = node.name();
            let Ok(f) = flags::parse(&node.flags, flag_defs(&name)) else {
                continue;
            };
            if name == "copy"
                && let Some(v) = f.one("from")
            {
                refs.push(v.to_string());
            }
            if name == "run" {
                for m in f.many("mount") {
                    for kv in m.split(',') {
                        if let Some((k, v)) = kv.split_once('=')
                            && k.trim().eq_ignore_ascii_case("from")
                        {
                            refs.push(v.trim().to_string());
                        }
                    }
                }
            }
        }
        for r in refs {
            if let Some(i) = super::find_stage(&ctx.stages, &r, j) {
                need[i] = true;
            }
        }
    }
    need
}

/// How deep stages may build on each other (each level is a nested call).
const MAX_STAGE_DEPTH: usize = 128;

/// Dispatches a stage once; later calls return the same result.
pub(crate) fn dispatch(ctx: &mut Ctx<'_>, idx: usize) -> Result<Dispatched, FrontendError> {
    if let Some(d) = &ctx.done[idx] {
        return Ok(d.clone());
    }
    if ctx.in_progress[idx] {
        let node = ctx.stages[idx].from.clone();
        let name = ctx.stages[idx]
            .name
            .clone()
            .unwrap_or_else(|| idx.to_string());
        return Err(ctx.err.at(
            &node,
            format!("circular dependency detected on stage: {name}"),
        ));
    }
    if ctx.depth >= MAX_STAGE_DEPTH {
        let node = ctx.stages[idx].from.clone();
        return Err(ctx.err.at(
            &node,
            format!("stages depend on each other more than {MAX_STAGE_DEPTH} levels deep"),
        ));
    }
    ctx.in_progress[idx] = true;
    ctx.depth += 1;
    let def = ctx.stages[idx].clone();
    let out = run_stage(ctx, &def);
    ctx.depth -= 1;
    let out = out?;
    ctx.in_progress[idx] = false;
    ctx.done[idx] = Some(out.clone());
    Ok(out)
}

/// A stage being dispatched.
pub(crate) struct StageRun {
    /// Name printed in progress (`""` in single-stage files).
    pub display: String,
    pub cmd_total: usize,
    pub cmd_index: usize,
    pub multi_platform: bool,
    pub state: State,
    pub image: ImageSpec,
    pub platform: pb::Platform,
    /// Declared args with values, in declaration order (history, env).
    pub args: Vec<(String, String)>,
    /// Every declared arg name.
    pub declared: BTreeSet<String>,
    /// `CMD` seen in this stage.
    pub cmd_set: bool,
    /// A `WORKDIR` was set in this stage (or the stage it is built on).
    pub workdir_set: bool,
    /// Dispatching an ONBUILD trigger of the base.
    pub on_build: bool,
    /// `SOURCE_DATE_EPOCH` in nanoseconds, for created files.
    pub epoch_ns: Option<i64>,
    pub ignore_cache: bool,
    /// Index of the stage in the file (progress group ids).
    pub index: usize,
}

impl StageRun {
    /// The variables instructions expand against: the state's environment
    /// (image `Env`, `ENV` and `ARG` values, the later setting winning).
    pub fn vars(&self) -> Vec<(String, String)> {
        self.state
            .env()
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect()
    }

    pub fn is_declared(&self, k: &str) -> bool {
        self.declared.contains(k)
    }

    /// Records an `ARG`; with a value it also reaches the environment of
    /// later `RUN`s (not the image config).
    pub fn declare_arg(&mut self, k: &str, value: Option<String>) {
        self.declared.insert(k.to_string());
        if let Some(v) = value {
            self.args.retain(|(a, _)| a != k);
            self.args.push((k.to_string(), v.clone()));
            if !super::args::NON_ENV_ARGS.contains(&k) {
                self.state = self.state.add_env(k, v);
            }
        }
    }

    /// Sets an `ENV` variable in the image and the state.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.image.set_env(k, v);
        self.state = self.state.add_env(k, v);
    }

    /// `[stage 2/5] ` prefix of a progress name; advances the counter.
    pub fn prefix(&mut self, s: &str) -> String {
        if self.cmd_total == 0 {
            return s.to_string();
        }
        self.cmd_index += 1;
        let width = self.cmd_total.to_string().len();
        let mut out = String::from("[");
        if self.multi_platform {
            out.push_str(&super::options::from_pb(&self.platform).format());
            out.push_str(&self.cross_suffix());
            out.push(' ');
        }
        if !self.display.is_empty() {
            out.push_str(&self.display);
            out.push(' ');
        }
        out.push_str(&format!("{:>width$}/{}] ", self.cmd_index, self.cmd_total));
        if self.on_build {
            out.push_str("ONBUILD ");
        }
        out.push_str(s);
        out
    }

    /// `->arm64` when the stage runs on one platform and builds for
    /// another (its `TARGET*` args say which), as BuildKit prints it.
    fn cross_suffix(&self) -> String {
        let vars = self.vars();
        let get = |k: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let target = match get("TARGETPLATFORM").and_then(|p| super::options::parse_platform(&p)) {
            Some(p) => p,
            None => {
                let (os, arch, variant) =
                    (get("TARGETOS"), get("TARGETARCH"), get("TARGETVARIANT"));
                if os.is_none() && arch.is_none() && variant.is_none() {
                    return String::new();
                }
                kiln_frontend::Platform {
                    os: os
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| self.platform.os.clone()),
                    architecture: arch
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| self.platform.architecture.clone()),
                    variant: variant.filter(|s| !s.is_empty()),
                }
            }
        };
        if target.os == self.platform.os && target.architecture != self.platform.architecture {
            match &target.variant {
                Some(v) => format!("->{}/{v}", target.architecture),
                None => format!("->{}", target.architecture),
            }
        } else if target.os != self.platform.os {
            format!("->{}", target.format())
        } else {
            String::new()
        }
    }

    /// Constraints for an op made by `node`: progress name, the command
    /// description, source location and cache setting.
    pub fn constraints(&mut self, ctx: &Ctx<'_>, node: &Node, name: &str) -> Constraints {
        let mut c = Constraints::default()
            .custom_name(self.prefix(name))
            .description("com.docker.dockerfile.v1.command", node.original.trim());
        c = ctx.located(c, node);
        if self.ignore_cache {
            c = c.ignore_cache();
        }
        c
    }
}

/// `COPY $SRC /dst` → `COPY <value> /dst` for progress names: the
/// instruction text expanded like a word (quotes removed); the text stays
/// as written when it does not expand.
pub(crate) fn display_name(ctx: &Ctx<'_>, run: &StageRun, text: &str) -> String {
    display_with(ctx, shell::Lexer::new(ctx.ast.escape), &run.vars(), text)
}

/// The progress name of a `RUN`: quotes and unset variables are kept, and
/// variables filled from secrets show as `****`.
pub(crate) fn run_display_name(ctx: &Ctx<'_>, vars: &[(String, String)], text: &str) -> String {
    let mut lex = shell::Lexer::new(ctx.ast.escape);
    lex.raw_quotes = true;
    lex.skip_unset_env = true;
    display_with(ctx, lex, vars, text)
}

fn display_with(
    _ctx: &Ctx<'_>,
    lex: shell::Lexer,
    vars: &[(String, String)],
    text: &str,
) -> String {
    let text = text.trim();
    let expanded = lex
        .process(text, vars)
        .map(|e| e.result)
        .unwrap_or_else(|_| text.to_string());
    match expanded.split_once(char::is_whitespace) {
        Some((kw, rest)) => format!("{} {rest}", kw.to_ascii_uppercase()),
        None => expanded.to_ascii_uppercase(),
    }
}

/// Whether an instruction becomes an op (counted in `[n/total]`).
fn makes_op(node: &Node) -> bool {
    matches!(node.name().as_str(), "run" | "copy" | "add" | "workdir")
}

fn run_stage(ctx: &mut Ctx<'_>, def: &StageDef) -> Result<Dispatched, FrontendError> {
    // A named context with the stage's name replaces the stage.
    if let Some(name) = &def.name {
        let platform = ctx.target_platform.clone();
        if let Some((key, value)) = from::lookup_named(ctx, name, &platform) {
            return from::named_context(ctx, &key, &value, &def.from, &platform);
        }
    }
    let base = from::resolve_base(ctx, def)?;
    let triggers = meta::parse_triggers(ctx, &def.from, &base.image.config.on_build)?;
    let display = if ctx.stage_count == 1 {
        String::new()
    } else {
        def.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", def.index))
    };
    let cmd_total = usize::from(base.source.is_step())
        + triggers.len()
        + def.commands.iter().filter(|n| makes_op(n)).count();
    let mut image = base.image.clone();
    image.config.on_build.clear();
    image.created = None;
    let mut epoch_ns = None;
    if let Some(epoch) = ctx.opts.build_args.get("SOURCE_DATE_EPOCH")
        && let Ok(secs) = epoch.trim().parse::<i64>()
    {
        image.created = Some(super::image::rfc3339(secs));
        epoch_ns = secs.checked_mul(1_000_000_000);
    }
    // PATH is always set (except on Windows).
    if base.platform.os != "windows" && !image.env_pairs().iter().any(|(k, _)| k == "PATH") {
        image
            .config
            .env
            .push(format!("PATH={}", super::image::DEFAULT_PATH));
    }
    let mut run = StageRun {
        display,
        cmd_total,
        cmd_index: 0,
        multi_platform: ctx.opts.multi_platform || ctx.opts.platforms.len() > 1,
        state: State::scratch(),
        image,
        platform: base.platform.clone(),
        args: Vec::new(),
        declared: BTreeSet::new(),
        cmd_set: false,
        on_build: false,
        workdir_set: false,
        epoch_ns,
        ignore_cache: ctx.opts.ignores_cache(def.name.as_deref()),
        index: def.index,
    };
    from::materialize(ctx, &mut run, base.source, &def.from)?;
    run.on_build = true;
    for node in &triggers {
        dispatch_command(ctx, &mut run, node)?;
    }
    run.on_build = false;
    for node in &def.commands {
        dispatch_command(ctx, &mut run, node)?;
    }
    Ok(Dispatched {
        state: run.state,
        image: run.image,
        platform: run.platform,
        args: run.args,
    })
}

/// Runs one instruction of a stage.
pub(crate) fn dispatch_command(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
) -> Result<(), FrontendError> {
    match node.name().as_str() {
        "arg" => args::dispatch_arg(ctx, run, node),
        "run" => run::dispatch(ctx, run, node),
        "copy" | "add" => copy::dispatch(ctx, run, node),
        "from" => Err(ctx.err.at(node, "FROM isn't allowed here")),
        _ => meta::dispatch(ctx, run, node),
    }
}
