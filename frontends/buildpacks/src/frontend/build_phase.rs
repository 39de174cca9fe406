//! Build: one exec per buildpack of the selected group, in order, each
//! solved and read back before the next is planned (its layers decide the
//! next one's environment and mounts); the build cache saved after each.

use kiln_frontend::llb::builder::{Constraints, OpOptions, State, merge_with};
use kiln_frontend::{FrontendError, Gateway};

use super::readback::read_layers;
use super::{Cx, solve};
use crate::detect;
use crate::layers::{self, BuildOutput};
use crate::order::Candidate;
use crate::steps::{self, Contract};

/// What the build phase produced.
pub(crate) struct Built {
    /// Per buildpack, in group order.
    pub outputs: Vec<BuildOutput>,
    /// One state per launch layer, in export order.
    pub layer_states: Vec<State>,
    /// The app after the last buildpack.
    pub app: State,
}

/// Builds the selected group.
pub(crate) fn build_group(
    cx: &Cx<'_>,
    group: &[Candidate],
    resolved: &detect::Resolved,
    cache_ns: &str,
) -> Result<Built, FrontendError> {
    let gw: &dyn Gateway = cx.gw;
    let mut entries = resolved.entries.clone();
    let mut app = cx.app0.clone();
    let mut build_env = cx.base_env.clone();
    let mut earlier: Vec<(String, State)> = Vec::new();
    let mut outputs: Vec<BuildOutput> = Vec::new();
    let mut layer_states: Vec<State> = Vec::new();
    for &mi in &resolved.members {
        let bp = group[mi].bp.clone();
        let plan = detect::buildpack_plan(&entries, mi);
        let contract = Contract {
            bp: &bp,
            base: &build_env,
            platform_env: &cx.platform_env,
            target_env: &cx.target_env,
            exec_env: &cx.opts.exec_env,
        };
        let cid = steps::cache_id(cache_ns, &bp);
        let b = steps::build(
            &cx.runner,
            &contract,
            &app,
            &cx.platform_st,
            &detect::plan_toml(&plan),
            &earlier,
            &cid,
        )?;
        let merged = merge_with(
            &[b.layers.clone(), b.app.clone()],
            Constraints::default().custom_name(format!("[buildpacks] read back {}", bp.key())),
        );
        let h = solve(gw, &merged, &cx.platform).map_err(|e| {
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
        let save = steps::save_cache(&cx.runner, &bp, &b.layers, &cached, &cid, &cx.base_env)?;
        solve(gw, &save, &cx.platform)?;

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
                steps::select_layers(&cx.runner, &bp, &b.layers, &build_layers),
            ));
        }
        for l in out.layers.iter().filter(|l| l.types.launch && l.has_dir) {
            layer_states.push(steps::export_layer(&cx.runner, &bp, &b.layers, &l.name));
        }
        app = b.app.clone();
        outputs.push(out);
    }
    Ok(Built {
        outputs,
        layer_states,
        app,
    })
}
