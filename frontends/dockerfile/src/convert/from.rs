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
        ctx.lint(
            node,
            "UndefinedArgInFrom",
            format!("FROM argument '{missing}' is not declared"),
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
            if raw.trim() == "$TARGETPLATFORM" || raw.trim() == "${TARGETPLATFORM}" {
                ctx.lint(
                    node,
                    "RedundantTargetPlatform",
                    format!("Setting platform to predefined {} in FROM is redundant as this is the default behavior", raw.trim()),
                );
            }
            if !raw.contains('$') {
                ctx.lint(
                    node,
                    "FromPlatformFlagConstDisallowed",
                    format!("FROM --platform flag should not use constant value {raw:?}"),
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
    if let Some((key, value)) = lookup_named(ctx, &name, &platform) {
        let d = named_context(ctx, &key, &value, node, &platform)?;
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
            // `no-cache` does not re-pull base images (that is
            // `image-resolve-mode=pull`), so the source keeps its cache.
            let ignore = std::mem::replace(&mut run.ignore_cache, false);
            let c = run.constraints(ctx, node, &format!("FROM {reference}"));
            run.ignore_cache = ignore;
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
    if let Some((key, nc)) = lookup_named(ctx, &v, &platform) {
        return named_context(ctx, &key, &nc, node, &platform);
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

/// The `context:NAME` option for `name`: the platform-specific
/// `context:NAME::os/arch` first, then `context:NAME`. `scratch` and
/// `context` are never named contexts.
pub(crate) fn lookup_named(
    ctx: &Ctx<'_>,
    name: &str,
    platform: &pb::Platform,
) -> Option<(String, String)> {
    if name.eq_ignore_ascii_case("scratch") || name.eq_ignore_ascii_case("context") {
        return None;
    }
    let with_platform = format!("{name}::{}", options::from_pb(platform).format());
    for key in [with_platform.as_str(), name] {
        if let Some(v) = ctx.opts.named_contexts.get(key) {
            return Some((key.to_string(), v.clone()));
        }
    }
    None
}

/// A `context:NAME` value as a stage result. `name` is the option key
/// (`NAME` or `NAME::os/arch`).
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
    let plain = |state: State| Dispatched {
        args: Vec::new(),
        state,
        image: empty(),
        platform: platform.clone(),
    };
    let Some((scheme, rest)) = value.split_once(':') else {
        return Err(ctx.err.at(
            node,
            format!("invalid context specifier {value} for {name}"),
        ));
    };
    let scheme = if scheme.starts_with("git@") {
        "git"
    } else {
        scheme
    };
    let d = match scheme {
        "docker-image" => {
            let reference = rest.trim_start_matches("//");
            if reference == "scratch" {
                plain(State::scratch())
            } else {
                let (pinned, mut image) = resolve_image(ctx, reference, platform, node)?;
                image.created = None;
                let c = Constraints::default().custom_name(format!("[context {name}] {reference}"));
                let state = image_state(ctx, &pinned, platform, &c, node)?;
                Dispatched {
                    args: Vec::new(),
                    state: apply_config(state, &image),
                    image,
                    platform: platform.clone(),
                }
            }
        }
        "oci-layout" => {
            let spec = rest.trim_start_matches("//");
            let Some((store, digest)) = spec.split_once('@') else {
                return Err(ctx
                    .err
                    .at(node, format!("oci-layout reference {spec:?} has no digest")));
            };
            let store = store.split(':').next().unwrap_or(store);
            let base = builder::normalize_image_ref(name.split("::").next().unwrap_or(name))
                .map_err(|e| {
                    ctx.err.at(
                        node,
                        format!("could not parse oci-layout reference {name:?}: {e}"),
                    )
                })?;
            let base = base
                .rsplit_once(':')
                .filter(|(n, _)| !n.ends_with('/') && !n.contains('@'))
                .map_or(base.clone(), |(n, _)| n.to_string());
            let dummy = format!("{base}@{digest}");
            let image = match ctx.resolver.resolve(&dummy, &options::from_pb(platform)) {
                Ok(r) => ImageSpec::parse(&r.config).unwrap_or_else(|_| empty()),
                Err(_) => empty(),
            };
            let state = builder::oci_layout(dummy)
                .store_id(store)
                .custom_name(format!("[context {name}] OCI load from client"))
                .platform(platform.clone())
                .state();
            Dispatched {
                args: Vec::new(),
                state: apply_config(state, &image),
                image,
                platform: platform.clone(),
            }
        }
        "local" => {
            let mut l = builder::local(rest)
                .shared_key_hint(format!("context:{name}-"))
                .custom_name(format!("[context {name}] load from client"));
            if let Some(ex) = ctx
                .opts
                .named_dockerignore
                .get(rest)
                .filter(|e| !e.is_empty())
            {
                l = l.exclude_patterns(ex.clone());
            }
            plain(l.state())
        }
        "target" => {
            let idx = find_stage(&ctx.stages, rest, ctx.stages.len()).ok_or_else(|| {
                ctx.err
                    .at(node, format!("named context {name}: no stage {rest:?}"))
            })?;
            stages::dispatch(ctx, idx)?
        }
        "input" => {
            if !ctx.opts.inputs.contains_key(rest) {
                return Err(ctx.err.at(node, format!("invalid input {rest} for {name}")));
            }
            let image = super::inputs::input_image(ctx.opts.input_metadata.get(rest))
                .map_err(|e| ctx.err.at(node, e))?;
            match image {
                Some(image) => Dispatched {
                    args: Vec::new(),
                    state: apply_config(super::inputs::placeholder(rest), &image),
                    image,
                    platform: platform.clone(),
                },
                None => plain(super::inputs::placeholder(rest)),
            }
        }
        "git" => plain(super::copy::git_state(
            value,
            &format!("[context {name}] load git source {value}"),
        )),
        "http" | "https" if super::copy::is_git_url(value) => plain(super::copy::git_state(
            value,
            &format!("[context {name}] load git source {value}"),
        )),
        "http" | "https" => plain(
            builder::http(value)
                .filename("context")
                .custom_name(format!("[context {name}] {value}"))
                .state(),
        ),
        other => {
            return Err(ctx.err.at(
                node,
                format!("unsupported context source {other} for {name}"),
            ));
        }
    };
    ctx.named.insert(name.to_string(), d.clone());
    Ok(d)
}
