//! Unit tests of the builder: exec mounts, file chains, dedupe, metadata,
//! platforms and sources.

use std::sync::Arc;

use prost::Message;

use super::*;
use crate::Digest;
use crate::pb::file_action::Action;
use crate::pb::op::Op as K;

fn marshal(st: &State) -> pb::Definition {
    st.marshal(&MarshalOptions::default()).unwrap()
}

fn ops(def: &pb::Definition) -> Vec<pb::Op> {
    def.def
        .iter()
        .map(|b| pb::Op::decode(b.as_slice()).unwrap())
        .collect()
}

fn digest_of(def: &pb::Definition, i: usize) -> String {
    Digest::of_bytes(&def.def[i]).to_string()
}

fn exec_of(op: &pb::Op) -> &pb::ExecOp {
    match &op.op {
        Some(K::Exec(e)) => e,
        other => panic!("not an exec: {other:?}"),
    }
}

fn file_of(op: &pb::Op) -> &pb::FileOp {
    match &op.op {
        Some(K::File(f)) => f,
        other => panic!("not a file op: {other:?}"),
    }
}

fn alpine() -> State {
    image("alpine").unwrap().state()
}

#[test]
fn exec_mounts_sorted_with_output_indexes() {
    let base = alpine();
    let ctx = local("context").state();
    let es = base
        .run(["make"])
        .mount(Mount::bind("/src", &ctx).selector("app").readonly())
        .mount(Mount::bind("/out", &State::scratch()))
        .mount(Mount::cache("/cache", "go-build", pb::CacheSharingOpt::Locked).from(&ctx))
        .mount(Mount::tmpfs("/tmp").size(1 << 20))
        .mount(Mount::bind("/work", &ctx).no_output())
        .mount(Mount::bind("/data", &ctx))
        .build()
        .unwrap();

    let out = es.mount("/out").unwrap();
    let def = marshal(&out);
    let all = ops(&def);
    let exec = exec_of(&all[all.len() - 2]);
    let dests: Vec<&str> = exec.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(
        dests,
        ["/", "/cache", "/data", "/out", "/src", "/tmp", "/work"]
    );
    let outputs: Vec<i64> = exec.mounts.iter().map(|m| m.output).collect();
    assert_eq!(outputs, [0, -1, 1, 2, -1, -1, -1]);
    let inputs: Vec<i64> = exec.mounts.iter().map(|m| m.input).collect();
    // alpine = 0, context = 1 (deduplicated), scratch and tmpfs = -1.
    assert_eq!(inputs, [0, 1, 1, -1, 1, -1, 1]);
    assert_eq!(all[all.len() - 2].inputs.len(), 2);
    assert_eq!(exec.mounts[1].mount_type, pb::MountType::Cache as i32);
    assert_eq!(
        exec.mounts[1].cache_opt,
        Some(pb::CacheOpt {
            id: "go-build".into(),
            sharing: pb::CacheSharingOpt::Locked as i32
        })
    );
    assert_eq!(
        exec.mounts[5].tmpfs_opt,
        Some(pb::TmpfsOpt { size: 1 << 20 })
    );
    assert!(exec.mounts[4].readonly);
    assert_eq!(exec.mounts[4].selector, "app");
    // The terminal op names output 2 of the exec.
    let terminal = all.last().unwrap();
    assert_eq!(terminal.inputs[0].index, 2);
    assert_eq!(terminal.inputs[0].digest, digest_of(&def, all.len() - 2));

    // Read-only mounts pass their source through; cache/tmpfs have none.
    assert!(es.mount("/cache").is_none());
    assert!(es.mount("/tmp").is_none());
    assert!(es.mount("/work").is_none());
    assert!(es.mount("/nope").is_none());
    let src = es.mount("/src").unwrap();
    assert!(Arc::ptr_eq(
        &src.output().unwrap().vertex,
        &ctx.output().unwrap().vertex
    ));
    assert_eq!(es.mount("/data").unwrap().output().unwrap().index(), 1);
    assert_eq!(es.root().output().unwrap().index(), 0);

    // Caps recorded in the exec's metadata.
    let md = &def.metadata[&digest_of(&def, all.len() - 2)];
    for cap in [
        "exec.meta.base",
        "exec.mount.bind",
        "exec.mount.cache",
        "exec.mount.cache.sharing",
        "exec.mount.selector",
        "exec.mount.tmpfs",
        "exec.mount.tmpfs.size",
    ] {
        assert_eq!(md.caps.get(cap), Some(&true), "{cap}");
    }
}

