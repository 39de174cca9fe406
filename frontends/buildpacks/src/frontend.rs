//! The frontend's flow against the gateway: read the inputs, detect group
//! by group, build buildpack by buildpack (each step solved and read back),
//! then return the export graph and the image config.

use std::collections::BTreeMap;
use std::rc::Rc;

use kiln_frontend::llb::builder::{
    Constraints, MarshalOptions, OpOptions, State, local, merge_with,
};
use kiln_frontend::llb::pb;
use kiln_frontend::{BuildResult, FileStat, FrontendError, Gateway};
use serde_json::Value;

use crate::descriptor::{self, Buildpack, GroupEntry, ImageTarget, Order, escape_id};
use crate::detect::{self, Member, Outcome};
use crate::env::Env;
use crate::image::{self, ImageInputs, RunImage};
use crate::layers::{self, BuildOutput, Layer, Process};
use crate::options::{BUILDPACKS_LOCAL, CONTEXT_LOCAL, Options, OrderSource};
use crate::order::{self, Candidate, Catalog};
use crate::project::{self, PROJECT_TOML, Project};
use crate::steps::{self, Contract, Runner};

/// Longest log tail put into an error message.
const LOG_TAIL: usize = 4000;

fn marshal(st: &State, platform: &pb::Platform) -> Result<Vec<u8>, FrontendError> {
    let opts = MarshalOptions {
        platform: Some(platform.clone()),
        ..Default::default()
    };
    let def = st
        .marshal(&opts)
        .map_err(|e| FrontendError::new(format!("marshaling LLB: {e}")))?;
    Ok(prost::Message::encode_to_vec(&def))
}

fn solve(gw: &dyn Gateway, st: &State, platform: &pb::Platform) -> Result<String, FrontendError> {
    gw.solve(&marshal(st, platform)?, true)
}

fn read_text(gw: &dyn Gateway, h: &str, path: &str) -> Result<String, FrontendError> {
    let data = gw.read_file(h, path, 0, None)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

fn list(gw: &dyn Gateway, h: &str, path: &str) -> Vec<FileStat> {
    let mut v = gw.read_dir(h, path, None).unwrap_or_default();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn tail(log: &str) -> String {
    let t = log.trim_end();
    if t.len() <= LOG_TAIL {
        return t.to_string();
    }
    let mut start = t.len() - LOG_TAIL;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &t[start..])
}

/// Looks buildpacks up in the `buildpacks` local.
struct GwCatalog<'a> {
    gw: &'a dyn Gateway,
    handle: String,
    loaded: BTreeMap<(String, String), Rc<Buildpack>>,
}

