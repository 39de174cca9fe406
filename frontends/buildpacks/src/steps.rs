//! The LLB the frontend emits: the app and platform states, one exec per
//! `bin/detect` and `bin/build`, the build-cache save exec, and the export
//! graph (run image + launch layers + app + config, merged).
//!
//! Paths inside the containers follow the platform spec: the app at
//! `/workspace`, layers at `/layers/<escaped id>`, the platform dir at
//! `/platform`, buildpacks at `/cnb/buildpacks/<escaped id>/<version>`.
//! Exec outputs keep those absolute paths in their states (the app state
//! holds `/workspace/…`, a layers state `/layers/<id>/…`), mounted with a
//! selector, so the mount root can be created with the build user as owner
//! and the export merges the states as they are.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{
    ChownOpt, Constraints, CopyOptions, MkdirOptions, MkfileOptions, Mount, OpOptions, State, copy,
    image, local, merge_with, mkdir, mkfile,
};
use kiln_frontend::llb::pb;

use crate::descriptor::Buildpack;
use crate::env::Env;
use crate::options::{BUILDPACKS_LOCAL, CONTEXT_LOCAL};

/// 1980-01-01T00:00:01Z in nanoseconds: the time the lifecycle gives every
/// entry of the layers it creates.
pub const EPOCH_NS: i64 = 315_532_801_000_000_000;

/// The app directory.
pub const APP_DIR: &str = "/workspace";
/// The layers directory.
pub const LAYERS_DIR: &str = "/layers";
/// The platform directory.
pub const PLATFORM_DIR: &str = "/platform";

/// Quotes a string for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn llb_err(e: impl std::fmt::Display) -> FrontendError {
    FrontendError::new(format!("building LLB: {e}"))
}

/// What every exec shares: the build image, user and network.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The build image.
    pub build: State,
    /// `uid:gid` from the build image's `CNB_USER_ID`/`CNB_GROUP_ID`, or
    /// empty for the image's own user.
    pub user: String,
    /// Owner for created mount roots and exported dirs.
    pub owner: Option<(u32, u32)>,
    /// Host network instead of none.
    pub network_host: bool,
}

impl Runner {
    fn mkdir_opts(&self) -> MkdirOptions {
        MkdirOptions {
            make_parents: true,
            owner: self.owner.map(|(u, g)| ChownOpt::ids(u, g)),
            timestamp: Some(EPOCH_NS),
        }
    }

    /// An empty state holding only `dir` (with parents), owned by the user.
    pub fn seed(&self, dir: &str) -> State {
        State::scratch().file(mkdir(dir, 0o755, self.mkdir_opts()))
    }

    fn exec_base(&self, args: Vec<String>, env: &Env) -> kiln_frontend::llb::builder::Exec {
        let mut e = self.build.run(args).cwd(APP_DIR);
        for (k, v) in env.pairs() {
            e = e.env(k.clone(), v.clone());
        }
        if !self.user.is_empty() {
            e = e.user(self.user.clone());
        }
        e.network(if self.network_host {
            pb::NetMode::Host
        } else {
            pb::NetMode::None
        })
    }
}

/// The app: the `context` local filtered by the project's patterns, at
/// `/workspace`, owned by the build user.
pub fn app_state(runner: &Runner, include: Vec<String>, exclude: Vec<String>) -> State {
    let mut l = local(CONTEXT_LOCAL)
        .shared_key_hint(CONTEXT_LOCAL)
        .custom_name("[buildpacks] load app");
    if !include.is_empty() {
        l = l.include_patterns(include);
    }
    if !exclude.is_empty() {
        l = l.exclude_patterns(exclude);
    }
    let src = l.state();
    runner.seed(APP_DIR).file(copy(
        &src,
        "/",
        APP_DIR,
        CopyOptions {
            owner: runner.owner.map(|(u, g)| ChownOpt::ids(u, g)),
            copy_dir_contents_only: true,
            create_dest_path: true,
            ..Default::default()
        },
    ))
}

/// The platform dir: `/env/<NAME>` per platform variable, raw values.
pub fn platform_state(env: &[(String, String)]) -> State {
    let opts = MkdirOptions {
        make_parents: true,
        owner: None,
        timestamp: Some(EPOCH_NS),
    };
    let mut action = mkdir("/env", 0o755, opts);
    for (k, v) in env {
        action = action.mkfile(
            format!("/env/{k}"),
            0o644,
            v.as_bytes().to_vec(),
            MkfileOptions {
                owner: None,
                timestamp: Some(EPOCH_NS),
            },
        );
    }
    State::scratch().file(action)
}

