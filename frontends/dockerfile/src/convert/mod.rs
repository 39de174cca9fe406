//! Dockerfile + frontend options → LLB `Definition` + OCI image config.
//!
//! This is kiln's counterpart of BuildKit's `dockerfile2llb`. The flow:
//!
//! 1. [`convert`] reads the frontend options ([`ConvertOptions`]), loads the
//!    Dockerfile from the `dockerfile` local and the `.dockerignore` patterns
//!    (from `<Dockerfile>.dockerignore` next to the Dockerfile, else from the
//!    `context` local; also those of `local:` named contexts), then calls
//!    [`dockerfile_to_llb`] once per target platform and reports warnings
//!    through the gateway.
//! 2. [`dockerfile_to_llb`] is pure: it parses the file ([`crate::parser`]),
//!    checks every instruction with the typed layer
//!    ([`crate::instructions::parse_dockerfile`]), splits the file into
//!    stages, evaluates the global `ARG`s, finds the stages the target needs
//!    and dispatches them in file order. Stages the target does not need
//!    never reach the graph (nor the image resolver), and independent stages
//!    stay independent in LLB.
//! 3. Each instruction family has its own file: `from` (base images, named
//!    contexts, `--from` sources), `run` (RUN and its mounts), `copy`
//!    (COPY/ADD), `meta` (ENV, LABEL, WORKDIR, CMD, …, ONBUILD) and `args`
//!    (ARG scoping, proxy args). `image` holds the image config model and
//!    its JSON form; `stages` the stage model, step names and lint checks
//!    over the whole file.
//!
//! Dispatch reads the parser's `Node`s directly (flags through a small
//! adapter in `flags`); the typed instruction layer is used for validation,
//! so its error messages are the ones users see for malformed instructions.
//!
//! Output is deterministic: no random IDs (locals carry
//! `local.sharedkeyhint`, not `local.unique`; progress groups are named
//! after the stage and step), sorted JSON keys, and images pinned to the
//! digest the resolver returned.

mod args;
mod copy;
mod dockerignore;
mod error;
mod flags;
mod from;
mod image;
mod inputs;
mod meta;
mod options;
mod run;
mod stages;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_frontend::llb::builder::{self, MarshalOptions, OpOptions, SourceMap, State};
use kiln_frontend::llb::pb;
use kiln_frontend::{BuildResult, FrontendError, Gateway, Location, Platform};

use crate::parser::{self, Ast, Node};

pub use dockerignore::parse_dockerignore;
pub use image::ImageSpec;
pub use options::{ConvertOptions, ImageResolveMode};

use error::ErrCtx;
use stages::StageDef;

/// What [`dockerfile_to_llb`] returns: the encoded `pb.Definition`, the
/// image config JSON and the warnings.
pub type Converted = (Vec<u8>, Vec<u8>, Vec<Warning>);

/// An image config as returned by an [`ImageResolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Manifest digest (`sha256:…`), pinned into the image source.
    pub digest: String,
    /// The image config JSON.
    pub config: Vec<u8>,
}

/// Resolves base image references to their config. The gateway implements
/// it in [`convert`]; tests use a fixed config.
pub trait ImageResolver {
    /// `reference` is normalised (`docker.io/library/busybox:latest`).
    fn resolve(&self, reference: &str, platform: &Platform)
    -> Result<ResolvedImage, FrontendError>;
}

/// A non-fatal finding, reported through [`Gateway::warn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The lint rule (`StageNameCasing`, …), when the finding is one.
    pub rule: Option<String>,
    /// One-line message.
    pub message: String,
    /// Longer explanation or documentation link.
    pub detail: Option<String>,
    /// Where in the Dockerfile.
    pub location: Option<Location>,
}

/// A lint finding of `rule`, with the rule's documentation link.
pub(crate) fn lint_warning(
    rule: &'static str,
    message: impl Into<String>,
    location: Option<Location>,
) -> Warning {
    let mut slug = String::new();
    let chars: Vec<char> = rule.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if i > 0 && c.is_ascii_uppercase() && (prev_lower || next_lower) {
            slug.push('-');
        }
        slug.push(c.to_ascii_lowercase());
    }
    Warning {
        rule: Some(rule.to_string()),
        message: message.into(),
        detail: Some(format!(
            "https://docs.docker.com/go/dockerfile/rule/{slug}/"
        )),
        location,
    }
}

