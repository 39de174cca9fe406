//! `FROM`: scratch, images (config inherited from the resolver), earlier
//! stages and named contexts; also the sources behind `--from=`.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{self, Constraints, OpOptions, ResolveMode, State};
use kiln_frontend::llb::pb;

use super::image::ImageSpec;
use super::options::{self, ImageResolveMode};
use super::stages::{self, StageDef, StageRun};
use super::{Ctx, Dispatched, find_stage};
use crate::parser::Node;
use crate::shell;

/// What a base is before its op is named.
pub(crate) enum BaseSource {
    /// `scratch`.
    Scratch,
    /// An earlier stage: its state (settings included) and its args.
    Stage(Box<State>, Vec<(String, String)>),
    /// A named context.
    Named(Box<State>),
    /// An image to pull, `name:tag@digest`.
    Image(String),
}

impl BaseSource {
    /// Whether the `FROM` counts as a step of its own (`[1/N] FROM …`).
    pub fn is_step(&self) -> bool {
        matches!(self, BaseSource::Named(_) | BaseSource::Image(_))
    }
}

/// A resolved `FROM`.
pub(crate) struct Base {
    pub source: BaseSource,
    pub image: ImageSpec,
    pub platform: pb::Platform,
}

fn resolve_mode(ctx: &Ctx<'_>) -> ResolveMode {
    match ctx.opts.image_resolve_mode {
        ImageResolveMode::Default => ResolveMode::Default,
        ImageResolveMode::Pull => ResolveMode::ForcePull,
        ImageResolveMode::Local => ResolveMode::PreferLocal,
    }
}

/// The state settings an image config implies: env, working dir, user.
pub(crate) fn apply_config(mut state: State, image: &ImageSpec) -> State {
    for (k, v) in image.env_pairs() {
        state = state.add_env(k, v);
    }
    if !image.config.working_dir.is_empty() {
        state = state.dir(&image.config.working_dir);
    }
    if !image.config.user.is_empty() {
        state = state.user(image.config.user.clone());
    }
    state
}

/// Resolves an image reference: normalised name pinned to its digest and the
/// config.
fn resolve_image(
    ctx: &mut Ctx<'_>,
    reference: &str,
    platform: &pb::Platform,
    node: &Node,
) -> Result<(String, ImageSpec), FrontendError> {
    resolve_image_msg(ctx, reference, platform).map_err(|m| ctx.err.at(node, m))
}

/// [`resolve_image`] with the bare message as the error.
fn resolve_image_msg(
    ctx: &mut Ctx<'_>,
    reference: &str,
    platform: &pb::Platform,
) -> Result<(String, ImageSpec), String> {
    let normalized = builder::normalize_image_ref(reference)
        .map_err(|e| format!("{reference}: invalid reference format: {e}"))?;
    let p = options::from_pb(platform);
    let resolved = ctx.resolver.resolve(&normalized, &p).map_err(|e| {
        format!(
            "failed to resolve source metadata for {normalized}: {}",
            e.message
        )
    })?;
    let mut image = ImageSpec::parse(&resolved.config)
        .map_err(|e| format!("failed to parse image config of {normalized}: {e}"))?;
    if image.os.is_empty() {
        image.os = platform.os.clone();
    }
    if image.architecture.is_empty() {
        image.architecture = platform.architecture.clone();
        image.variant = platform.variant.clone();
    }
    let pinned = if normalized.contains('@') || resolved.digest.is_empty() {
        normalized
    } else {
        format!("{normalized}@{}", resolved.digest)
    };
    Ok((pinned, image))
}

fn image_state(
    ctx: &Ctx<'_>,
    reference: &str,
    platform: &pb::Platform,
    c: &Constraints,
    node: &Node,
) -> Result<State, FrontendError> {
    let img = builder::image(reference)
        .map_err(|e| ctx.err.at(node, e))?
        .resolve_mode(resolve_mode(ctx))
        .with_constraints(c)
        .platform(platform.clone());
    Ok(img.state())
}