#[test]
fn exec_secrets_ssh_and_settings() {
    let st = alpine()
        .dir("/app")
        .user("nobody")
        .add_env("A", "1")
        .network(pb::NetMode::None);
    let es = st
        .run(["sh"])
        .cwd("sub")
        .env("B", "2")
        .hostname("builder")
        .extra_host("example", "10.0.0.1")
        .security(pb::SecurityMode::Insecure)
        .ulimit("nofile", 1024, 2048)
        .valid_exit_codes(vec![0, 1])
        .secret(SecretMount::new("token", "/run/secrets/token"))
        .secret_env("api", "API_KEY", true)
        .ssh(SshMount::default())
        .custom_name("RUN sh")
        .build()
        .unwrap();
    let def = marshal(&es.root());
    let all = ops(&def);
    let exec = exec_of(&all[1]);
    let meta = exec.meta.as_ref().unwrap();
    assert_eq!(meta.cwd, "/app/sub");
    assert_eq!(meta.user, "nobody");
    assert_eq!(meta.hostname, "builder");
    assert_eq!(
        meta.env,
        ["A=1", "B=2", "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]
    );
    assert!(meta.remove_mount_stubs_recursive);
    assert_eq!(meta.valid_exit_codes, [0, 1]);
    assert_eq!(meta.ulimit.len(), 1);
    assert_eq!(meta.extra_hosts[0].ip, "10.0.0.1");
    assert_eq!(exec.network, pb::NetMode::None as i32);
    assert_eq!(exec.security, pb::SecurityMode::Insecure as i32);
    // Secret and SSH mounts come after the sorted filesystem mounts.
    let kinds: Vec<(String, i32, i64)> = exec
        .mounts
        .iter()
        .map(|m| (m.dest.clone(), m.mount_type, m.input))
        .collect();
    assert_eq!(
        kinds,
        [
            ("/".into(), 0, 0),
            (
                "/run/secrets/token".into(),
                pb::MountType::Secret as i32,
                -1
            ),
            (
                "/run/buildkit/ssh_agent.0".into(),
                pb::MountType::Ssh as i32,
                -1
            ),
        ]
    );
    assert_eq!(exec.mounts[1].secret_opt.as_ref().unwrap().mode, 0o400);
    assert_eq!(exec.mounts[2].ssh_opt.as_ref().unwrap().id, "default");
    assert_eq!(exec.secretenv[0].name, "API_KEY");
    let md = &def.metadata[&digest_of(&def, 1)];
    assert_eq!(md.description[CUSTOM_NAME_KEY], "RUN sh");
    for cap in [
        "exec.meta.network",
        "exec.meta.security",
        "exec.meta.ulimit",
        "exec.validexitcode",
        "exec.mount.secret",
        "exec.secretenv",
        "exec.mount.ssh",
    ] {
        assert!(md.caps.contains_key(cap), "{cap}");
    }
    // The root state keeps the base state's settings, not the exec's.
    assert_eq!(es.root().get_env("B"), None);
    assert_eq!(es.root().get_dir(), "/app");
}

#[test]
fn exec_errors() {
    let empty: [&str; 0] = [];
    assert_eq!(
        alpine().run(empty).build().unwrap_err(),
        BuildError::EmptyArgs
    );
    let err = alpine()
        .run(["x"])
        .mount(Mount::tmpfs("/t").from(&alpine()))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::TmpfsWithSource { .. }));
    assert!(image("NotValid").is_err());
}

#[test]
fn readonly_root_passes_base_through() {
    let base = alpine();
    let es = base.run(["true"]).readonly_rootfs().build().unwrap();
    assert!(Arc::ptr_eq(
        &es.root().output().unwrap().vertex,
        &base.output().unwrap().vertex
    ));
}

#[test]
fn default_path_modes() {
    let st = alpine().run(["env"]).build().unwrap().root();
    let env_of = |mode| {
        let opts = MarshalOptions {
            default_path: mode,
            ..Default::default()
        };
        let def = st.marshal(&opts).unwrap();
        let op = pb::Op::decode(def.def[1].as_slice()).unwrap();
        let caps = def.metadata[&digest_of(&def, 1)].caps.clone();
        (exec_of(&op).meta.clone().unwrap().env, caps)
    };
    assert!(env_of(DefaultPath::Unknown).0.is_empty());
    let (env, caps) = env_of(DefaultPath::DaemonSets);
    assert!(env.is_empty());
    assert!(caps.contains_key("exec.meta.setsdefaultpath"));
    assert_eq!(
        env_of(DefaultPath::ClientSets).0,
        [format!("PATH={}", exec::DEFAULT_PATH_UNIX)]
    );
}