/// The whole frontend: options and files from the gateway in, a result with
/// the image config out.
pub fn convert(gw: &dyn Gateway) -> Result<BuildResult, FrontendError> {
    let map = kiln_frontend::options_map(gw);
    let mut opts = ConvertOptions::from_options(&map)?;

    if let Some(url) = opts.remote_context.clone() {
        return convert_remote(gw, opts, &url);
    }
    // The Dockerfile (and a Dockerfile-specific ignore file) from the
    // `dockerfile` local.
    let ignore_name = format!("{}.dockerignore", opts.filename);
    let mut include = vec![opts.filename.clone(), ignore_name.clone()];
    if opts.filename == "Dockerfile" {
        include.push("dockerfile".to_string());
    }
    let df_state = builder::local(opts.dockerfile_local.clone())
        .include_patterns(include.clone())
        .follow_paths(include)
        .differ("none", false)
        .shared_key_hint(opts.dockerfile_local.clone())
        .custom_name(format!(
            "[internal] load build definition from {}",
            opts.filename
        ))
        .state();
    let df_def = df_state
        .marshal(&MarshalOptions::default())
        .map_err(|e| FrontendError::new(format!("marshaling the dockerfile source: {e}")))?;
    let df_bytes = encode_def(&df_def);
    let df_handle = gw.solve(&df_bytes, true)?;
    let source = match gw.read_file(&df_handle, &opts.filename, 0, None) {
        Ok(s) => s,
        Err(first) if opts.filename == "Dockerfile" => gw
            .read_file(&df_handle, "dockerfile", 0, None)
            .map_err(|_| {
                FrontendError::new(format!("failed to read dockerfile: {}", first.message))
            })?,
        Err(e) => {
            return Err(FrontendError::new(format!(
                "failed to read dockerfile: {}",
                e.message
            )));
        }
    };

    let ignore = match gw.read_file(&df_handle, &ignore_name, 0, None) {
        Ok(data) => Some(data),
        Err(_) => {
            let ctx = builder::local(opts.context_local.clone())
                .include_patterns(vec![".dockerignore".to_string()])
                .follow_paths(vec![".dockerignore".to_string()])
                .differ("none", false)
                .shared_key_hint(format!("{}-.dockerignore", opts.context_local))
                .custom_name("[internal] load .dockerignore")
                .state();
            let def = ctx
                .marshal(&MarshalOptions::default())
                .map_err(|e| FrontendError::new(format!("marshaling the context source: {e}")))?;
            let def = inputs::splice(def, &opts.inputs)?;
            let bytes = encode_def(&def);
            let h = gw.solve(&bytes, true)?;
            gw.read_file(&h, ".dockerignore", 0, None).ok()
        }
    };
    if let Some(data) = ignore {
        opts.dockerignore = parse_dockerignore(&String::from_utf8_lossy(&data));
    }
    opts.dockerfile_definition = Some(df_def);
    finish(gw, opts, &source)
}

/// Whether the first bytes of a file are an archive ADD would unpack.
fn is_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar")
}

/// `context=URL`: the build context is a git repository or an http(s)
/// resource instead of the context local. An archive is unpacked into the
/// context; any other file is the Dockerfile itself, with an empty
/// context (as `docker build URL` does).
fn convert_remote(
    gw: &dyn Gateway,
    mut opts: ConvertOptions,
    url: &str,
) -> Result<BuildResult, FrontendError> {
    let solve = |st: &State| -> Result<(pb::Definition, String), FrontendError> {
        let def = st
            .marshal(&MarshalOptions::default())
            .map_err(|e| FrontendError::new(format!("marshaling the context source: {e}")))?;
        let h = gw.solve(&encode_def(&def), true)?;
        Ok((def, h))
    };
    let read_df = |h: &String| {
        gw.read_file(h, &opts.filename, 0, None).map_err(|e| {
            FrontendError::new(format!(
                "failed to read dockerfile {} from {url}: {}",
                opts.filename, e.message
            ))
        })
    };
    let (context, def, source) = if copy::is_git_url(url) {
        let st = copy::git_state(url, &format!("[internal] load git source {url}"));
        let (def, h) = solve(&st)?;
        let source = read_df(&h)?;
        (st, def, source)
    } else {
        let file = builder::http(url)
            .filename("context")
            .custom_name(format!("[internal] load remote build context {url}"))
            .state();
        let (def, h) = solve(&file)?;
        let head = gw.read_file(&h, "context", 0, Some(512))?;
        if is_archive(&head) {
            let st = State::scratch().file_with(
                builder::copy(
                    &file,
                    "/context",
                    "/",
                    builder::CopyOptions {
                        attempt_unpack: true,
                        create_dest_path: true,
                        ..Default::default()
                    },
                ),
                builder::Constraints::default()
                    .custom_name("[internal] unpack remote build context"),
            );
            let (def, h) = solve(&st)?;
            let source = read_df(&h)?;
            (st, def, source)
        } else {
            let source = gw.read_file(&h, "context", 0, None)?;
            (State::scratch(), def, source)
        }
    };
    opts.context_override = Some(context);
    opts.dockerfile_definition = Some(def);
    finish(gw, opts, &source)
}

