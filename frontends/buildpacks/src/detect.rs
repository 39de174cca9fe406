//! Detection results and build plan resolution (Buildpack API §Phase #1).
//!
//! `bin/detect` runs as an exec op; what comes back is its exit code, its
//! output and the plan TOML it wrote. This module turns those into a
//! verdict per group: members that did not pass are dropped if optional
//! (and fail the group otherwise), then the plan alternatives of the passing
//! members (the top-level `provides`/`requires` and each `[[or]]`) are tried
//! left to right, depth first, until one resolves: every requirement needs a
//! provider at or before its buildpack, every provide needs a later (or
//! same-buildpack) requirement. An optional member that breaks a trial is
//! removed and the trial is evaluated again.

use std::collections::BTreeMap;

use crate::tomlx::Doc;

/// A `[[requires]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Require {
    /// Dependency name.
    pub name: String,
    /// `[requires.metadata]`.
    pub metadata: toml::Table,
}

/// One alternative of a detect plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alternative {
    /// Names from `[[provides]]`.
    pub provides: Vec<String>,
    /// `[[requires]]`.
    pub requires: Vec<Require>,
}

/// What `bin/detect` of one buildpack said.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit 0, with the plan alternatives (top level first, then `[[or]]`).
    Pass(Vec<Alternative>),
    /// Exit 100.
    Fail,
    /// Any other exit code, or an unusable plan; the text says why.
    Error(String),
}

fn parse_alternative(
    v: &crate::tomlx::View<'_>,
) -> Result<Alternative, kiln_frontend::FrontendError> {
    let mut alt = Alternative::default();
    for p in v.tables("provides")? {
        alt.provides.push(p.str("name")?.to_string());
    }
    for r in v.tables("requires")? {
        if r.has("version") {
            return Err(r.err(
                "version",
                "a top-level version in a requirement is not allowed; use metadata.version",
            ));
        }
        let metadata = match r.opt_table("metadata")? {
            Some(m) => m.table().clone(),
            None => toml::Table::new(),
        };
        alt.requires.push(Require {
            name: r.str("name")?.to_string(),
            metadata,
        });
    }
    Ok(alt)
}

/// Parses the plan a passing `bin/detect` wrote (possibly empty).
pub fn parse_plan(file: &str, data: &[u8]) -> Result<Vec<Alternative>, String> {
    let doc = Doc::parse(file, data).map_err(|e| e.message)?;
    let root = doc.root();
    let mut alts = vec![parse_alternative(&root).map_err(|e| e.message)?];
    for o in root.tables("or").map_err(|e| e.message)? {
        alts.push(parse_alternative(&o).map_err(|e| e.message)?);
    }
    Ok(alts)
}

/// Interprets an exit code and plan file.
pub fn outcome(code: i32, plan_file: &str, plan: &[u8]) -> Outcome {
    match code {
        0 => match parse_plan(plan_file, plan) {
            Ok(alts) => Outcome::Pass(alts),
            Err(e) => Outcome::Error(format!("its build plan is invalid: {e}")),
        },
        100 => Outcome::Fail,
        c => Outcome::Error(format!("bin/detect exited with code {c}")),
    }
}

/// One member of a candidate group with its detect outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// `id@version`, for messages.
    pub key: String,
    /// `optional = true`.
    pub optional: bool,
    /// Detect result.
    pub outcome: Outcome,
}

/// A resolved plan entry: who provides a dependency and what is required.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry {
    /// Dependency name.
    pub name: String,
    /// Member indices (into the group given to [`resolve`]).
    pub providers: Vec<usize>,
    /// Requirements, in group order.
    pub requires: Vec<Require>,
}

/// A group that passed: the members that take part and the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Indices of the selected members, in group order.
    pub members: Vec<usize>,
    /// Plan entries, by dependency name.
    pub entries: Vec<PlanEntry>,
}

/// At most this many plan trials per group (the product of the members'
/// alternative counts can grow quickly).
const MAX_TRIALS: usize = 4096;

#[derive(Default)]
struct Dep {
    providers: Vec<usize>,
    requires: Vec<Require>,
    extra_provides: Vec<usize>,
    early_requires: Vec<usize>,
}

fn dep_map(trial: &[(usize, &Alternative)]) -> BTreeMap<String, Dep> {
    let mut m: BTreeMap<String, Dep> = BTreeMap::new();
    for (idx, alt) in trial {
        for p in &alt.provides {
            m.entry(p.clone()).or_default().extra_provides.push(*idx);
        }
        for r in &alt.requires {
            let d = m.entry(r.name.clone()).or_default();
            let extra = std::mem::take(&mut d.extra_provides);
            d.providers.extend(extra);
            if d.providers.is_empty() {
                d.early_requires.push(*idx);
            } else {
                d.requires.push(r.clone());
            }
        }
    }
    m
}

