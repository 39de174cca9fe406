//! Reading the inputs: `project.toml` from the app, the order and the
//! buildpack descriptors from the `buildpacks` local.

use std::collections::BTreeMap;
use std::rc::Rc;

use kiln_frontend::llb::builder::{OpOptions, local};
use kiln_frontend::llb::pb;
use kiln_frontend::{FrontendError, Gateway};

use super::readback::list;
use super::solve;
use crate::descriptor::{self, Buildpack, GroupEntry, Order, escape_id};
use crate::options::{CONTEXT_LOCAL, Options, OrderSource};
use crate::order::Catalog;
use crate::project::{self, PROJECT_TOML, Project};

/// Looks buildpacks up in the `buildpacks` local.
pub(crate) struct GwCatalog<'a> {
    pub(crate) gw: &'a dyn Gateway,
    pub(crate) handle: String,
    pub(crate) loaded: BTreeMap<(String, String), Rc<Buildpack>>,
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

pub(crate) fn read_project(
    gw: &dyn Gateway,
    platform: &pb::Platform,
) -> Result<Project, FrontendError> {
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

pub(crate) fn read_order(
    gw: &dyn Gateway,
    opts: &Options,
    handle: &str,
) -> Result<Order, FrontendError> {
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