/// Everything after the Dockerfile is read: named contexts' ignore files,
/// then one conversion per target platform.
fn finish(
    gw: &dyn Gateway,
    mut opts: ConvertOptions,
    source: &[u8],
) -> Result<BuildResult, FrontendError> {
    let source = source.to_vec();
    opts.inputs = gw.inputs().into_iter().collect();

    // `.dockerignore` of `local:` named contexts.
    let named: Vec<(String, String)> = opts
        .named_contexts
        .iter()
        .filter_map(|(k, v)| v.strip_prefix("local:").map(|l| (k.clone(), l.to_string())))
        .collect();
    for (name, local) in named {
        let st = builder::local(local.clone())
            .include_patterns(vec![".dockerignore".to_string()])
            .shared_key_hint(format!("context:{name}-.dockerignore"))
            .custom_name(format!("[context {name}] load .dockerignore"))
            .differ("none", false)
            .state();
        let def = st
            .marshal(&MarshalOptions::default())
            .map_err(|e| FrontendError::new(format!("marshaling the {local} source: {e}")))?;
        let h = gw.solve(&encode_def(&def), true)?;
        if let Ok(data) = gw.read_file(&h, ".dockerignore", 0, None) {
            opts.named_dockerignore
                .insert(local, parse_dockerignore(&String::from_utf8_lossy(&data)));
        }
    }

    let resolver = GatewayResolver {
        gw,
        mode: opts.image_resolve_mode.as_str(),
    };
    let platforms = opts.platforms.clone();
    let multi = platforms.len() > 1 || opts.multi_platform;
    let mut result = BuildResult::default();
    let mut reported: BTreeSet<(String, Option<u32>)> = BTreeSet::new();
    let targets: Vec<Option<Platform>> = if platforms.is_empty() {
        vec![None]
    } else {
        platforms.into_iter().map(Some).collect()
    };
    for p in targets {
        let mut o = opts.clone();
        o.target_platform = p.clone();
        let (def, config, warnings) = dockerfile_to_llb(&source, &o, &resolver)?;
        for w in warnings {
            // One report per finding, even when several platforms see it.
            let text = match &w.rule {
                Some(rule) => format!("{rule}: {}", w.message),
                None => w.message.clone(),
            };
            let key = (text.clone(), w.location.as_ref().map(|l| l.start_line));
            if !reported.contains(&key) {
                gw.warn(&text, w.detail.as_deref(), w.location.as_ref());
                reported.insert(key);
            }
        }
        let handle = gw.solve(&def, false)?;
        match p {
            Some(p) if multi => {
                let key = p.format();
                result.refs.push((key.clone(), handle));
                result
                    .metadata
                    .push((format!("containerimage.config/{key}"), config));
            }
            _ => {
                result.refs.push((String::new(), handle));
                result
                    .metadata
                    .push(("containerimage.config".to_string(), config));
            }
        }
    }
    Ok(result)
}

struct GatewayResolver<'a> {
    gw: &'a dyn Gateway,
    mode: &'static str,
}

impl ImageResolver for GatewayResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, FrontendError> {
        let c = self
            .gw
            .resolve_image_config(reference, Some(platform), self.mode)?;
        Ok(ResolvedImage {
            digest: c.digest,
            config: c.config,
        })
    }
}

/// The stage index a name refers to: a stage name (case-insensitive) or a
/// stage number.
pub(crate) fn find_stage(stages: &[StageDef], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    if let Some(i) = stages[..before.min(stages.len())]
        .iter()
        .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(i);
    }
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse::<usize>()
            .ok()
            .filter(|i| *i < before.min(stages.len()));
    }
    None
}

/// A dispatched stage: its filesystem state and image config.
#[derive(Clone, Debug)]
pub(crate) struct Dispatched {
    pub state: State,
    pub image: ImageSpec,
    pub platform: pb::Platform,
    /// Args declared in the stage (with values); stages built on this one
    /// inherit them, as in BuildKit.
    pub args: Vec<(String, String)>,
}