/// Runs one trial; `Ok` with the surviving trial and its deps, or `Err`
/// with why it failed.
fn run_trial(
    members: &[Member],
    mut trial: Vec<(usize, &Alternative)>,
) -> Result<Resolved, String> {
    loop {
        let deps = dep_map(&trial);
        let mut remove: Vec<usize> = Vec::new();
        for (name, d) in &deps {
            for &i in &d.early_requires {
                if !members[i].optional {
                    return Err(format!(
                        "{} requires {name:?}, which no buildpack before it provides",
                        members[i].key
                    ));
                }
                remove.push(i);
            }
        }
        for (name, d) in &deps {
            for &i in &d.extra_provides {
                if !members[i].optional {
                    return Err(format!(
                        "{} provides {name:?}, which no buildpack requires",
                        members[i].key
                    ));
                }
                remove.push(i);
            }
        }
        if remove.is_empty() {
            if trial.is_empty() {
                return Err("no buildpack is left in the group".into());
            }
            let entries = deps
                .into_iter()
                .filter(|(_, d)| !d.providers.is_empty())
                .map(|(name, d)| PlanEntry {
                    name,
                    providers: d.providers,
                    requires: d.requires,
                })
                .collect();
            return Ok(Resolved {
                members: trial.iter().map(|(i, _)| *i).collect(),
                entries,
            });
        }
        trial.retain(|(i, _)| !remove.contains(i));
    }
}

/// Decides a candidate group. `Err` says why it did not pass.
pub fn resolve(members: &[Member]) -> Result<Resolved, String> {
    let mut passing: Vec<(usize, &Vec<Alternative>)> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        match &m.outcome {
            Outcome::Pass(alts) => passing.push((i, alts)),
            Outcome::Fail if m.optional => {}
            Outcome::Error(_) if m.optional => {}
            Outcome::Fail => return Err(format!("{} did not pass detection", m.key)),
            Outcome::Error(e) => return Err(format!("{} failed: {e}", m.key)),
        }
    }
    if passing.is_empty() {
        return Err("no buildpack in the group passed detection".into());
    }
    let empty = vec![Alternative::default()];
    let passing: Vec<(usize, &Vec<Alternative>)> = passing
        .into_iter()
        .map(|(i, a)| if a.is_empty() { (i, &empty) } else { (i, a) })
        .collect();
    // Odometer over the alternatives, the last member varying fastest, so
    // the first member's first alternative is tried with every combination
    // of the others before its second one.
    let mut idx = vec![0usize; passing.len()];
    let mut first_err = None;
    for _ in 0..MAX_TRIALS {
        let trial: Vec<(usize, &Alternative)> = passing
            .iter()
            .zip(&idx)
            .map(|((i, alts), &k)| (*i, &alts[k]))
            .collect();
        match run_trial(members, trial) {
            Ok(r) => return Ok(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        let mut pos = passing.len();
        loop {
            if pos == 0 {
                return Err(first_err.unwrap_or_else(|| "the build plan does not resolve".into()));
            }
            pos -= 1;
            idx[pos] += 1;
            if idx[pos] < passing[pos].1.len() {
                break;
            }
            idx[pos] = 0;
        }
    }
    Err(format!(
        "the build plan does not resolve within {MAX_TRIALS} trials: {}",
        first_err.unwrap_or_default()
    ))
}

/// The buildpack plan of member `member`: the requirements of every entry
/// it provides, as TOML (`[[entries]] name, [entries.metadata]`).
pub fn buildpack_plan(entries: &[PlanEntry], member: usize) -> Vec<Require> {
    entries
        .iter()
        .filter(|e| e.providers.contains(&member))
        .flat_map(|e| e.requires.iter().cloned())
        .collect()
}

/// The plan file a buildpack reads from `CNB_BP_PLAN_PATH`.
pub fn plan_toml(requires: &[Require]) -> String {
    let mut entries = toml::value::Array::new();
    for r in requires {
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(r.name.clone()));
        t.insert("metadata".into(), toml::Value::Table(r.metadata.clone()));
        entries.push(toml::Value::Table(t));
    }
    let mut root = toml::Table::new();
    root.insert("entries".into(), toml::Value::Array(entries));
    toml::to_string(&root).unwrap_or_default()
}