/// A local source with only one buildpack's directory.
pub fn buildpack_source(bp: &Buildpack) -> State {
    let dir = format!("{}/{}", bp.escaped_id(), bp.version);
    local(BUILDPACKS_LOCAL)
        .include_patterns(vec![dir.clone()])
        .shared_key_hint(format!("{BUILDPACKS_LOCAL}-{dir}"))
        .custom_name(format!("[buildpacks] load {}", bp.key()))
        .state()
}

/// Where a buildpack is mounted.
pub fn buildpack_dir(bp: &Buildpack) -> String {
    format!("/cnb/buildpacks/{}/{}", bp.escaped_id(), bp.version)
}

/// `<escaped id>/<version>`: the buildpack's path in the buildpacks
/// context, and where its detect writes under `detect/` of the output.
pub fn bp_rel(bp: &Buildpack) -> String {
    format!("{}/{}", bp.escaped_id(), bp.version)
}

const DETECT_MOUNT: &str = "/cnb/detect";

/// The env `CNB_*` variables common to detect and build.
pub struct Contract<'a> {
    /// The buildpack.
    pub bp: &'a Buildpack,
    /// Build image env (filtered) + earlier build layers.
    pub base: &'a Env,
    /// Platform env.
    pub platform_env: &'a [(String, String)],
    /// `CNB_TARGET_*` pairs.
    pub target_env: &'a [(String, String)],
    /// `CNB_EXEC_ENV`.
    pub exec_env: &'a str,
}

impl Contract<'_> {
    fn env(&self, extra: &[(&str, String)]) -> Env {
        let mut env = self.base.clone();
        if !self.bp.clear_env {
            env.apply_platform(self.platform_env);
        }
        env.set("CNB_BUILDPACK_DIR", &buildpack_dir(self.bp));
        env.set("CNB_PLATFORM_DIR", PLATFORM_DIR);
        for (k, v) in extra {
            env.set(k, v);
        }
        for (k, v) in self.target_env {
            env.set(k, v);
        }
        if self.bp.api.minor >= 12 {
            env.set("CNB_EXEC_ENV", self.exec_env);
        }
        env
    }
}

/// One `bin/detect`: its output state holds `detect/<escaped id>/<version>/`
/// with `code`, `log` and `plan.toml`. The exec itself always succeeds so
/// that the exit code can be read back.
pub fn detect(
    runner: &Runner,
    c: &Contract<'_>,
    app: &State,
    platform: &State,
) -> Result<State, FrontendError> {
    let out = format!("{DETECT_MOUNT}/{}", bp_rel(c.bp));
    let plan = format!("{out}/plan.toml");
    let env = c.env(&[("CNB_BUILD_PLAN_PATH", plan.clone())]);
    let script = format!(
        "mkdir -p {o} && : > {p} || exit 1\n\
         {d}/bin/detect {pl} {p} > {o}/log 2>&1\n\
         echo $? > {o}/code\n\
         cat {o}/log\n\
         exit 0\n",
        o = sh_quote(&out),
        p = sh_quote(&plan),
        d = sh_quote(&buildpack_dir(c.bp)),
        pl = sh_quote(PLATFORM_DIR),
    );
    let st = runner
        .exec_base(vec!["/bin/sh".into(), "-c".into(), script], &env)
        .mount(
            Mount::bind(APP_DIR, app)
                .selector(APP_DIR.trim_start_matches('/'))
                .readonly(),
        )
        .mount(Mount::bind(PLATFORM_DIR, platform).readonly())
        .mount(
            Mount::bind(buildpack_dir(c.bp), &buildpack_source(c.bp))
                .selector(bp_rel(c.bp))
                .readonly(),
        )
        .mount(Mount::bind(DETECT_MOUNT, &runner.seed("/detect")).selector("detect"))
        .custom_name(format!("[buildpacks] detect {}", c.bp.key()))
        .build()
        .map_err(llb_err)?;
    st.mount(DETECT_MOUNT)
        .ok_or_else(|| llb_err("the detect exec has no output mount"))
}

const PLAN_MOUNT: &str = "/cnb/plan";
const CACHE_MOUNT: &str = "/cnb/cache";

/// The layers directory of a buildpack.
pub fn layers_dir(bp: &Buildpack) -> String {
    format!("{LAYERS_DIR}/{}", bp.escaped_id())
}