/// Conversion state shared by all stages.
pub(crate) struct Ctx<'a> {
    pub opts: &'a ConvertOptions,
    pub resolver: &'a dyn ImageResolver,
    pub ast: &'a Ast,
    pub err: ErrCtx,
    pub source_map: Arc<SourceMap>,
    pub warnings: Vec<Warning>,
    pub stages: Vec<StageDef>,
    pub done: Vec<Option<Dispatched>>,
    pub in_progress: Vec<bool>,
    /// Images used by `--from` that are not stages, by reference.
    pub implicit: BTreeMap<String, Dispatched>,
    /// Named contexts already turned into states, by name.
    pub named: BTreeMap<String, Dispatched>,
    pub context: Option<State>,
    /// Global `ARG`s with values (before the first `FROM`).
    pub global_args: Vec<(String, String)>,
    /// Build args some `ARG` declared.
    pub used_build_args: BTreeSet<String>,
    pub target_platform: pb::Platform,
    pub build_platform: pb::Platform,
    /// Number of stages in the file (stage names are only printed with 2+).
    pub stage_count: usize,
    /// Stages being dispatched right now (nesting depth).
    pub depth: usize,
}

impl Ctx<'_> {
    /// The build context local, created on first use.
    pub fn context_state(&mut self) -> State {
        if let Some(s) = &self.context {
            return s.clone();
        }
        let mut l = builder::local(self.opts.context_local.clone())
            .shared_key_hint(self.opts.context_local.clone())
            .custom_name("[internal] load build context");
        if !self.opts.dockerignore.is_empty() {
            l = l.exclude_patterns(self.opts.dockerignore.clone());
        }
        let s = l.state();
        self.context = Some(s.clone());
        s
    }

    /// Records a warning at a node.
    pub fn warn(&mut self, node: Option<&Node>, message: impl Into<String>, detail: Option<&str>) {
        self.warnings.push(Warning {
            rule: None,
            message: message.into(),
            detail: detail.map(str::to_string),
            location: node.map(|n| self.err.location(n)),
        });
    }

    /// Records a lint finding at a node.
    pub fn lint(&mut self, node: &Node, rule: &'static str, message: impl Into<String>) {
        let w = lint_warning(rule, message, Some(self.err.location(node)));
        self.warnings.push(w);
    }

    /// Source location ranges of a node.
    pub fn ranges(node: &Node) -> Vec<pb::Range> {
        vec![pb::Range {
            start: Some(pb::Position {
                line: node.start_line as i32,
                character: 0,
            }),
            end: Some(pb::Position {
                line: node.end_line as i32,
                character: 0,
            }),
        }]
    }

    /// Adds the source location of `node` to an op.
    pub fn located<T: OpOptions>(&self, op: T, node: &Node) -> T {
        if node.start_line == 0 {
            return op;
        }
        op.source_location(&self.source_map, Self::ranges(node))
    }
}