#[test]
fn file_actions_chain_like_buildkit() {
    let base = alpine().dir("/app");
    let other = local("context").state().dir("/ctx");
    let chain = mkdir(
        "data",
        0o755,
        MkdirOptions {
            make_parents: true,
            ..Default::default()
        },
    )
    .mkfile("data/f", 0o644, b"hi".to_vec(), MkfileOptions::default())
    .copy(
        &other,
        "src/",
        "dest/",
        CopyOptions {
            owner: Some(ChownOpt {
                user: Some(UserRef::Name("app".into())),
                group: Some(UserRef::Id(10)),
            }),
            mode: Some(CopyMode::Symbolic("u+x".into())),
            include_patterns: vec!["*.go".into()],
            ..Default::default()
        },
    )
    .rm(
        "/junk",
        RmOptions {
            allow_wildcard: true,
            ..Default::default()
        },
    )
    .symlink("/app/data", "link", SymlinkOptions::default());
    let st = base.file(chain);
    let def = marshal(&st);
    let all = ops(&def);
    assert_eq!(all.len(), 4, "image, local, file, terminal");
    let file_op = &all[2];
    assert!(file_op.platform.is_none(), "file ops carry no platform");
    assert_eq!(file_op.inputs.len(), 2);
    let f = file_of(file_op);
    let idx: Vec<(i64, i64, i64)> = f
        .actions
        .iter()
        .map(|a| (a.input, a.secondary_input, a.output))
        .collect();
    assert_eq!(
        idx,
        [
            (0, -1, -1),
            (2, -1, -1),
            (3, 1, -1),
            (4, -1, -1),
            (5, -1, 0)
        ]
    );
    match &f.actions[0].action {
        Some(Action::Mkdir(m)) => {
            assert_eq!(m.path, "/app/data");
            assert_eq!(m.mode, 0o755);
            assert!(m.make_parents);
            assert_eq!(m.timestamp, -1);
        }
        other => panic!("{other:?}"),
    }
    match &f.actions[2].action {
        Some(Action::Copy(c)) => {
            assert_eq!(c.src, "/ctx/src");
            assert_eq!(c.dest, "/app/dest/");
            assert_eq!(c.mode, 0);
            assert_eq!(c.mode_str, "u+x");
            assert_eq!(c.timestamp, -1);
            let owner = c.owner.as_ref().unwrap();
            assert_eq!(
                owner.user.as_ref().unwrap().user,
                Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                    name: "app".into(),
                    input: 0
                }))
            );
            assert_eq!(
                owner.group.as_ref().unwrap().user,
                Some(pb::user_opt::User::ById(10))
            );
        }
        other => panic!("{other:?}"),
    }
    match &f.actions[4].action {
        Some(Action::Symlink(s)) => {
            assert_eq!(s.oldpath, "/app/data");
            assert_eq!(s.newpath, "/app/link");
        }
        other => panic!("{other:?}"),
    }
    let md = &def.metadata[&digest_of(&def, 2)];
    for cap in [
        "file.base",
        "file.copy.includeexcludepatterns",
        "file.copy.modestring",
        "file.rm.wildcard",
        "file.symlink.create",
    ] {
        assert!(md.caps.contains_key(cap), "{cap}");
    }
}

