//! The frontend's flow against the gateway: read the inputs, detect group
//! by group, build buildpack by buildpack (each step solved and read back),
//! then return the export graph and the image config.
//!
//! `inputs` reads `project.toml`, the order and the buildpack descriptors;
//! `detect_phase` and `build_phase` run the two phases; `readback` reads
//! what detect and build left in their outputs.

mod build_phase;
mod detect_phase;
mod inputs;
mod readback;

use std::collections::BTreeMap;

use kiln_frontend::llb::builder::{MarshalOptions, OpOptions, State, local};
use kiln_frontend::llb::pb;
use kiln_frontend::{BuildResult, FrontendError, Gateway};
use serde_json::Value;

use crate::descriptor::ImageTarget;
use crate::env::Env;
use crate::image::{self, ImageInputs, RunImage};
use crate::layers::{self, Process};
use crate::options::{BUILDPACKS_LOCAL, Options, OrderSource};
use crate::order::{self, Candidate};
use crate::project;
use crate::steps::{self, Runner};

use build_phase::Built;
use inputs::{GwCatalog, read_order, read_project};

pub(crate) fn marshal(st: &State, platform: &pb::Platform) -> Result<Vec<u8>, FrontendError> {
    let opts = MarshalOptions {
        platform: Some(platform.clone()),
        ..Default::default()
    };
    let def = st
        .marshal(&opts)
        .map_err(|e| FrontendError::new(format!("marshaling LLB: {e}")))?;
    Ok(prost::Message::encode_to_vec(&def))
}

pub(crate) fn solve(
    gw: &dyn Gateway,
    st: &State,
    platform: &pb::Platform,
) -> Result<String, FrontendError> {
    gw.solve(&marshal(st, platform)?, true)
}

/// A resolved image: its config and source state.
struct Resolved {
    reference: String,
    digest: String,
    config: Value,
    state: State,
}

fn resolve_image(gw: &dyn Gateway, reference: &str, what: &str) -> Result<Resolved, FrontendError> {
    let ic = gw
        .resolve_image_config(reference, None, "default")
        .map_err(|e| FrontendError::new(format!("{what} {reference}: {}", e.message)))?;
    let config: Value = serde_json::from_slice(&ic.config).map_err(|e| {
        FrontendError::new(format!(
            "{what} {reference}: the image config is not JSON: {e}"
        ))
    })?;
    let state = steps::image_state(reference, &ic.digest)?;
    Ok(Resolved {
        reference: reference.to_string(),
        digest: ic.digest,
        config,
        state,
    })
}

fn target_of(config: &Value) -> ImageTarget {
    let s = |k: &str| {
        config
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    ImageTarget {
        os: s("os"),
        arch: s("architecture"),
        variant: s("variant"),
        distro_name: image::label_of(config, "io.buildpacks.base.distro.name"),
        distro_version: image::label_of(config, "io.buildpacks.base.distro.version"),
    }
}

fn target_env(t: &ImageTarget) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "CNB_TARGET_OS".to_string(),
            if t.os.is_empty() {
                "linux".into()
            } else {
                t.os.clone()
            },
        ),
        (
            "CNB_TARGET_ARCH".to_string(),
            if t.arch.is_empty() {
                "amd64".into()
            } else {
                t.arch.clone()
            },
        ),
    ];
    for (k, val) in [
        ("CNB_TARGET_ARCH_VARIANT", &t.variant),
        ("CNB_TARGET_DISTRO_NAME", &t.distro_name),
        ("CNB_TARGET_DISTRO_VERSION", &t.distro_version),
    ] {
        if !val.is_empty() {
            v.push((k.to_string(), val.clone()));
        }
    }
    v
}

fn platform_of(config: &Value) -> pb::Platform {
    let t = target_of(config);
    kiln_frontend::llb::builder::platform(
        if t.os.is_empty() { "linux" } else { &t.os },
        if t.arch.is_empty() { "amd64" } else { &t.arch },
        &t.variant,
    )
}

/// The build user from `CNB_USER_ID`/`CNB_GROUP_ID` of the build image.
fn cnb_user(env: &Env) -> Option<(u32, u32)> {
    let uid = env.get("CNB_USER_ID")?.trim().parse().ok()?;
    let gid = env
        .get("CNB_GROUP_ID")
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or(uid);
    Some((uid, gid))
}

