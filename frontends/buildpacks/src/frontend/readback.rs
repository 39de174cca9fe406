//! Reading results back: files of solved exec outputs, and what a
//! buildpack left in its layers directory.

use kiln_frontend::{FileStat, FrontendError, Gateway};

use crate::descriptor::Buildpack;
use crate::layers::{self, Layer};
use crate::steps;

/// Longest log tail put into a message.
const LOG_TAIL: usize = 4000;

pub(crate) fn read_text(gw: &dyn Gateway, h: &str, path: &str) -> Result<String, FrontendError> {
    let data = gw.read_file(h, path, 0, None)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

pub(crate) fn list(gw: &dyn Gateway, h: &str, path: &str) -> Vec<FileStat> {
    let mut v = gw.read_dir(h, path, None).unwrap_or_default();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

pub(crate) fn tail(log: &str) -> String {
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

/// Reads an env directory (`(file name, content)` of regular files).
pub(crate) fn read_env_dir(
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
pub(crate) fn read_layers(
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