/// A cache mount ID for one buildpack's cached layers.
pub fn cache_id(namespace: &str, bp: &Buildpack) -> String {
    format!("kiln-buildpacks/{namespace}/{}", bp.id)
}

/// What a build exec produces.
#[derive(Debug, Clone)]
pub struct BuildStates {
    /// The app after this buildpack (`/workspace/…`).
    pub app: State,
    /// The buildpack's layers (`/layers/<id>/…`).
    pub layers: State,
}

/// One `bin/build`. `earlier` are the read-only layer states (build layers
/// only) of earlier buildpacks. The cache mount is copied into the layers
/// dir before `bin/build` runs.
pub fn build(
    runner: &Runner,
    c: &Contract<'_>,
    app: &State,
    platform: &State,
    plan_toml: &str,
    earlier: &[(String, State)],
    cache_id: &str,
) -> Result<BuildStates, FrontendError> {
    let layers = layers_dir(c.bp);
    let plan_path = format!("{PLAN_MOUNT}/plan.toml");
    let env = c.env(&[
        ("CNB_LAYERS_DIR", layers.clone()),
        ("CNB_BP_PLAN_PATH", plan_path.clone()),
    ]);
    let plan_state = State::scratch().file(mkfile(
        "/plan.toml",
        0o644,
        plan_toml.as_bytes().to_vec(),
        MkfileOptions {
            owner: None,
            timestamp: Some(EPOCH_NS),
        },
    ));
    // bin/build's output streams into the progress log and its exit code
    // is the exec's: a failed build is not cached.
    let script = format!(
        "if [ -d {cache} ]; then\n\
         cd {cache} || exit 1\n\
         for f in * .[!.]* ..?*; do if [ -e \"$f\" ]; then cp -a \"$f\" {l}/ || exit 1; fi; done\n\
         cd {app} || exit 1\n\
         fi\n\
         exec {d}/bin/build {l} {pl} {plan}\n",
        app = sh_quote(APP_DIR),
        cache = sh_quote(CACHE_MOUNT),
        l = sh_quote(&layers),
        d = sh_quote(&buildpack_dir(c.bp)),
        pl = sh_quote(PLATFORM_DIR),
        plan = sh_quote(&plan_path),
    );
    let mut e = runner
        .exec_base(vec!["/bin/sh".into(), "-c".into(), script], &env)
        .mount(Mount::bind(APP_DIR, app).selector(APP_DIR.trim_start_matches('/')))
        .mount(Mount::bind(&layers, &runner.seed(&layers)).selector(layers.trim_start_matches('/')))
        .mount(Mount::bind(PLATFORM_DIR, platform).readonly())
        .mount(
            Mount::bind(buildpack_dir(c.bp), &buildpack_source(c.bp))
                .selector(bp_rel(c.bp))
                .readonly(),
        )
        .mount(Mount::bind(PLAN_MOUNT, &plan_state).readonly())
        .mount(Mount::cache(
            CACHE_MOUNT,
            cache_id,
            pb::CacheSharingOpt::Locked,
        ));
    for (dir, st) in earlier {
        e = e.mount(
            Mount::bind(dir.clone(), st)
                .selector(dir.trim_start_matches('/'))
                .readonly(),
        );
    }
    let st = e
        .custom_name(format!("[buildpacks] build {}", c.bp.key()))
        .build()
        .map_err(llb_err)?;
    let get = |d: &str| {
        st.mount(d)
            .ok_or_else(|| llb_err(format!("the build exec has no output at {d}")))
    };
    Ok(BuildStates {
        app: get(APP_DIR)?,
        layers: get(&layers)?,
    })
}

