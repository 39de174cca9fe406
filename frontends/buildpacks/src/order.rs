//! Order expansion: pre/post groups, composite buildpacks replaced by each
//! group of their own order (nested orders multiply out, depth first, left
//! to right), and later duplicates of an ID dropped from a candidate group.

use std::rc::Rc;

use kiln_frontend::FrontendError;

use crate::descriptor::{Buildpack, GroupEntry, Order};

/// Looks buildpacks up by reference.
pub trait Catalog {
    /// The descriptor of `entry` (a missing version picks one).
    fn buildpack(&mut self, entry: &GroupEntry) -> Result<Rc<Buildpack>, FrontendError>;
}

/// A component buildpack in a candidate group.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Descriptor.
    pub bp: Rc<Buildpack>,
    /// Whether the group passes without it.
    pub optional: bool,
}

/// Composite nesting deeper than this is refused (it is most likely a cycle).
const MAX_DEPTH: usize = 8;
/// Candidate groups beyond this are refused.
const MAX_GROUPS: usize = 256;

fn expand_group(
    entries: &[GroupEntry],
    cat: &mut dyn Catalog,
    depth: usize,
) -> Result<Vec<Vec<Candidate>>, FrontendError> {
    if depth > MAX_DEPTH {
        return Err(FrontendError::new(format!(
            "composite buildpacks nest more than {MAX_DEPTH} deep (is there a cycle?)"
        )));
    }
    let mut results: Vec<Vec<Candidate>> = vec![Vec::new()];
    for e in entries {
        let bp = cat.buildpack(e)?;
        if bp.is_composite() {
            let mut subs = Vec::new();
            for g in &bp.order {
                for mut flat in expand_group(g, cat, depth + 1)? {
                    if e.optional {
                        for c in &mut flat {
                            c.optional = true;
                        }
                    }
                    subs.push(flat);
                }
            }
            let mut next = Vec::new();
            for r in &results {
                for s in &subs {
                    let mut g = r.clone();
                    g.extend(s.iter().cloned());
                    next.push(g);
                }
            }
            results = next;
        } else {
            for r in &mut results {
                r.push(Candidate {
                    bp: bp.clone(),
                    optional: e.optional,
                });
            }
        }
        if results.len() > MAX_GROUPS {
            return Err(FrontendError::new(format!(
                "the order expands to more than {MAX_GROUPS} candidate groups"
            )));
        }
    }
    Ok(results)
}

/// Expands an order into candidate groups of component buildpacks.
pub fn expand(
    order: &Order,
    pre: &[GroupEntry],
    post: &[GroupEntry],
    cat: &mut dyn Catalog,
) -> Result<Vec<Vec<Candidate>>, FrontendError> {
    let mut out = Vec::new();
    for group in order {
        let mut entries: Vec<GroupEntry> = Vec::new();
        for p in pre {
            if !group.iter().any(|g| g.id == p.id) {
                entries.push(p.clone());
            }
        }
        entries.extend(group.iter().cloned());
        for p in post {
            if !group.iter().any(|g| g.id == p.id) {
                entries.push(p.clone());
            }
        }
        for flat in expand_group(&entries, cat, 0)? {
            let mut seen: Vec<String> = Vec::new();
            let mut g = Vec::new();
            for c in flat {
                if seen.contains(&c.bp.id) {
                    continue;
                }
                seen.push(c.bp.id.clone());
                g.push(c);
            }
            out.push(g);
            if out.len() > MAX_GROUPS {
                return Err(FrontendError::new(format!(
                    "the order expands to more than {MAX_GROUPS} candidate groups"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{Api, parse_order_toml};
    use std::collections::BTreeMap;

    struct Fake(BTreeMap<String, Rc<Buildpack>>);

    impl Catalog for Fake {
        fn buildpack(&mut self, e: &GroupEntry) -> Result<Rc<Buildpack>, FrontendError> {
            self.0
                .get(&e.id)
                .cloned()
                .ok_or_else(|| FrontendError::new(format!("no {}", e.id)))
        }
    }

    fn bp(id: &str, order: Order) -> Rc<Buildpack> {
        Rc::new(Buildpack {
            file: format!("{id}/buildpack.toml"),
            api: Api { minor: 12 },
            id: id.into(),
            version: "1".into(),
            name: String::new(),
            homepage: String::new(),
            clear_env: false,
            targets: Vec::new(),
            order,
        })
    }

    fn ids(groups: &[Vec<Candidate>]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|c| format!("{}{}", c.bp.id, if c.optional { "?" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn composites_multiply_out() {
        let meta_order = parse_order_toml(
            "m",
            b"[[order]]\n[[order.group]]\nid=\"A\"\nversion=\"1\"\n[[order]]\n[[order.group]]\nid=\"B\"\nversion=\"1\"\n[[order.group]]\nid=\"C\"\nversion=\"1\"\n",
        )
        .unwrap();
        let mut cat = Fake(
            [
                ("meta".to_string(), bp("meta", meta_order)),
                ("A".to_string(), bp("A", vec![])),
                ("B".to_string(), bp("B", vec![])),
                ("C".to_string(), bp("C", vec![])),
                ("F".to_string(), bp("F", vec![])),
            ]
            .into_iter()
            .collect(),
        );
        let order = vec![vec![
            GroupEntry {
                id: "meta".into(),
                version: None,
                optional: true,
            },
            GroupEntry::new("F", None),
        ]];
        let g = expand(&order, &[GroupEntry::new("A", None)], &[], &mut cat).unwrap();
        // A is added in front; its later duplicate from meta is dropped.
        assert_eq!(ids(&g), vec!["A,F", "A,B?,C?,F"]);
        let g = expand(&vec![vec![GroupEntry::new("X", None)]], &[], &[], &mut cat);
        assert!(g.is_err());
    }

    #[test]
    fn cycles_are_refused() {
        let self_order = vec![vec![GroupEntry::new("loop", Some("1"))]];
        let mut cat = Fake(
            [("loop".to_string(), bp("loop", self_order))]
                .into_iter()
                .collect(),
        );
        let e = expand(
            &vec![vec![GroupEntry::new("loop", None)]],
            &[],
            &[],
            &mut cat,
        )
        .unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }
}
