//! Detection: group by group, one exec per `bin/detect` not run yet,
//! merged and solved together, exit codes and plans read back, then the
//! plan resolution of [`crate::detect`].

use std::collections::BTreeMap;

use kiln_frontend::llb::builder::{Constraints, OpOptions, merge_with};
use kiln_frontend::{FrontendError, Gateway};

use super::readback::{read_text, tail};
use super::{Cx, group_label, solve};
use crate::descriptor;
use crate::detect::{self, Member, Outcome};
use crate::order::Candidate;
use crate::steps::{self, Contract};

/// Runs detection over `groups` in order; the first group that resolves
/// wins.
pub(crate) fn detect_groups(
    cx: &Cx<'_>,
    groups: &[Vec<Candidate>],
) -> Result<(Vec<Candidate>, detect::Resolved), FrontendError> {
    let gw: &dyn Gateway = cx.gw;
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
            if !descriptor::target_matches(&c.bp, &cx.run_target) {
                gw.log(&format!(
                    "buildpack {} does not support the run image's target {}/{}",
                    c.bp.key(),
                    cx.run_target.os,
                    cx.run_target.arch
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
                    base: &cx.base_env,
                    platform_env: &cx.platform_env,
                    target_env: &cx.target_env,
                    exec_env: &cx.opts.exec_env,
                };
                outs.push(steps::detect(
                    &cx.runner,
                    &contract,
                    &cx.app0,
                    &cx.platform_st,
                )?);
            }
            let merged = merge_with(
                &outs,
                Constraints::default()
                    .custom_name(format!("[buildpacks] detect results, group {}", gi + 1)),
            );
            let h = solve(gw, &merged, &cx.platform)?;
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
    selected.ok_or_else(|| {
        FrontendError::new(format!(
            "no buildpack group passed detection:\n  {}",
            reasons.join("\n  ")
        ))
    })
}