/// Replaces the cache of one buildpack with its `cache = true` layers:
/// `(layer name, <layer>.toml without [types])`.
pub fn save_cache(
    runner: &Runner,
    bp: &Buildpack,
    layers: &State,
    cached: &[(String, String)],
    cache_id: &str,
    env: &Env,
) -> Result<State, FrontendError> {
    let dir = layers_dir(bp);
    let mut meta = State::scratch().file(mkdir(
        "/meta",
        0o755,
        MkdirOptions {
            make_parents: true,
            owner: None,
            timestamp: Some(EPOCH_NS),
        },
    ));
    let mut script = format!(
        "cd {cache} || exit 1\nrm -rf -- * .[!.]* ..?* || exit 1\n",
        cache = sh_quote(CACHE_MOUNT)
    );
    for (name, toml) in cached {
        meta = meta.file(mkfile(
            format!("/meta/{name}.toml"),
            0o644,
            toml.as_bytes().to_vec(),
            MkfileOptions {
                owner: None,
                timestamp: Some(EPOCH_NS),
            },
        ));
        script.push_str(&format!(
            "cp -a {src} . 2>/dev/null || cp -R {src} . || exit 1\ncp /cnb/meta/{n}.toml . || exit 1\n",
            src = sh_quote(&format!("{dir}/{name}")),
            n = sh_quote(name),
        ));
    }
    let st = runner
        .exec_base(vec!["/bin/sh".into(), "-c".into(), script], env)
        // As root: a new cache dir belongs to root, and `cp -a` as root
        // keeps the build user as the owner of what it copies.
        .user("0:0")
        .mount(
            Mount::bind(&dir, layers)
                .selector(dir.trim_start_matches('/'))
                .readonly(),
        )
        .mount(Mount::bind("/cnb/meta", &meta).selector("meta").readonly())
        .mount(Mount::cache(
            CACHE_MOUNT,
            cache_id,
            pb::CacheSharingOpt::Locked,
        ))
        .custom_name(format!("[buildpacks] save cache of {}", bp.key()))
        .build()
        .map_err(llb_err)?;
    Ok(st.root())
}

/// Only the named layer dirs of a layers state (what later buildpacks see).
pub fn select_layers(runner: &Runner, bp: &Buildpack, layers: &State, names: &[String]) -> State {
    let dir = layers_dir(bp);
    let mut st = runner.seed(&dir);
    for n in names {
        let p = format!("{dir}/{n}");
        st = st.file(copy(
            layers,
            p.clone(),
            p,
            CopyOptions {
                create_dest_path: true,
                ..Default::default()
            },
        ));
    }
    st
}

/// A copy of `top` (an absolute dir) of `st` into scratch with every entry,
/// `top` included, stamped with [`EPOCH_NS`]. Copying the whole tree in one
/// go sets each directory's time after its children were created, so no
/// directory keeps the time of the build.
fn restamp(st: &State, top: &str, name: String) -> State {
    State::scratch().file_with(
        copy(
            st,
            top,
            top,
            CopyOptions {
                create_dest_path: true,
                timestamp: Some(EPOCH_NS),
                ..Default::default()
            },
        ),
        Constraints::default().custom_name(name),
    )
}

/// One launch layer as its own state (`/layers/<id>/<layer>`).
pub fn export_layer(runner: &Runner, bp: &Buildpack, layers: &State, name: &str) -> State {
    let dir = layers_dir(bp);
    let p = format!("{dir}/{name}");
    let only = runner.seed(&dir).file(copy(
        layers,
        p.clone(),
        p,
        CopyOptions {
            create_dest_path: true,
            ..Default::default()
        },
    ));
    restamp(
        &only,
        LAYERS_DIR,
        format!("[buildpacks] export layer {}:{name}", bp.key()),
    )
}

/// The app for the image.
pub fn export_app(app: &State) -> State {
    restamp(app, APP_DIR, "[buildpacks] export app".into())
}

/// `/layers/config/metadata.toml`.
pub fn config_layer(metadata_toml: &str) -> State {
    let st = State::scratch().file(
        mkdir(
            "/layers/config",
            0o755,
            MkdirOptions {
                make_parents: true,
                owner: None,
                timestamp: Some(EPOCH_NS),
            },
        )
        .mkfile(
            "/layers/config/metadata.toml",
            0o644,
            metadata_toml.as_bytes().to_vec(),
            MkfileOptions {
                owner: None,
                timestamp: Some(EPOCH_NS),
            },
        ),
    );
    restamp(&st, LAYERS_DIR, "[buildpacks] export config".into())
}

/// The image: run image, then each launch layer, the app and the config.
pub fn final_image(run: &State, launch_layers: &[State], app: &State, config: &State) -> State {
    let mut all = vec![run.clone()];
    all.extend(launch_layers.iter().cloned());
    all.push(app.clone());
    all.push(config.clone());
    merge_with(
        &all,
        Constraints::default().custom_name("[buildpacks] image"),
    )
}

/// An image source pinned to its digest.
pub fn image_state(reference: &str, digest: &str) -> Result<State, FrontendError> {
    let normalized = kiln_frontend::llb::builder::normalize_image_ref(reference)
        .map_err(|e| FrontendError::new(format!("image {reference}: {e}")))?;
    let pinned = if normalized.contains('@') || digest.is_empty() {
        normalized
    } else {
        format!("{normalized}@{digest}")
    };
    Ok(image(&pinned).map_err(llb_err)?.state())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