/// Converts a Dockerfile to an encoded LLB `Definition`, the image config
/// JSON of the target stage and the warnings found on the way.
pub fn dockerfile_to_llb(
    source: &[u8],
    opts: &ConvertOptions,
    resolver: &dyn ImageResolver,
) -> Result<Converted, FrontendError> {
    let err = ErrCtx::new(&opts.filename, source);
    if source.is_empty() {
        return Err(FrontendError::new("the Dockerfile cannot be empty"));
    }
    let ast = parser::parse(source).map_err(|e| err.parse(&e))?;
    let mut warnings: Vec<Warning> = ast
        .warnings
        .iter()
        .map(|w| {
            lint_warning(
                "NoEmptyContinuation",
                w.short.clone(),
                Some(Location::line(opts.filename.clone(), w.line as u32)),
            )
        })
        .collect();
    if let Some(syntax) = ast.directive("syntax") {
        let image = syntax.split_whitespace().next().unwrap_or_default();
        let builtin = image.starts_with("docker/dockerfile")
            || image.starts_with("docker.io/docker/dockerfile");
        if !builtin {
            warnings.push(Warning {
                rule: None,
                message: format!(
                    "syntax directive {image:?} is ignored: the built-in Dockerfile frontend is used"
                ),
                detail: None,
                location: ast
                    .directives
                    .iter()
                    .find(|d| d.name == "syntax")
                    .map(|d| Location::line(opts.filename.clone(), d.line as u32)),
            });
        }
    }
    let (meta_args, stage_defs) = stages::split(&ast, &err, &mut warnings)?;

    let build_platform = options::to_pb(&opts.build_platform);
    let target_platform = opts
        .target_platform
        .as_ref()
        .map(options::to_pb)
        .unwrap_or_else(|| build_platform.clone());
    let source_map = Arc::new(SourceMap {
        filename: opts.filename.clone(),
        language: "Dockerfile".to_string(),
        data: source.to_vec(),
        definition: opts.dockerfile_definition.clone(),
    });
    let n = stage_defs.len();
    let stage_count = n + stages::implicit_refs(&stage_defs);
    let mut ctx = Ctx {
        opts,
        resolver,
        ast: &ast,
        err,
        source_map,
        warnings,
        stages: stage_defs,
        done: vec![None; n],
        in_progress: vec![false; n],
        implicit: BTreeMap::new(),
        named: BTreeMap::new(),
        context: opts.context_override.clone(),
        global_args: Vec::new(),
        used_build_args: BTreeSet::new(),
        target_platform,
        build_platform,
        stage_count,
        depth: 0,
    };
    args::eval_global(&mut ctx, &meta_args)?;

    let target = match &opts.target {
        Some(t) if !t.is_empty() => find_stage(&ctx.stages, t, n)
            .ok_or_else(|| FrontendError::new(format!("target stage {t:?} could not be found")))?,
        _ => n - 1,
    };
    let need = stages::needed(&ctx, target);
    for (i, needed) in need.iter().enumerate().take(target) {
        if *needed {
            stages::dispatch(&mut ctx, i)?;
        }
    }
    let out = stages::dispatch(&mut ctx, target)?;

    // Unused build args, like BuildKit's "were not consumed" warning.
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !ctx.used_build_args.contains(*k) && !args::is_builtin_arg(k))
        .collect();
    if !unused.is_empty() {
        let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        ctx.warn(
            None,
            format!(
                "one or more build args were not consumed: [{}]",
                names.join(" ")
            ),
            None,
        );
    }

    apply_check_config(&ast, opts, &mut ctx.warnings)?;

    let mut image = out.image.clone();
    if let Some(p) = &opts.target_platform {
        let same = image.os == p.os && image.architecture == p.architecture;
        image.os = p.os.clone();
        image.architecture = p.architecture.clone();
        if p.variant.is_some() || !same {
            image.variant = p.variant.clone().unwrap_or_default();
        }
    }
    for (k, v) in &opts.labels {
        image.config.labels.insert(k.clone(), v.clone());
    }
    let mut marshal = MarshalOptions {
        platform: Some(ctx.target_platform.clone()),
        default_path: builder::DefaultPath::ClientSets,
        ..Default::default()
    };
    marshal.metadata = pb::OpMetadata::default();
    let def = out
        .state
        .marshal(&marshal)
        .map_err(|e| FrontendError::new(format!("marshaling LLB: {e}")))?;
    let def = inputs::splice(def, &opts.inputs)?;
    let bytes = encode_def(&def);
    let config = image.to_json();
    Ok((bytes, config, ctx.warnings))
}

/// Applies `# check=` (or `build-arg:BUILDKIT_DOCKERFILE_CHECK`): skipped
/// rules are dropped; with `error=true` remaining lint findings fail the
/// conversion.
fn apply_check_config(
    ast: &Ast,
    opts: &ConvertOptions,
    warnings: &mut Vec<Warning>,
) -> Result<(), FrontendError> {
    let cfg = match opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(v) => Some(parser::CheckConfig::parse(v)),
        None => ast.check_config(),
    };
    let Some(cfg) = cfg else {
        return Ok(());
    };
    let cfg = cfg.map_err(|e| FrontendError::new(format!("failed to parse check options: {e}")))?;
    warnings.retain(|w| match &w.rule {
        Some(rule) => !cfg.skip_all && !cfg.skip.iter().any(|s| s == rule),
        None => true,
    });
    if cfg.error {
        let mut rules: Vec<&str> = Vec::new();
        for w in warnings.iter() {
            if let Some(r) = &w.rule
                && !rules.contains(&r.as_str())
            {
                rules.push(r);
            }
        }
        if !rules.is_empty() {
            return Err(FrontendError::new(format!(
                "lint violation found for rules: {}",
                rules.join(", ")
            )));
        }
    }
    Ok(())
}

/// The wire bytes of a definition (a scratch result has no ops, which the
/// checked [`kiln_frontend::llb::Definition`] type does not represent).
fn encode_def(def: &pb::Definition) -> Vec<u8> {
    prost::Message::encode_to_vec(def)
}