fn group_label(g: &[Candidate]) -> String {
    g.iter()
        .map(|c| {
            format!(
                "{}{}",
                c.bp.key(),
                if c.optional { " (optional)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the detect and build phases share.
pub(crate) struct Cx<'a> {
    /// The gateway.
    pub gw: &'a dyn Gateway,
    /// Parsed options.
    pub opts: &'a Options,
    /// Build image, user and network of every exec.
    pub runner: Runner,
    /// Platform of every op (the build image's).
    pub platform: pb::Platform,
    /// Platform env (`project.toml`, then `env:` options), by name.
    pub platform_env: Vec<(String, String)>,
    /// The build image's env, filtered to what reaches buildpacks.
    pub base_env: Env,
    /// `CNB_TARGET_*`.
    pub target_env: Vec<(String, String)>,
    /// The run image's target.
    pub run_target: ImageTarget,
    /// The app as given (after include/exclude).
    pub app0: State,
    /// The platform dir.
    pub platform_st: State,
}

/// The whole frontend.
pub fn run(gw: &dyn Gateway) -> Result<BuildResult, FrontendError> {
    let opts = Options::parse(&kiln_frontend::options_map(gw))?;

    // Images first: their platform is the platform of every op.
    let build_img = resolve_image(gw, &opts.build_image, "build image")?;
    let run_img = if opts.run_image == opts.build_image {
        Resolved {
            reference: build_img.reference.clone(),
            digest: build_img.digest.clone(),
            config: build_img.config.clone(),
            state: build_img.state.clone(),
        }
    } else {
        resolve_image(gw, &opts.run_image, "run image")?
    };
    let platform = platform_of(&build_img.config);
    let run_target = target_of(&run_img.config);
    let build_env_full = image::env_of(&build_img.config);
    let owner = cnb_user(&build_env_full);
    let runner = Runner {
        build: build_img.state.clone(),
        user: owner.map(|(u, g)| format!("{u}:{g}")).unwrap_or_default(),
        owner,
        network_host: opts.network_host,
    };

    // project.toml, platform env.
    let project = read_project(gw, &platform)?;
    for w in &project.warnings {
        gw.warn(w, None, None);
    }
    let mut platform_env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in project.env.iter().chain(opts.env.iter()) {
        platform_env.insert(k.clone(), v.clone());
    }
    let platform_env: Vec<(String, String)> = platform_env.into_iter().collect();

    // Buildpacks and the order.
    let mut include = vec!["*/*/buildpack.toml".to_string()];
    if let OrderSource::File(p) = &opts.order {
        include.push(p.clone());
    }
    let meta = local(BUILDPACKS_LOCAL)
        .include_patterns(include)
        .shared_key_hint(format!("{BUILDPACKS_LOCAL}-descriptors"))
        .custom_name("[buildpacks] load buildpack descriptors")
        .state();
    let meta_h = solve(gw, &meta, &platform)?;
    let mut catalog = GwCatalog {
        gw,
        handle: meta_h.clone(),
        loaded: BTreeMap::new(),
    };
    let (order, use_prepost) = if !opts.buildpacks.is_empty() {
        (vec![opts.buildpacks.clone()], false)
    } else if !project.group.is_empty() && !opts.order_given {
        (vec![project.group.clone()], false)
    } else {
        (read_order(gw, &opts, &meta_h)?, true)
    };
    let (pre, post) = if use_prepost {
        (project.pre.clone(), project.post.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    let groups = order::expand(&order, &pre, &post, &mut catalog)?;

    // App and platform states.
    let app0 = steps::app_state(
        &runner,
        project::gitignore_to_patterns(&project.include),
        project::gitignore_to_patterns(&project.exclude),
    );
    let platform_st = steps::platform_state(&platform_env);
    let base_env = build_env_full.filtered_for_build();
    let tenv = target_env(&run_target);

    let cx = Cx {
        gw,
        opts: &opts,
        runner,
        platform,
        platform_env,
        base_env,
        target_env: tenv,
        run_target,
        app0,
        platform_st,
    };
    let (group, resolved) = detect_phase::detect_groups(&cx, &groups)?;
    let cache_ns = opts
        .cache_id
        .clone()
        .or_else(|| (!project.id.is_empty()).then(|| project.id.clone()))
        .unwrap_or_else(|| "default".into());
    let Built {
        outputs,
        layer_states,
        app,
    } = build_phase::build_group(&cx, &group, &resolved, &cache_ns)?;
    let platform = cx.platform.clone();

    // Export.
    let per_bp: Vec<Vec<Process>> = outputs.iter().map(|o| o.launch.processes.clone()).collect();
    let (processes, mut default) = layers::merge_processes(&per_bp);
    if let Some(p) = &opts.process_type {
        if !processes.iter().any(|q| &q.kind == p) {
            return Err(FrontendError::new(format!(
                "option process-type={p}: no buildpack declared that process (declared: {})",
                processes
                    .iter()
                    .map(|q| q.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        default = Some(p.clone());
    }
    if default.is_none() {
        gw.warn(
            "no default process: the image keeps the run image's entrypoint; pick one with --opt process-type=TYPE",
            None,
            None,
        );
    }
    let group_info: Vec<(String, String, String, String)> = resolved
        .members
        .iter()
        .map(|&i| {
            let b = &group[i].bp;
            (
                b.id.clone(),
                b.version.clone(),
                b.homepage.clone(),
                b.api.to_string(),
            )
        })
        .collect();
    let run = RunImage {
        reference: run_img.reference.clone(),
        digest: run_img.digest.clone(),
        config: run_img.config.clone(),
    };
    let inputs = ImageInputs {
        run: &run,
        outputs: &outputs,
        group: &group_info,
        processes: &processes,
        default_process: default.as_deref(),
        project_metadata: project.metadata_json(),
        extra_labels: &opts.labels,
    };
    let launch_env = layers::launch_env(&run.env(), &outputs, default.as_deref());
    let config = image::image_config(&inputs, &launch_env);
    let final_state = steps::final_image(
        &run_img.state,
        &layer_states,
        &steps::export_app(&app),
        &steps::config_layer(&image::metadata_toml(&inputs)),
    );
    let def = marshal(&final_state, &platform)?;
    let handle = gw.solve(&def, false)?;
    Ok(BuildResult::single(handle).with_image_config(config))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod flow_tests;