#[test]
fn copy_from_action_chain_refers_to_earlier_action() {
    let staged = CopySource::Actions {
        base: State::scratch(),
        actions: mkfile("/gen", 0o600, b"x".to_vec(), MkfileOptions::default()),
    };
    let st = alpine().file(copy(
        staged,
        "/gen",
        "/gen",
        CopyOptions {
            mode: Some(CopyMode::Bits(0o644)),
            timestamp: Some(5),
            ..Default::default()
        },
    ));
    let def = marshal(&st);
    let all = ops(&def);
    let f = file_of(&all[1]);
    let idx: Vec<(i64, i64, i64)> = f
        .actions
        .iter()
        .map(|a| (a.input, a.secondary_input, a.output))
        .collect();
    // inputs: [alpine]; action 0 = mkfile on scratch, action 1 = copy.
    assert_eq!(idx, [(-1, -1, -1), (0, 1, 0)]);
    match &f.actions[1].action {
        Some(Action::Copy(c)) => {
            assert_eq!(c.mode, 0o644);
            assert_eq!(c.timestamp, 5);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn marshal_dedupes_by_digest_and_orders_post_order() {
    let a = alpine();
    let b = image("docker.io/library/alpine:latest").unwrap().state();
    let m = merge(&[a.clone(), b.clone(), State::scratch()]);
    let def = marshal(&m);
    let all = ops(&def);
    // The two image states are separate vertices with identical bytes.
    assert_eq!(all.len(), 3, "image once, merge, terminal");
    match &all[1].op {
        Some(K::Merge(mo)) => assert_eq!(
            mo.inputs,
            [pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(all[1].inputs[0], all[1].inputs[1]);
    assert!(all[1].platform.is_none());

    // A diamond: the shared base appears once, before both users.
    let base = alpine();
    let left = base.run(["a"]).build().unwrap().root();
    let right = base.run(["b"]).build().unwrap().root();
    let d = diff(&left, &right);
    let def = marshal(&d);
    let all = ops(&def);
    assert_eq!(all.len(), 5);
    assert!(matches!(all[0].op, Some(K::Source(_))));
    assert!(matches!(all[3].op, Some(K::Diff(_))));
    let checked = crate::Definition::from_pb(def).unwrap();
    assert_eq!(checked.ops().len(), 4);
}

#[test]
fn merge_and_diff_shortcuts() {
    let a = alpine();
    assert!(merge(&[]).is_scratch());
    assert!(Arc::ptr_eq(
        &merge(&[State::scratch(), a.clone()])
            .output()
            .unwrap()
            .vertex,
        &a.output().unwrap().vertex
    ));
    assert!(Arc::ptr_eq(
        &diff(&State::scratch(), &a).output().unwrap().vertex,
        &a.output().unwrap().vertex
    ));
    let d = diff(&a, &State::scratch());
    let all = ops(&marshal(&d));
    match &all[1].op {
        Some(K::Diff(op)) => {
            assert_eq!(op.lower, Some(pb::LowerDiffInput { input: 0 }));
            assert_eq!(op.upper, Some(pb::UpperDiffInput { input: -1 }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn metadata_and_terminal_caps() {
    let st = image("alpine")
        .unwrap()
        .custom_name("base")
        .ignore_cache()
        .progress_group("pg", "Group", false)
        .state();
    let def = marshal(&st);
    assert_eq!(def.def.len(), 2);
    let src = &def.metadata[&digest_of(&def, 0)];
    assert!(src.ignore_cache);
    assert_eq!(src.description[CUSTOM_NAME_KEY], "base");
    assert_eq!(src.caps.get("source.image"), Some(&true));
    assert_eq!(src.progress_group.as_ref().unwrap().id, "pg");
    let term = &def.metadata[&digest_of(&def, 1)];
    let caps: Vec<&str> = term.caps.keys().map(String::as_str).collect();
    assert_eq!(
        caps,
        [
            "constraints",
            "meta.description",
            "meta.ignorecache",
            "platform"
        ]
    );

    // Marshal-time metadata applies to every op.
    let opts = MarshalOptions {
        metadata: pb::OpMetadata {
            ignore_cache: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let def = local("context").state().marshal(&opts).unwrap();
    assert!(def.metadata[&digest_of(&def, 0)].ignore_cache);
}

#[test]
fn platforms_follow_buildkit_rules() {
    let arm = linux_arm64();
    // Image without a platform takes the marshal default.
    let opts = MarshalOptions {
        platform: Some(arm.clone()),
        ..Default::default()
    };
    let def = alpine().marshal(&opts).unwrap();
    assert_eq!(ops(&def)[0].platform.as_ref(), Some(&arm));
    // Its own platform wins over the marshal-time one.
    let def = image("alpine")
        .unwrap()
        .platform(linux_amd64())
        .state()
        .marshal(&opts)
        .unwrap();
    assert_eq!(ops(&def)[0].platform, Some(linux_amd64()));
    // Non-image sources drop it; oci-layout keeps it; every op has empty
    // worker constraints.
    for (st, keep) in [
        (local("context").state(), false),
        (http("https://example.com/a").state(), false),
        (
            git("https://github.com/moby/buildkit.git", "v0.1").state(),
            false,
        ),
        (
            oci_layout(
                "store@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .state(),
            true,
        ),
    ] {
        let op = &ops(&marshal(&st))[0];
        assert_eq!(op.platform.is_some(), keep);
        assert_eq!(op.constraints, Some(pb::WorkerConstraints::default()));
    }
    // Exec inherits the state's platform.
    let st = alpine()
        .platform(arm.clone())
        .run(["x"])
        .build()
        .unwrap()
        .root();
    assert_eq!(ops(&marshal(&st))[1].platform.as_ref(), Some(&arm));
}

#[test]
fn source_attributes() {
    let l = local("context")
        .include_patterns(vec!["a<b".into(), "*.rs".into()])
        .exclude_patterns(vec!["target".into()])
        .shared_key_hint("ctx")
        .unique_id("u1")
        .state();
    let op = &ops(&marshal(&l))[0];
    let Some(K::Source(s)) = &op.op else { panic!() };
    assert_eq!(s.identifier, "local://context");
    assert_eq!(s.attrs["local.includepattern"], r#"["a\u003cb","*.rs"]"#);
    assert_eq!(s.attrs["local.excludepatterns"], r#"["target"]"#);
    assert_eq!(s.attrs["local.sharedkeyhint"], "ctx");
    assert_eq!(s.attrs["local.unique"], "u1");
    // Deterministic: no random attribute unless asked for.
    let plain = &ops(&marshal(&local("context").state()))[0];
    let Some(K::Source(s)) = &plain.op else {
        panic!()
    };
    assert!(s.attrs.is_empty());

    let h = http("https://example.com/f.tgz")
        .filename("f.tgz")
        .perm(0o644)
        .uid(1000)
        .header("Accept", "x")
        .state();
    let Some(K::Source(s)) = &ops(&marshal(&h))[0].op else {
        panic!()
    };
    assert_eq!(s.identifier, "https://example.com/f.tgz");
    assert_eq!(s.attrs["http.perm"], "0644");
    assert_eq!(s.attrs["http.uid"], "1000");
    assert_eq!(s.attrs["http.header.Accept"], "x");

    let g = git("git@github.com:moby/buildkit.git", "master")
        .subdir("docs")
        .keep_git_dir()
        .state();
    let Some(K::Source(s)) = &ops(&marshal(&g))[0].op else {
        panic!()
    };
    assert_eq!(
        s.identifier,
        "git://github.com/moby/buildkit.git#master:docs"
    );
    assert_eq!(s.attrs["git.keepgitdir"], "true");
    assert_eq!(s.attrs["git.mountsshsock"], "default");
    assert_eq!(s.attrs["git.fullurl"], "git@github.com:moby/buildkit.git");
    assert_eq!(s.attrs["git.authtokensecret"], "GIT_AUTH_TOKEN");

    let i = image("alpine")
        .unwrap()
        .resolve_mode(ResolveMode::ForcePull)
        .layer_limit(2)
        .state();
    let def = marshal(&i);
    let Some(K::Source(s)) = &ops(&def)[0].op else {
        panic!()
    };
    assert_eq!(s.attrs["image.resolvemode"], "pull");
    assert_eq!(s.attrs["image.layerlimit"], "2");
    assert!(
        def.metadata[&digest_of(&def, 0)]
            .caps
            .contains_key("source.image.resolvemode")
    );
}

#[test]
fn scratch_marshals_to_empty_definition() {
    let def = marshal(&scratch());
    assert!(def.def.is_empty());
    assert!(def.metadata.is_empty());
    assert_eq!(def, pb::Definition::default());
}

#[test]
fn source_locations_are_collected() {
    let map = Arc::new(SourceMap {
        filename: "Dockerfile".into(),
        language: "Dockerfile".into(),
        data: b"FROM alpine\nRUN true\n".to_vec(),
        definition: None,
    });
    let range = |line| pb::Range {
        start: Some(pb::Position { line, character: 0 }),
        end: Some(pb::Position { line, character: 0 }),
    };
    let base = image("alpine")
        .unwrap()
        .source_location(&map, vec![range(1)])
        .state();
    let st = base
        .run(["true"])
        .source_location(&map, vec![range(2)])
        .build()
        .unwrap()
        .root();
    let def = marshal(&st);
    let source = def.source.as_ref().unwrap();
    assert_eq!(source.infos.len(), 1);
    assert_eq!(source.infos[0].filename, "Dockerfile");
    let loc = &source.locations[&digest_of(&def, 1)].locations[0];
    assert_eq!(loc.source_index, 0);
    assert_eq!(loc.ranges, [range(2)]);
    assert!(source.locations.contains_key(&digest_of(&def, 0)));
}

#[test]
fn state_env_and_dir() {
    let st = scratch()
        .add_env("A", "1")
        .add_env("B", "2")
        .add_env("A", "3")
        .dir("/x")
        .dir("y/../z");
    assert_eq!(st.env(), ["B=2", "A=3"]);
    assert_eq!(st.get_dir(), "/x/z");
    // Absolute directories are kept verbatim, like BuildKit's `State.Dir`.
    assert_eq!(st.dir("/abs/").get_dir(), "/abs/");
    assert_eq!(st.del_env("A").env(), ["B=2"]);
}