impl Catalog for GwCatalog<'_> {
    fn buildpack(&mut self, e: &GroupEntry) -> Result<Rc<Buildpack>, FrontendError> {
        let esc = escape_id(&e.id);
        let version = match &e.version {
            Some(v) => v.clone(),
            None => {
                let mut versions: Vec<String> = list(self.gw, &self.handle, &esc)
                    .into_iter()
                    .filter(|s| s.is_dir())
                    .map(|s| s.path.rsplit('/').next().unwrap_or("").to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                versions.sort_by(|a, b| descriptor::compare_versions(a, b));
                versions.pop().ok_or_else(|| {
                    FrontendError::new(format!(
                        "buildpack {} is not in the buildpacks context (expected {esc}/<version>/buildpack.toml)",
                        e.id
                    ))
                })?
            }
        };
        if let Some(bp) = self.loaded.get(&(e.id.clone(), version.clone())) {
            return Ok(bp.clone());
        }
        let file = format!("{esc}/{version}/buildpack.toml");
        let data = self
            .gw
            .read_file(&self.handle, &file, 0, None)
            .map_err(|_| {
                FrontendError::new(format!(
                    "buildpack {}@{version} is not in the buildpacks context (no {file})",
                    e.id
                ))
            })?;
        let shown = format!("buildpacks/{file}");
        let bp = descriptor::parse_buildpack(&shown, &data)?;
        if bp.id != e.id || bp.version != version {
            return Err(FrontendError::new(format!(
                "{shown}: declares {}@{}, but its directory says {}@{version}",
                bp.id, bp.version, e.id
            )));
        }
        let bp = Rc::new(bp);
        self.loaded.insert((e.id.clone(), version), bp.clone());
        Ok(bp)
    }
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

fn read_project(gw: &dyn Gateway, platform: &pb::Platform) -> Result<Project, FrontendError> {
    let st = local(CONTEXT_LOCAL)
        .include_patterns(vec![PROJECT_TOML.to_string()])
        .shared_key_hint(format!("{CONTEXT_LOCAL}-{PROJECT_TOML}"))
        .custom_name("[buildpacks] load project.toml")
        .state();
    let h = solve(gw, &st, platform)?;
    let present = list(gw, &h, "/")
        .iter()
        .any(|s| s.path == PROJECT_TOML && !s.is_dir());
    if !present {
        return Ok(Project::default());
    }
    let data = gw.read_file(&h, PROJECT_TOML, 0, None)?;
    project::parse_project(&data)
}

fn read_order(gw: &dyn Gateway, opts: &Options, handle: &str) -> Result<Order, FrontendError> {
    match &opts.order {
        OrderSource::Inline(text) => {
            descriptor::parse_order_toml("order (option)", text.as_bytes())
        }
        OrderSource::File(path) => {
            let data = gw.read_file(handle, path, 0, None).map_err(|_| {
                FrontendError::new(format!(
                    "no order: the buildpacks context has no {path}; add one, or pass --opt buildpacks=ID[@VERSION],… or --opt order=FILE"
                ))
            })?;
            descriptor::parse_order_toml(path, &data)
        }
    }
}

/// Reads an env directory (`(file name, content)` of regular files).
fn read_env_dir(
    gw: &dyn Gateway,
    h: &str,
    dir: &str,
) -> Result<Vec<(String, String)>, FrontendError> {
    let mut out = Vec::new();
    for s in list(gw, h, dir) {
        if s.is_file() {
            let name = s.path.rsplit('/').next().unwrap_or("").to_string();
            out.push((name.clone(), read_text(gw, h, &format!("{dir}/{name}"))?));
        }
    }
    Ok(out)
}

/// Reads what a buildpack left in `/layers/<id>`.
fn read_layers(
    gw: &dyn Gateway,
    h: &str,
    bp: &Buildpack,
) -> Result<(Vec<Layer>, layers::Launch, Vec<String>), FrontendError> {
    let dir = steps::layers_dir(bp).trim_start_matches('/').to_string();
    let entries = list(gw, h, &dir);
    let name_of = |s: &FileStat| s.path.rsplit('/').next().unwrap_or("").to_string();
    let dirs: Vec<String> = entries.iter().filter(|s| s.is_dir()).map(name_of).collect();
    let shown = |f: &str| format!("{} (buildpack {}): {f}", steps::layers_dir(bp), bp.key());
    let mut out = Vec::new();
    let mut launch = layers::Launch::default();
    let mut unmet = Vec::new();
    for s in entries.iter().filter(|s| s.is_file()) {
        let file = name_of(s);
        let Some(name) = file.strip_suffix(".toml") else {
            continue;
        };
        let data = gw.read_file(h, &format!("{dir}/{file}"), 0, None)?;
        match name {
            "launch" => {
                launch = layers::parse_launch(&shown(&file), &data, &bp.id)?;
                continue;
            }
            "build" => {
                unmet = layers::parse_build_toml(&shown(&file), &data)?;
                continue;
            }
            "store" => continue,
            _ => {}
        }
        let (types, metadata) = layers::parse_layer_toml(&shown(&file), &data)?;
        let has_dir = dirs.iter().any(|d| d == name);
        let mut layer = Layer {
            name: name.to_string(),
            types,
            metadata,
            has_dir,
            ..Default::default()
        };
        if types.ignored() {
            out.push(layer);
            continue;
        }
        if !has_dir {
            if types.launch {
                return Err(FrontendError::new(format!(
                    "buildpack {}: layer {name} has launch = true but no directory (kiln cannot reuse a layer of a previous image)",
                    bp.key()
                )));
            }
            if types.cache {
                return Err(FrontendError::new(format!(
                    "buildpack {}: layer {name} has cache = true but no directory",
                    bp.key()
                )));
            }
            out.push(layer);
            continue;
        }
        let ldir = format!("{dir}/{name}");
        for sub in list(gw, h, &ldir) {
            let n = name_of(&sub);
            if !sub.is_dir() {
                continue;
            }
            match n.as_str() {
                "bin" | "lib" | "include" | "pkgconfig" => layer.root_dirs.push(n.clone()),
                "env" => layer.env = read_env_dir(gw, h, &format!("{ldir}/env"))?,
                "env.build" => layer.env_build = read_env_dir(gw, h, &format!("{ldir}/env.build"))?,
                "env.launch" => {
                    let base = format!("{ldir}/env.launch");
                    layer.env_launch = read_env_dir(gw, h, &base)?;
                    for p in list(gw, h, &base) {
                        if p.is_dir() {
                            let pn = name_of(&p);
                            let files = read_env_dir(gw, h, &format!("{base}/{pn}"))?;
                            layer.env_launch_proc.insert(pn, files);
                        }
                    }
                }
                "exec.d" => layer.has_exec_d = true,
                _ => {}
            }
        }
        out.push(layer);
    }
    for reserved in layers::RESERVED_LAYER_NAMES {
        if dirs.iter().any(|d| d == reserved) {
            gw.warn(
                &format!(
                    "buildpack {}: a layer may not be named {reserved:?}; the directory is ignored",
                    bp.key()
                ),
                None,
                None,
            );
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, launch, unmet))
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

    // Detect, group by group.
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut selected: Option<(Vec<Candidate>, detect::Resolved)> = None;
    for (gi, group) in groups.iter().enumerate() {
        let todo: Vec<&Candidate> = group
            .iter()
            .filter(|c| !outcomes.contains_key(&c.bp.key()))
            .collect();
        let mut runnable = Vec::new();
        for c in todo {
            if !descriptor::target_matches(&c.bp, &run_target) {
                gw.log(&format!(
                    "buildpack {} does not support the run image's target {}/{}",
                    c.bp.key(),
                    run_target.os,
                    run_target.arch
                ));
                outcomes.insert(c.bp.key(), Outcome::Fail);
            } else if runnable
                .iter()
                .all(|r: &&Candidate| r.bp.key() != c.bp.key())
            {
                runnable.push(c);
            }
        }
        if !runnable.is_empty() {
            let mut outs = Vec::new();
            for c in &runnable {
                let contract = Contract {
                    bp: &c.bp,
                    base: &base_env,
                    platform_env: &platform_env,
                    target_env: &tenv,
                    exec_env: &opts.exec_env,
                };
                outs.push(steps::detect(&runner, &contract, &app0, &platform_st)?);
            }
            let merged = merge_with(
                &outs,
                Constraints::default()
                    .custom_name(format!("[buildpacks] detect results, group {}", gi + 1)),
            );
            let h = solve(gw, &merged, &platform)?;
            for c in &runnable {
                let d = format!("detect/{}", steps::bp_rel(&c.bp));
                let code_s = read_text(gw, &h, &format!("{d}/code"))?;
                let log = read_text(gw, &h, &format!("{d}/log")).unwrap_or_default();
                let code: i32 = code_s.trim().parse().unwrap_or(-1);
                let plan = if code == 0 {
                    gw.read_file(&h, &format!("{d}/plan.toml"), 0, None)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let plan_name = format!("build plan of {}", c.bp.key());
                let o = detect::outcome(code, &plan_name, &plan);
                if let Outcome::Error(e) = &o {
                    gw.warn(
                        &format!("buildpack {}: detection failed: {e}", c.bp.key()),
                        Some(&tail(&log)),
                        None,
                    );
                }
                outcomes.insert(c.bp.key(), o);
            }
        }
        let members: Vec<Member> = group
            .iter()
            .map(|c| Member {
                key: c.bp.key(),
                optional: c.optional,
                outcome: outcomes.get(&c.bp.key()).cloned().unwrap_or(Outcome::Fail),
            })
            .collect();
        match detect::resolve(&members) {
            Ok(r) => {
                gw.log(&format!("group {} passed: {}", gi + 1, group_label(group)));
                selected = Some((group.clone(), r));
                break;
            }
            Err(why) => reasons.push(format!("group {} [{}]: {why}", gi + 1, group_label(group))),
        }
    }
    let Some((group, resolved)) = selected else {
        return Err(FrontendError::new(format!(
            "no buildpack group passed detection:\n  {}",
            reasons.join("\n  ")
        )));
    };

    // Build, buildpack by buildpack.
    let cache_ns = opts
        .cache_id
        .clone()
        .or_else(|| (!project.id.is_empty()).then(|| project.id.clone()))
        .unwrap_or_else(|| "default".into());
    let mut entries = resolved.entries.clone();
    let mut app = app0.clone();
    let mut build_env = base_env.clone();
    let mut earlier: Vec<(String, State)> = Vec::new();
    let mut outputs: Vec<BuildOutput> = Vec::new();
    let mut layer_states: Vec<State> = Vec::new();
    for &mi in &resolved.members {
        let bp = group[mi].bp.clone();
        let plan = detect::buildpack_plan(&entries, mi);
        let contract = Contract {
            bp: &bp,
            base: &build_env,
            platform_env: &platform_env,
            target_env: &tenv,
            exec_env: &opts.exec_env,
        };
        let cid = steps::cache_id(&cache_ns, &bp);
        let b = steps::build(
            &runner,
            &contract,
            &app,
            &platform_st,
            &detect::plan_toml(&plan),
            &earlier,
            &cid,
        )?;
        let merged = merge_with(
            &[b.layers.clone(), b.app.clone()],
            Constraints::default().custom_name(format!("[buildpacks] read back {}", bp.key())),
        );
        let h = solve(gw, &merged, &platform).map_err(|e| {
            FrontendError::new(format!(
                "buildpack {}: bin/build failed (its output is in the log above): {}",
                bp.key(),
                e.message
            ))
        })?;
        let (blayers, launch, unmet) = read_layers(gw, &h, &bp)?;
        for u in &unmet {
            if !plan.iter().any(|r| &r.name == u) {
                return Err(FrontendError::new(format!(
                    "buildpack {}: build.toml lists unmet {u:?}, which is not in its plan",
                    bp.key()
                )));
            }
        }
        detect::remove_met(&mut entries, mi, &unmet);
        if launch.has_slices {
            gw.warn(
                &format!(
                    "buildpack {}: [[slices]] are not supported; the app is one layer",
                    bp.key()
                ),
                None,
                None,
            );
        }
        let out = BuildOutput {
            id: bp.id.clone(),
            escaped: bp.escaped_id(),
            version: bp.version.clone(),
            layers: blayers,
            launch,
        };
        for l in &out.layers {
            if l.types.launch && l.has_exec_d {
                gw.warn(
                    &format!(
                        "buildpack {}: layer {} has exec.d/, which a baked image does not run",
                        bp.key(),
                        l.name
                    ),
                    None,
                    None,
                );
            }
        }
        // The build cache: replace it with this build's cache layers.
        let cached: Vec<(String, String)> = out
            .layers
            .iter()
            .filter(|l| l.types.cache && l.has_dir)
            .map(|l| (l.name.clone(), layers::cached_layer_toml(&l.metadata)))
            .collect();
        let save = steps::save_cache(&runner, &bp, &b.layers, &cached, &cid, &base_env)?;
        solve(gw, &save, &platform)?;

        // What later buildpacks see.
        let ignored = layers::apply_build_layers(&mut build_env, &out);
        for f in ignored {
            gw.warn(
                &format!(
                    "buildpack {}: env file {f} has an unknown suffix and is ignored",
                    bp.key()
                ),
                None,
                None,
            );
        }
        let build_layers: Vec<String> = out
            .layers
            .iter()
            .filter(|l| l.types.build && l.has_dir)
            .map(|l| l.name.clone())
            .collect();
        if !build_layers.is_empty() {
            earlier.push((
                steps::layers_dir(&bp),
                steps::select_layers(&runner, &bp, &b.layers, &build_layers),
            ));
        }
        for l in out.layers.iter().filter(|l| l.types.launch && l.has_dir) {
            layer_states.push(steps::export_layer(&runner, &bp, &b.layers, &l.name));
        }
        app = b.app.clone();
        outputs.push(out);
    }

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
mod tests {
    use super::*;
    use kiln_frontend::testing::MockGateway;

    #[test]
    fn missing_build_image_is_a_clear_error() {
        let gw = MockGateway::new();
        let e = run(&gw).unwrap_err();
        assert!(e.message.contains("build-image"), "{e}");
    }

    #[test]
    fn unknown_image_names_the_option() {
        let gw = MockGateway::new().with_option("build-image", "example.com/nope:1");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message.starts_with("build image example.com/nope:1"),
            "{e}"
        );
    }

    const IMAGE: &str = "example.com/base:1";
    const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","SECRET=x"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
    const ORDER: &[u8] = b"[[order]]\n[[order.group]]\nid = \"a/b\"\nversion = \"1.0.0\"\n";

    fn bp_toml(clear_env: bool) -> Vec<u8> {
        format!(
            "api = \"0.12\"\n[buildpack]\nid = \"a/b\"\nversion = \"1.0.0\"\nclear-env = {clear_env}\n"
        )
        .into_bytes()
    }

    fn gateway(project: &[u8], clear_env: bool) -> MockGateway {
        MockGateway::new()
            .with_option("build-image", IMAGE)
            .with_image(IMAGE, CONFIG)
            .with_file("context", "project.toml", project)
            .with_file("context", "app.txt", b"app")
            .with_file("buildpacks", "order.toml", ORDER)
            .with_file(
                "buildpacks",
                "a_b/1.0.0/buildpack.toml",
                &bp_toml(clear_env),
            )
    }

    fn exec_ops(def: &[u8]) -> Vec<pb::ExecOp> {
        use prost::Message as _;
        let d = pb::Definition::decode(def).unwrap();
        d.def
            .iter()
            .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
            .filter_map(|op| match op.op {
                Some(pb::op::Op::Exec(e)) => Some(e),
                _ => None,
            })
            .collect()
    }

    const PROJECT: &[u8] =
        b"[_]\nschema-version = \"0.2\"\n[[io.buildpacks.build.env]]\nname = \"FOO\"\nvalue = \"bar\"\n";

    #[test]
    fn detect_exec_gets_the_contract() {
        let gw = gateway(PROJECT, false);
        // The mock cannot run execs, so the run stops when it reads the
        // detect results; the LLB it solved is what is checked.
        let e = run(&gw).unwrap_err();
        assert!(e.message.contains("detect/a_b/1.0.0/code"), "{e}");
        let solved = gw.solved();
        let execs = exec_ops(solved.last().unwrap());
        assert_eq!(execs.len(), 1);
        let ex = &execs[0];
        let meta = ex.meta.as_ref().unwrap();
        assert_eq!(meta.args[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert!(meta.args[2].contains("'/cnb/buildpacks/a_b/1.0.0'/bin/detect '/platform'"));
        assert_eq!(meta.cwd, "/workspace");
        for want in [
            "PATH=/bin",
            "FOO=bar",
            "CNB_BUILDPACK_DIR=/cnb/buildpacks/a_b/1.0.0",
            "CNB_PLATFORM_DIR=/platform",
            "CNB_BUILD_PLAN_PATH=/cnb/detect/a_b/1.0.0/plan.toml",
            "CNB_TARGET_OS=linux",
            "CNB_TARGET_ARCH=amd64",
            "CNB_EXEC_ENV=production",
        ] {
            assert!(
                meta.env.iter().any(|e| e == want),
                "{want} missing: {:?}",
                meta.env
            );
        }
        assert!(
            !meta.env.iter().any(|e| e.starts_with("SECRET=")),
            "only the pass-through variables of the build image reach buildpacks"
        );
        assert_eq!(ex.network, pb::NetMode::None as i32);
        let mount = |d: &str| ex.mounts.iter().find(|m| m.dest == d).unwrap();
        assert!(mount("/workspace").readonly);
        assert_eq!(mount("/workspace").selector, "workspace");
        assert!(mount("/platform").readonly);
        assert_eq!(mount("/cnb/buildpacks/a_b/1.0.0").selector, "a_b/1.0.0");
        assert!(!mount("/cnb/detect").readonly);
    }

    #[test]
    fn clear_env_keeps_platform_env_out() {
        let gw = gateway(PROJECT, true);
        assert!(run(&gw).is_err());
        let execs = exec_ops(gw.solved().last().unwrap());
        let env = &execs[0].meta.as_ref().unwrap().env;
        assert!(!env.iter().any(|e| e == "FOO=bar"), "{env:?}");
        assert!(env.iter().any(|e| e == "CNB_PLATFORM_DIR=/platform"));
    }

    #[test]
    fn input_errors_name_file_and_key() {
        let gw = gateway(b"[_]\n[io.buildpacks]\ninclude = \"*.html\"\n", false);
        let e = run(&gw).unwrap_err();
        assert_eq!(
            e.message,
            "project.toml: io.buildpacks.include: must be an array of strings, not string"
        );

        let gw = gateway(PROJECT, false).with_file("buildpacks", "order.toml", b"[[order]]\n");
        let e = run(&gw).unwrap_err();
        assert_eq!(e.message, "order.toml: order[0].group: is empty");

        let gw = gateway(PROJECT, false).with_option("buildpacks", "c/d@2");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message
                .contains("buildpack c/d@2 is not in the buildpacks context"),
            "{e}"
        );

        let gw = gateway(PROJECT, false).with_file(
            "buildpacks",
            "a_b/1.0.0/buildpack.toml",
            b"api = \"0.12\"\n[buildpack]\nid = \"x\"\nversion = \"1.0.0\"\n",
        );
        let e = run(&gw).unwrap_err();
        assert!(e.message.contains("declares x@1.0.0"), "{e}");

        let gw = gateway(PROJECT, false).with_option("process-type", "");
        assert!(run(&gw).is_err());
    }

    #[test]
    fn no_order_says_how_to_give_one() {
        let gw = MockGateway::new()
            .with_option("build-image", IMAGE)
            .with_image(IMAGE, CONFIG)
            .with_file("context", "app.txt", b"app")
            .with_file("buildpacks", "a_b/1.0.0/buildpack.toml", &bp_toml(false));
        let e = run(&gw).unwrap_err();
        assert!(e.message.contains("no order.toml"), "{e}");
        assert!(e.message.contains("--opt buildpacks="), "{e}");
    }

    #[test]
    fn target_env_defaults() {
        let t = ImageTarget {
            os: "linux".into(),
            arch: "arm64".into(),
            variant: "v8".into(),
            ..Default::default()
        };
        assert_eq!(
            target_env(&t),
            vec![
                ("CNB_TARGET_OS".to_string(), "linux".to_string()),
                ("CNB_TARGET_ARCH".to_string(), "arm64".to_string()),
                ("CNB_TARGET_ARCH_VARIANT".to_string(), "v8".to_string()),
            ]
        );
        assert_eq!(
            cnb_user(&Env::from_list(&["CNB_USER_ID=1000", "CNB_GROUP_ID=1001"])),
            Some((1000, 1001))
        );
        assert_eq!(cnb_user(&Env::from_list(&["CNB_USER_ID=x"])), None);
        assert_eq!(tail("ok\n"), "ok");
    }
}

/// The whole flow natively: a gateway whose results all read from one flat
/// file map (locals and exec outputs alike), so detect and build results
/// can be scripted.
#[cfg(test)]
mod flow_tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use kiln_frontend::{FileStat, FrontendError, Gateway, ImageConfig, Location, Platform};
    use prost::Message as _;
    use serde_json::Value;

    use super::*;

    #[derive(Default)]
    struct Flat {
        options: BTreeMap<String, String>,
        files: BTreeMap<String, Vec<u8>>,
        solved: RefCell<Vec<Vec<u8>>>,
        warnings: RefCell<Vec<String>>,
    }

    impl Flat {
        fn file(mut self, path: &str, data: &str) -> Self {
            self.files
                .insert(path.to_string(), data.as_bytes().to_vec());
            self
        }
        fn opt(mut self, k: &str, v: &str) -> Self {
            self.options.insert(k.into(), v.into());
            self
        }
        fn execs(&self) -> Vec<pb::ExecOp> {
            let mut out = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for def in self.solved.borrow().iter() {
                let d = pb::Definition::decode(def.as_slice()).unwrap();
                for b in &d.def {
                    if !seen.insert(b.clone()) {
                        continue;
                    }
                    if let Ok(pb::Op {
                        op: Some(pb::op::Op::Exec(e)),
                        ..
                    }) = pb::Op::decode(b.as_slice())
                    {
                        out.push(e);
                    }
                }
            }
            out
        }
    }

    fn stat(path: &str, dir: bool, size: u64) -> FileStat {
        FileStat {
            path: path.to_string(),
            mode: if dir { 0o040755 } else { 0o100644 },
            size,
            mtime_ns: 0,
            linkname: String::new(),
            uid: 0,
            gid: 0,
        }
    }

    impl Gateway for Flat {
        fn options(&self) -> Vec<(String, String)> {
            self.options.clone().into_iter().collect()
        }
        fn inputs(&self) -> Vec<(String, Vec<u8>)> {
            Vec::new()
        }
        fn solve(&self, definition: &[u8], _evaluate: bool) -> Result<String, FrontendError> {
            let mut s = self.solved.borrow_mut();
            s.push(definition.to_vec());
            Ok(format!("h{}", s.len()))
        }
        fn read_file(
            &self,
            _h: &str,
            path: &str,
            _offset: u64,
            _length: Option<u64>,
        ) -> Result<Vec<u8>, FrontendError> {
            self.files
                .get(path.trim_start_matches('/'))
                .cloned()
                .ok_or_else(|| FrontendError::new(format!("{path}: not found")))
        }
        fn read_dir(
            &self,
            _h: &str,
            path: &str,
            _p: Option<&str>,
        ) -> Result<Vec<FileStat>, FrontendError> {
            let prefix = path.trim_matches('/');
            let mut out: BTreeMap<String, FileStat> = BTreeMap::new();
            for (p, data) in &self.files {
                let rest = if prefix.is_empty() {
                    p.as_str()
                } else {
                    match p.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                        Some(r) => r,
                        None => continue,
                    }
                };
                match rest.split_once('/') {
                    Some((d, _)) => out.insert(d.to_string(), stat(d, true, 0)),
                    None => out.insert(rest.to_string(), stat(rest, false, data.len() as u64)),
                };
            }
            Ok(out.into_values().collect())
        }
        fn stat_file(&self, _h: &str, path: &str) -> Result<FileStat, FrontendError> {
            let d = self.read_file("", path, 0, None)?;
            Ok(stat(path, false, d.len() as u64))
        }
        fn resolve_image_config(
            &self,
            reference: &str,
            _p: Option<&Platform>,
            _m: &str,
        ) -> Result<ImageConfig, FrontendError> {
            Ok(ImageConfig {
                canonical_ref: reference.to_string(),
                digest: format!("sha256:{}", "1".repeat(64)),
                config: br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"User":"app"},"rootfs":{"type":"layers","diff_ids":["sha256:base"]}}"#.to_vec(),
            })
        }
        fn warn(&self, message: &str, _d: Option<&str>, _l: Option<&Location>) {
            self.warnings.borrow_mut().push(message.to_string());
        }
        fn log(&self, _m: &str) {}
    }

    fn bp(id: &str) -> String {
        format!("api = \"0.12\"\n[buildpack]\nid = \"{id}\"\nversion = \"1\"\n")
    }

    /// Two buildpacks: `t/tools` provides `tool` with a build layer and a
    /// cached layer, `t/app` requires it and adds a launch layer and the
    /// default process.
    fn two_buildpacks() -> Flat {
        Flat::default()
            .opt("build-image", "example.com/base:1")
            .opt("run-image", "example.com/run:1")
            .opt("cache-id", "ns")
            .file("app.txt", "app")
            .file(
                "order.toml",
                "[[order]]\n[[order.group]]\nid = \"t/tools\"\nversion = \"1\"\n[[order.group]]\nid = \"t/app\"\nversion = \"1\"\n",
            )
            .file("t_tools/1/buildpack.toml", &bp("t/tools"))
            .file("t_app/1/buildpack.toml", &bp("t/app"))
            .file("detect/t_tools/1/code", "0\n")
            .file("detect/t_tools/1/plan.toml", "[[provides]]\nname = \"tool\"\n")
            .file("detect/t_app/1/code", "0\n")
            .file(
                "detect/t_app/1/plan.toml",
                "[[requires]]\nname = \"tool\"\n[requires.metadata]\nv = \"1\"\n",
            )
            // What t/tools leaves behind.
            .file("layers/t_tools/bin.toml", "[types]\nbuild = true\n")
            .file("layers/t_tools/bin/bin/tool", "#!/bin/sh\n")
            .file("layers/t_tools/bin/env.build/TOOL_HOME", "/opt/tool")
            .file("layers/t_tools/deps.toml", "[types]\ncache = true\n[metadata]\nk = 1\n")
            .file("layers/t_tools/deps/x", "x")
            .file("layers/t_tools/scratch.toml", "")
            .file("layers/t_tools/scratch/y", "y")
            // What t/app leaves behind.
            .file("layers/t_app/web.toml", "[types]\nlaunch = true\n[metadata]\nm = \"v\"\n")
            .file("layers/t_app/web/bin/serve", "#!/bin/sh\n")
            .file("layers/t_app/web/env.launch/MODE.default", "prod")
            .file("layers/t_app/web/env.launch/web/PORT", "8080")
            .file(
                "layers/t_app/launch.toml",
                "[[labels]]\nkey = \"k\"\nvalue = \"v\"\n[[processes]]\ntype = \"web\"\ncommand = [\"serve\"]\nargs = [\"--fast\"]\ndefault = true\n",
            )
    }

    fn env_of(e: &pb::ExecOp) -> Vec<String> {
        e.meta.as_ref().unwrap().env.clone()
    }

    fn name_has(e: &pb::ExecOp, s: &str) -> bool {
        e.meta.as_ref().unwrap().args.iter().any(|a| a.contains(s))
    }

    #[test]
    fn two_buildpacks_end_to_end() {
        let gw = two_buildpacks();
        let r = run(&gw).unwrap();
        let execs = gw.execs();
        let builds: Vec<&pb::ExecOp> = execs.iter().filter(|e| name_has(e, "/bin/build")).collect();
        assert_eq!(builds.len(), 2);
        let (tools, app) = (builds[0], builds[1]);

        // t/tools: its plan, its cache mount, no earlier layers.
        let env = env_of(tools);
        assert!(env.contains(&"CNB_LAYERS_DIR=/layers/t_tools".to_string()));
        assert!(env.contains(&"CNB_BP_PLAN_PATH=/cnb/plan/plan.toml".to_string()));
        let cache = tools
            .mounts
            .iter()
            .find(|m| m.dest == "/cnb/cache")
            .unwrap();
        assert_eq!(
            cache.cache_opt.as_ref().unwrap().id,
            "kiln-buildpacks/ns/t/tools"
        );
        assert!(!tools.mounts.iter().any(|m| m.dest == "/layers/t_app"));

        // t/app sees t/tools' build layer (mounted, bin on PATH, env.build).
        let env = env_of(app);
        assert!(
            env.contains(&"PATH=/layers/t_tools/bin/bin:/bin".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"TOOL_HOME=/opt/tool".to_string()), "{env:?}");
        let earlier = app
            .mounts
            .iter()
            .find(|m| m.dest == "/layers/t_tools")
            .unwrap();
        assert!(earlier.readonly);

        // The plans each buildpack got.
        let plans: Vec<String> = gw
            .solved
            .borrow()
            .iter()
            .flat_map(|d| {
                let d = pb::Definition::decode(d.as_slice()).unwrap();
                d.def
                    .iter()
                    .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
                    .filter_map(|op| match op.op {
                        Some(pb::op::Op::File(f)) => Some(f),
                        _ => None,
                    })
                    .flat_map(|f| f.actions)
                    .filter_map(|a| match a.action {
                        Some(pb::file_action::Action::Mkfile(m)) if m.path == "/plan.toml" => {
                            Some(String::from_utf8(m.data).unwrap())
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            plans.contains(
                &"[[entries]]\nname = \"tool\"\n\n[entries.metadata]\nv = \"1\"\n".to_string()
            ),
            "{plans:?}"
        );
        assert!(plans.contains(&"entries = []\n".to_string()), "{plans:?}");

        // The cache save of t/tools copies only the cache layer.
        let saves: Vec<&pb::ExecOp> = execs.iter().filter(|e| name_has(e, "rm -rf")).collect();
        assert_eq!(saves.len(), 2);
        let script = &saves[0].meta.as_ref().unwrap().args[2];
        assert!(script.contains("'/layers/t_tools/deps'"), "{script}");
        assert!(
            !script.contains("scratch") && !script.contains("t_tools/bin"),
            "{script}"
        );
        assert_eq!(saves[0].meta.as_ref().unwrap().user, "0:0");

        // The image config.
        let cfg: Value = serde_json::from_slice(&r.metadata[0].1).unwrap();
        let c = &cfg["config"];
        assert_eq!(c["Entrypoint"], serde_json::json!(["serve"]));
        assert_eq!(c["Cmd"], serde_json::json!(["--fast"]));
        assert_eq!(c["User"], "app");
        assert_eq!(
            c["Env"],
            serde_json::json!([
                "PATH=/layers/t_app/web/bin:/bin",
                "MODE=prod",
                "PORT=8080",
                "CNB_LAYERS_DIR=/layers",
                "CNB_APP_DIR=/workspace"
            ])
        );
        assert_eq!(c["Labels"]["k"], "v");
        let lm: Value = serde_json::from_str(
            c["Labels"]["io.buildpacks.lifecycle.metadata"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(lm["buildpacks"][0]["layers"], serde_json::json!({}));
        assert_eq!(
            lm["buildpacks"][1]["layers"]["web"]["data"],
            serde_json::json!({"m": "v"})
        );
        assert_eq!(lm["runImage"]["image"], "example.com/run:1");
        assert!(
            gw.warnings.borrow().is_empty(),
            "{:?}",
            gw.warnings.borrow()
        );

        // The final graph starts from the run image, not the build image.
        let last = gw.solved.borrow().last().cloned().unwrap();
        let d = pb::Definition::decode(last.as_slice()).unwrap();
        let sources: Vec<String> = d
            .def
            .iter()
            .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
            .filter_map(|op| match op.op {
                Some(pb::op::Op::Source(s)) => Some(s.identifier),
                _ => None,
            })
            .collect();
        assert!(
            sources
                .iter()
                .any(|s| s.starts_with("docker-image://example.com/run:1@")),
            "{sources:?}"
        );
    }

    #[test]
    fn process_type_option_and_errors() {
        let gw = two_buildpacks().opt("process-type", "nope");
        let e = run(&gw).unwrap_err();
        assert!(e.message.contains("option process-type=nope"), "{e}");

        let gw = two_buildpacks().file("layers/t_app/gone.toml", "[types]\nlaunch = true\n");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message
                .contains("buildpack t/app@1: layer gone has launch = true but no directory"),
            "{e}"
        );

        let gw = two_buildpacks().file("layers/t_app/web.toml", "launch = true\n");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message
                .contains("web.toml: launch: layer types belong in the [types] table"),
            "{e}"
        );
        assert!(e.message.contains("t/app@1"), "{e}");

        let gw = two_buildpacks().file("layers/t_app/build.toml", "[[unmet]]\nname = \"other\"\n");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message
                .contains("unmet \"other\", which is not in its plan"),
            "{e}"
        );
    }

    #[test]
    fn detect_errors_are_warnings_naming_the_buildpack() {
        let gw = two_buildpacks().file("detect/t_app/1/code", "5\n");
        let e = run(&gw).unwrap_err();
        assert!(
            e.message.starts_with("no buildpack group passed detection"),
            "{e}"
        );
        assert!(
            e.message
                .contains("t/app@1 failed: bin/detect exited with code 5"),
            "{e}"
        );
        assert_eq!(
            gw.warnings.borrow().as_slice(),
            ["buildpack t/app@1: detection failed: bin/detect exited with code 5"]
        );
    }
}