/// Expands `FROM`'s base and platform with the global args and resolves it.
pub(crate) fn resolve_base(ctx: &mut Ctx<'_>, def: &StageDef) -> Result<Base, FrontendError> {
    let node = &def.from;
    let esc = ctx.ast.escape;
    let exp = shell::process_word_with_matches(&def.base, &ctx.global_args, esc)
        .map_err(|e| ctx.err.at(node, e))?;
    for missing in &exp.unmatched {
        ctx.warn(
            Some(node),
            format!("FROM argument '{missing}' is not declared"),
            Some("https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"),
        );
    }
    let name = exp.result;
    if name.is_empty() {
        return Err(ctx.err.at(
            node,
            format!("base name ({}) should not be blank", def.base),
        ));
    }
    let platform = match &def.platform {
        Some(raw) => {
            let v =
                shell::process_word(raw, &ctx.global_args, esc).map_err(|e| ctx.err.at(node, e))?;
            let p = options::parse_platform(&v)
                .ok_or_else(|| ctx.err.at(node, format!("failed to parse platform {v:?}")))?;
            if !raw.contains('$') {
                ctx.warn(
                    Some(node),
                    format!("FROM --platform flag should not use constant value {raw:?}"),
                    Some("https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"),
                );
            }
            options::to_pb(&p)
        }
        None => ctx.target_platform.clone(),
    };
    if name.eq_ignore_ascii_case("scratch") {
        let image = ImageSpec::empty(&platform.os, &platform.architecture, &platform.variant);
        return Ok(Base {
            source: BaseSource::Scratch,
            image,
            platform,
        });
    }
    if let Some(idx) = find_stage(&ctx.stages, &name, def.index) {
        let d = stages::dispatch(ctx, idx)?;
        let platform = if def.platform.is_some() {
            platform
        } else {
            d.platform.clone()
        };
        return Ok(Base {
            source: BaseSource::Stage(Box::new(d.state), d.args),
            image: d.image,
            platform,
        });
    }
    if let Some(value) = ctx.opts.named_contexts.get(&name).cloned() {
        let d = named_context(ctx, &name, &value, node, &platform)?;
        return Ok(Base {
            source: BaseSource::Named(Box::new(d.state)),
            image: d.image,
            platform: d.platform,
        });
    }
    let (pinned, image) = resolve_image(ctx, &name, &platform, node)?;
    Ok(Base {
        source: BaseSource::Image(pinned),
        image,
        platform,
    })
}

/// Creates the stage's starting state from its base (naming the image
/// source `[stage 1/N] FROM …`).
pub(crate) fn materialize(
    ctx: &Ctx<'_>,
    run: &mut StageRun,
    source: BaseSource,
    node: &Node,
) -> Result<(), FrontendError> {
    let platform = run.platform.clone();
    let state = match source {
        BaseSource::Scratch => State::scratch(),
        BaseSource::Stage(s, args) => {
            for (k, v) in args {
                run.declared.insert(k.clone());
                run.args.push((k, v));
            }
            *s
        }
        BaseSource::Named(s) => {
            run.prefix("");
            *s
        }
        BaseSource::Image(reference) => {
            let c = run.constraints(ctx, node, &format!("FROM {reference}"));
            image_state(ctx, &reference, &platform, &c, node)?
        }
    };
    let mut state = apply_config(state.platform(platform), &run.image);
    if let Some(mode) = ctx.opts.force_network {
        state = state.network(mode);
    }
    run.state = state;
    Ok(())
}

/// The stage, named context or image behind a `--from=` value.
pub(crate) fn from_source(
    ctx: &mut Ctx<'_>,
    value: &str,
    node: &Node,
    current: usize,
) -> Result<Dispatched, FrontendError> {
    let v = value.to_string();
    if v.is_empty() {
        return Err(ctx.err.at(node, "--from value is empty"));
    }
    let numeric = v.bytes().all(|b| b.is_ascii_digit());
    if let Some(idx) = find_stage(&ctx.stages, &v, ctx.stages.len()) {
        if idx >= current {
            let cur = ctx.stages[current]
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{current}"));
            return Err(ctx.err.at(
                node,
                format!("cannot copy from stage {v:?}, it needs to be defined before current stage {cur:?}"),
            ));
        }
        return stages::dispatch(ctx, idx);
    }
    if numeric {
        return Err(ctx.err.at(node, format!("invalid stage index {v}")));
    }
    let platform = ctx.target_platform.clone();
    if let Some(nc) = ctx.opts.named_contexts.get(&v).cloned() {
        return named_context(ctx, &v, &nc, node, &platform);
    }
    if let Some(d) = ctx.implicit.get(&v) {
        return Ok(d.clone());
    }
    let (pinned, image) = resolve_image_msg(ctx, &v, &platform).map_err(|m| {
        ctx.err.at(
            node,
            format!("--from={v} is neither a stage nor an image: {m}"),
        )
    })?;
    let c = Constraints::default().custom_name(format!("FROM {pinned}"));
    let state = image_state(ctx, &pinned, &platform, &c, node)?;
    let d = Dispatched {
        args: Vec::new(),
        state: apply_config(state, &image),
        image,
        platform,
    };
    ctx.implicit.insert(v, d.clone());
    Ok(d)
}