/// Drops the entries `member` met (all it provides except `unmet`) so later
/// buildpacks do not see them.
pub fn remove_met(entries: &mut Vec<PlanEntry>, member: usize, unmet: &[String]) {
    entries.retain(|e| !e.providers.contains(&member) || unmet.contains(&e.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(plan: &str) -> Outcome {
        outcome(0, "plan.toml", plan.as_bytes())
    }

    fn member(key: &str, optional: bool, outcome: Outcome) -> Member {
        Member {
            key: key.into(),
            optional,
            outcome,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            outcome(0, "p", b""),
            Outcome::Pass(vec![Alternative::default()])
        );
        assert_eq!(outcome(100, "p", b"garbage ["), Outcome::Fail);
        assert!(matches!(outcome(1, "p", b""), Outcome::Error(e) if e.contains("code 1")));
        assert!(
            matches!(outcome(0, "p", b"[[requires]]\nname = \"x\"\nversion = \"1\"\n"), Outcome::Error(e) if e.contains("metadata.version"))
        );
        assert!(
            matches!(outcome(0, "p", b"[[provides]]\n"), Outcome::Error(e) if e.contains("provides[0].name"))
        );
    }

    #[test]
    fn simple_pass_and_fail() {
        let g = [member("a@1", false, pass(""))];
        assert_eq!(resolve(&g).unwrap().members, vec![0]);
        let g = [
            member("a@1", false, pass("")),
            member("b@1", false, Outcome::Fail),
        ];
        assert_eq!(resolve(&g).unwrap_err(), "b@1 did not pass detection");
        let g = [member("a@1", true, Outcome::Fail)];
        assert!(resolve(&g).is_err());
        let g = [
            member("a@1", false, pass("")),
            member(
                "b@1",
                true,
                Outcome::Error("bin/detect exited with code 3".into()),
            ),
        ];
        assert_eq!(resolve(&g).unwrap().members, vec![0]);
    }

    #[test]
    fn provides_and_requires() {
        let g = [
            member("node@1", false, pass("[[provides]]\nname = \"node\"\n")),
            member(
                "app@1",
                false,
                pass("[[requires]]\nname = \"node\"\n[requires.metadata]\nversion = \"20\"\n"),
            ),
        ];
        let r = resolve(&g).unwrap();
        assert_eq!(r.members, vec![0, 1]);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[0].providers, vec![0]);
        let plan = buildpack_plan(&r.entries, 0);
        assert_eq!(plan.len(), 1);
        assert_eq!(
            plan_toml(&plan),
            "[[entries]]\nname = \"node\"\n\n[entries.metadata]\nversion = \"20\"\n"
        );
        assert!(buildpack_plan(&r.entries, 1).is_empty());
        assert_eq!(plan_toml(&[]), "entries = []\n");

        // Requirement before the provider: unmet.
        let g = [
            member("app@1", false, pass("[[requires]]\nname = \"node\"\n")),
            member("node@1", false, pass("[[provides]]\nname = \"node\"\n")),
        ];
        assert!(resolve(&g).unwrap_err().contains("requires \"node\""));
        // Provide nobody requires.
        let g = [member(
            "node@1",
            false,
            pass("[[provides]]\nname = \"node\"\n"),
        )];
        assert!(
            resolve(&g)
                .unwrap_err()
                .contains("which no buildpack requires")
        );
        // A buildpack may require what it provides itself.
        let g = [member(
            "self@1",
            false,
            pass("[[provides]]\nname = \"x\"\n[[requires]]\nname = \"x\"\n"),
        )];
        assert_eq!(resolve(&g).unwrap().entries[0].providers, vec![0]);
    }

    #[test]
    fn or_alternatives_are_tried_in_order() {
        let g = [
            member(
                "a@1",
                false,
                pass("[[provides]]\nname = \"x\"\n[[or]]\n[[or.provides]]\nname = \"y\"\n"),
            ),
            member("b@1", false, pass("[[requires]]\nname = \"y\"\n")),
        ];
        let r = resolve(&g).unwrap();
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[0].name, "y");
        // The first alternative wins when both work.
        let g = [
            member(
                "a@1",
                false,
                pass("[[provides]]\nname = \"x\"\n[[or]]\n[[or.provides]]\nname = \"y\"\n"),
            ),
            member(
                "b@1",
                false,
                pass("[[requires]]\nname = \"x\"\n[[or]]\n[[or.requires]]\nname = \"y\"\n"),
            ),
        ];
        assert_eq!(resolve(&g).unwrap().entries[0].name, "x");
    }

    #[test]
    fn optional_members_are_dropped_when_they_break_the_plan() {
        let g = [
            member("a@1", false, pass("")),
            member("opt@1", true, pass("[[provides]]\nname = \"z\"\n")),
            member("c@1", false, pass("")),
        ];
        let r = resolve(&g).unwrap();
        assert_eq!(r.members, vec![0, 2]);
        // A non-optional requirer of an optional provider keeps it.
        let g = [
            member("opt@1", true, pass("[[provides]]\nname = \"z\"\n")),
            member("c@1", false, pass("[[requires]]\nname = \"z\"\n")),
        ];
        assert_eq!(resolve(&g).unwrap().members, vec![0, 1]);
        // Only optional members that all drop out: the group fails.
        let g = [member("opt@1", true, pass("[[provides]]\nname = \"z\"\n"))];
        assert!(resolve(&g).is_err());
    }

    #[test]
    fn unmet_entries_stay_for_later_providers() {
        let g = [
            member("a@1", false, pass("[[provides]]\nname = \"x\"\n")),
            member(
                "b@1",
                false,
                pass("[[provides]]\nname = \"x\"\n[[requires]]\nname = \"x\"\n"),
            ),
        ];
        let r = resolve(&g).unwrap();
        assert_eq!(r.entries[0].providers, vec![0, 1]);
        let mut entries = r.entries.clone();
        remove_met(&mut entries, 0, &["x".to_string()]);
        assert_eq!(entries.len(), 1);
        remove_met(&mut entries, 0, &[]);
        assert!(entries.is_empty());
    }
}