/// A `context:NAME` value as a stage result.
pub(crate) fn named_context(
    ctx: &mut Ctx<'_>,
    name: &str,
    value: &str,
    node: &Node,
    platform: &pb::Platform,
) -> Result<Dispatched, FrontendError> {
    if let Some(d) = ctx.named.get(name) {
        return Ok(d.clone());
    }
    let empty = || ImageSpec::empty(&platform.os, &platform.architecture, &platform.variant);
    let d = if let Some(reference) = value.strip_prefix("docker-image://") {
        let (pinned, image) = resolve_image(ctx, reference, platform, node)?;
        let c = Constraints::default().custom_name(format!("[context {name}] FROM {pinned}"));
        let state = image_state(ctx, &pinned, platform, &c, node)?;
        Dispatched {
            args: Vec::new(),
            state: apply_config(state, &image),
            image,
            platform: platform.clone(),
        }
    } else if let Some(reference) = value.strip_prefix("oci-layout://") {
        let state = builder::oci_layout(reference)
            .custom_name(format!("[context {name}] load {value}"))
            .platform(platform.clone())
            .state();
        let image = match ctx.resolver.resolve(value, &options::from_pb(platform)) {
            Ok(r) => ImageSpec::parse(&r.config).unwrap_or_else(|_| empty()),
            Err(_) => empty(),
        };
        Dispatched {
            args: Vec::new(),
            state: apply_config(state, &image),
            image,
            platform: platform.clone(),
        }
    } else if let Some(local) = value.strip_prefix("local:") {
        let state = builder::local(local)
            .shared_key_hint(local)
            .custom_name(format!("[context {name}] load from client"))
            .state();
        Dispatched {
            args: Vec::new(),
            state,
            image: empty(),
            platform: platform.clone(),
        }
    } else if let Some(stage) = value.strip_prefix("target:") {
        let idx = find_stage(&ctx.stages, stage, ctx.stages.len()).ok_or_else(|| {
            ctx.err
                .at(node, format!("named context {name}: no stage {stage:?}"))
        })?;
        stages::dispatch(ctx, idx)?
    } else if value.starts_with("input:") {
        return Err(ctx.err.at(
            node,
            format!("named context {name}={value}: input: contexts are not supported by kiln yet"),
        ));
    } else if value.starts_with("http://") || value.starts_with("https://") {
        if super::copy::is_git_url(value) {
            Dispatched {
                args: Vec::new(),
                state: super::copy::git_state(
                    value,
                    &format!("[context {name}] load git source {value}"),
                ),
                image: empty(),
                platform: platform.clone(),
            }
        } else {
            let state = builder::http(value)
                .custom_name(format!("[context {name}] load remote build context"))
                .state();
            Dispatched {
                args: Vec::new(),
                state,
                image: empty(),
                platform: platform.clone(),
            }
        }
    } else if super::copy::is_git_url(value) {
        Dispatched {
            args: Vec::new(),
            state: super::copy::git_state(
                value,
                &format!("[context {name}] load git source {value}"),
            ),
            image: empty(),
            platform: platform.clone(),
        }
    } else {
        return Err(ctx.err.at(
            node,
            format!("unsupported context source {value:?} for {name}"),
        ));
    };
    ctx.named.insert(name.to_string(), d.clone());
    Ok(d)
}
