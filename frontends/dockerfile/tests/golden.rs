//! Golden tests of the Dockerfile → LLB conversion.
//!
//! Every directory under `testdata/` is a case: a `Dockerfile`, optional
//! `options.json` (the frontend options map, e.g. `{"target": "build",
//! "build-arg:X": "1", "context:base": "docker-image://alpine"}`) and an
//! optional `context/` (its `.dockerignore` is used). The expectations are
//! `llb.jsonl` (`dump_json_lines` of the definition), `config.json` (the image
//! config, pretty-printed) and `warnings.txt`, or `error.txt` when the
//! conversion must fail. `BLESS=1 cargo test -p kiln-dockerfile --test
//! golden` rewrites them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::convert::{
    ConvertOptions, ImageResolver, ResolvedImage, Warning, dockerfile_to_llb, parse_dockerignore,
};
use kiln_frontend::llb::{Definition, Digest, dump};
use kiln_frontend::testing::MockGateway;
use kiln_frontend::{FrontendError, Platform};

/// A registry with one busybox-like config for every reference; references
/// containing `onbuild` carry ONBUILD triggers, `missing` fails.
struct FakeResolver;

impl ImageResolver for FakeResolver {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, FrontendError> {
        if reference.contains("missing") {
            return Err(FrontendError::new(format!("{reference}: not found")));
        }
        let onbuild = if reference.contains("onbuild") {
            r#","OnBuild":["RUN echo triggered","COPY trigger.txt /trigger/"]"#
        } else {
            ""
        };
        let variant = platform
            .variant
            .as_ref()
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        let config = format!(
            r#"{{"architecture":"{}","os":"{}"{variant},"config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]{onbuild}}},"rootfs":{{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}},"history":[{{"created_by":"BusyBox base","comment":"base"}}]}}"#,
            platform.architecture, platform.os
        );
        Ok(ResolvedImage {
            digest: Digest::of_bytes(reference.as_bytes()).to_string(),
            config: config.into_bytes(),
        })
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn options_of(dir: &Path) -> ConvertOptions {
    let mut map = BTreeMap::new();
    if let Ok(text) = fs::read_to_string(dir.join("options.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).expect("options.json is JSON");
        for (k, v) in v.as_object().expect("options.json is an object") {
            map.insert(
                k.clone(),
                v.as_str().expect("option values are strings").to_string(),
            );
        }
    }
    let mut opts = ConvertOptions::from_options(&map).expect("options parse");
    if let Ok(text) = fs::read_to_string(dir.join("context/.dockerignore")) {
        opts.dockerignore = parse_dockerignore(&text);
    }
    opts
}

fn render_warnings(ws: &[Warning]) -> String {
    let mut out = String::new();
    for w in ws {
        if let Some(l) = &w.location {
            out.push_str(&format!("{}:{}: ", l.file, l.start_line));
        }
        if let Some(r) = &w.rule {
            out.push_str(&format!("[{r}] "));
        }
        out.push_str(&w.message);
        out.push('\n');
    }
    out
}

/// `Definition.source`: the files, then each op's location (ops by their
/// position in `llb.jsonl`).
fn render_sources(def: &Definition) -> String {
    let mut out = String::new();
    let Some(src) = def.source() else {
        return out;
    };
    for info in &src.infos {
        out.push_str(&format!(
            "file {} ({}, {} bytes)\n",
            info.filename,
            info.language,
            info.data.len()
        ));
    }
    for (i, e) in def.entries().iter().enumerate() {
        if let Some(locs) = src.locations.get(e.digest.as_str()) {
            for l in &locs.locations {
                let ranges: Vec<String> = l
                    .ranges
                    .iter()
                    .map(|r| {
                        let line = |p: &Option<kiln_frontend::llb::pb::Position>| {
                            p.as_ref().map_or(0, |p| p.line)
                        };
                        format!("{}-{}", line(&r.start), line(&r.end))
                    })
                    .collect();
                out.push_str(&format!(
                    "op {i}: source {} lines {}\n",
                    l.source_index,
                    ranges.join(",")
                ));
            }
        }
    }
    out
}

/// The files a case produces: name → content.
fn run_case(dir: &Path) -> BTreeMap<&'static str, String> {
    let source = fs::read(dir.join("Dockerfile")).expect("case has a Dockerfile");
    let opts = options_of(dir);
    let mut out = BTreeMap::new();
    match dockerfile_to_llb(&source, &opts, &FakeResolver) {
        Ok((def, config, warnings)) => {
            let again = dockerfile_to_llb(&source, &opts, &FakeResolver).expect("second run");
            assert_eq!(
                again.0,
                def,
                "{}: definition bytes differ between runs",
                dir.display()
            );
            assert_eq!(
                again.1,
                config,
                "{}: config bytes differ between runs",
                dir.display()
            );
            let (dumped, sources) = match Definition::decode(&def) {
                Ok(d) => (dump::dump_json_lines(&d), render_sources(&d)),
                Err(_) => (String::new(), String::new()),
            };
            out.insert("llb.jsonl", dumped);
            out.insert("source.txt", sources);
            let v: serde_json::Value = serde_json::from_slice(&config).expect("config is JSON");
            out.insert(
                "config.json",
                serde_json::to_string_pretty(&v).expect("pretty") + "\n",
            );
            let w = render_warnings(&warnings);
            if !w.is_empty() {
                out.insert("warnings.txt", w);
            }
        }
        Err(e) => {
            out.insert("error.txt", format!("{e}\n"));
        }
    }
    out
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(testdata())
        .expect("testdata directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "expected at least 40 golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let got = run_case(dir);
        for file in [
            "llb.jsonl",
            "source.txt",
            "config.json",
            "warnings.txt",
            "error.txt",
        ] {
            let path = dir.join(file);
            let want = fs::read_to_string(&path).ok();
            let have = got.get(file);
            if bless {
                match have {
                    Some(h) => fs::write(&path, h).expect("write expectation"),
                    None => {
                        let _ = fs::remove_file(&path);
                    }
                }
                continue;
            }
            if want.as_ref() != have {
                failures.push(format!(
                    "{name}/{file}:\n--- want\n{}\n--- have\n{}",
                    want.unwrap_or_else(|| "<absent>".into()),
                    have.cloned().unwrap_or_else(|| "<absent>".into())
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn convert_through_the_gateway() {
    let gw = MockGateway::new()
        .with_option("build-arg:MSG", "hi")
        .with_file(
            "dockerfile",
            "Dockerfile",
            b"FROM busybox\nARG MSG\nRUN echo $MSG\n",
        )
        .with_file("context", ".dockerignore", b"node_modules\n")
        .with_image(
            "docker.io/library/busybox:latest",
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]}}"#,
        );
    let res = kiln_dockerfile::convert::convert(&gw).expect("convert");
    assert_eq!(res.refs.len(), 1);
    let (key, config) = &res.metadata[0];
    assert_eq!(key, "containerimage.config");
    let v: serde_json::Value = serde_json::from_slice(config).expect("config JSON");
    assert_eq!(v["config"]["Cmd"][0], "sh");
    // dockerfile local, .dockerignore from the context, the build itself.
    let solved = gw.solved();
    assert_eq!(solved.len(), 3);
    let def = Definition::decode(&solved[2]).expect("definition");
    let dumped = dump::dump_json_lines(&def);
    assert!(dumped.contains("echo $MSG"), "{dumped}");
    assert!(dumped.contains("MSG=hi"), "{dumped}");
}

#[test]
fn convert_reads_dockerfile_specific_ignore_and_named_locals() {
    let gw = MockGateway::new()
        .with_option("filename", "app.Dockerfile")
        .with_option("context:assets", "local:assets")
        .with_file(
            "dockerfile",
            "app.Dockerfile",
            b"FROM scratch\nCOPY . /\nCOPY --from=assets / /assets/\n",
        )
        .with_file("dockerfile", "app.Dockerfile.dockerignore", b"secret.txt\n")
        .with_file(
            "context",
            ".dockerignore",
            b"ignored-when-specific-exists\n",
        )
        .with_file("assets", ".dockerignore", b"*.psd\n");
    let res = kiln_dockerfile::convert::convert(&gw).expect("convert");
    assert_eq!(res.refs.len(), 1);
    let solved = gw.solved();
    let last = Definition::decode(solved.last().expect("a build")).expect("definition");
    let dumped = dump::dump_json_lines(&last);
    assert!(dumped.contains(r#"\"secret.txt\""#), "{dumped}");
    assert!(!dumped.contains("ignored-when-specific-exists"), "{dumped}");
    assert!(dumped.contains(r#"\"*.psd\""#), "{dumped}");
    assert!(dumped.contains("context:assets-"), "{dumped}");
}

#[test]
fn convert_reports_warnings_and_errors_with_locations() {
    let gw =
        MockGateway::new().with_file("dockerfile", "Dockerfile", b"FROM scratch\nMAINTAINER me\n");
    kiln_dockerfile::convert::convert(&gw).expect("convert");
    let warnings = gw.warnings.borrow();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].1.as_ref().map(|l| l.start_line), Some(2));

    let gw = MockGateway::new().with_file("dockerfile", "Dockerfile", b"FROM scratch\nRUNX x\n");
    let err = kiln_dockerfile::convert::convert(&gw).expect_err("unknown instruction");
    assert_eq!(err.location.map(|l| l.start_line), Some(2));
}

#[test]
fn input_named_contexts_splice_the_input_graph() {
    use kiln_frontend::llb::builder::{self, MarshalOptions};
    use prost::Message as _;
    let input = builder::image("busybox")
        .expect("ref")
        .state()
        .run_shell("make > /out")
        .build()
        .expect("exec")
        .root()
        .marshal(&MarshalOptions::default())
        .expect("marshal")
        .encode_to_vec();
    let mut opts = ConvertOptions::from_options(
        &[
            ("context:base".to_string(), "input:built".to_string()),
            (
                "input-metadata:built".to_string(),
                // {"containerimage.config": base64({"config":{"Env":["FROM_INPUT=1"],"User":"app"}})}
                r#"{"containerimage.config":"eyJjb25maWciOnsiRW52IjpbIkZST01fSU5QVVQ9MSJdLCJVc2VyIjoiYXBwIn19"}"#
                    .to_string(),
            ),
        ]
        .into_iter()
        .collect(),
    )
    .expect("options");
    opts.inputs.insert("built".into(), input);
    let df = b"FROM base AS b\nRUN cat /out\nFROM scratch\nCOPY --from=b /out /out\n";
    let (def, config, _) = dockerfile_to_llb(df, &opts, &FakeResolver).expect("convert");
    let def = Definition::decode(&def).expect("valid definition");
    let dumped = dump::dump_json_lines(&def);
    assert!(dumped.contains(r"make \u003e /out"), "{dumped}");
    assert!(dumped.contains("cat /out"), "{dumped}");
    assert!(dumped.contains("FROM_INPUT=1"), "{dumped}");
    assert!(!dumped.contains("kiln.input"), "{dumped}");
    let v: serde_json::Value = serde_json::from_slice(&config).expect("config");
    assert!(v["config"]["Env"].as_array().is_some());
    // Same input, same bytes.
    let again = dockerfile_to_llb(df, &opts, &FakeResolver).expect("convert");
    assert_eq!(Definition::decode(&again.0).expect("valid"), def);
}

#[test]
fn convert_reports_missing_dockerfile() {
    let gw = MockGateway::new();
    let err = kiln_dockerfile::convert::convert(&gw).expect_err("no Dockerfile");
    assert!(
        err.message.contains("failed to read dockerfile"),
        "{}",
        err.message
    );
}

#[test]
fn multi_platform_results() {
    let gw = MockGateway::new()
        .with_option("platform", "linux/amd64,linux/arm64")
        .with_file("dockerfile", "Dockerfile", b"FROM scratch\nCOPY a /a\n");
    let res = kiln_dockerfile::convert::convert(&gw).expect("convert");
    let keys: Vec<&str> = res.refs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["linux/amd64", "linux/arm64"]);
    assert_eq!(res.metadata.len(), 2);
}

#[test]
fn long_stage_chains_convert() {
    // Stages are dispatched in file order, so a long chain of stages built
    // on each other does not nest calls.
    let mut df = String::from("FROM scratch AS s0\n");
    for i in 1..400 {
        df.push_str(&format!("FROM s{} AS s{i}\nCOPY a{i} /\n", i - 1));
    }
    dockerfile_to_llb(df.as_bytes(), &ConvertOptions::default(), &FakeResolver)
        .expect("400 stages");
}

#[test]
fn garbage_does_not_panic() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\xff\xfe\x00",
        b"FROM",
        b"FROM a b c d",
        b"RUN x",
        b"FROM scratch\nCOPY <<EOF\n",
        b"FROM scratch\nRUN --mount=type=cache,target= x\n",
        b"FROM ${A:?}\n",
    ];
    for i in inputs {
        let _ = dockerfile_to_llb(i, &ConvertOptions::default(), &FakeResolver);
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const LINES: &[&str] = &[
        "FROM busybox",
        "FROM scratch AS s",
        "FROM s",
        "FROM ${BASE:-busybox} AS b",
        "ARG BASE",
        "ARG X=1",
        "ENV A=$X B=\"q\"",
        "ENV",
        "LABEL a=b",
        "RUN echo $A",
        "RUN [\"a\", 1]",
        "RUN --mount=type=cache,target=/c x",
        "RUN --mount=type=secret x",
        "RUN --mount=from=s,target=/m x",
        "RUN --network=none x",
        "RUN <<EOF",
        "EOF",
        "COPY . /",
        "COPY --from=s / /x",
        "COPY --from=0 / /y",
        "COPY --from=9 / /y",
        "COPY --link --chmod=u+x a b/",
        "COPY <<EOT /f",
        "EOT",
        "ADD https://example.com/a /",
        "ADD --checksum=sha256:00 a b",
        "WORKDIR $A/w",
        "USER 1:1",
        "EXPOSE 80/udp 1-3",
        "EXPOSE x",
        "VOLUME [\"/v\"]",
        "CMD x",
        "ENTRYPOINT [\"e\"]",
        "SHELL [\"/bin/bash\", \"-c\"]",
        "SHELL x",
        "STOPSIGNAL SIGKILL",
        "HEALTHCHECK --interval=1s CMD x",
        "HEALTHCHECK NONE",
        "ONBUILD RUN x",
        "ONBUILD ONBUILD RUN x",
        "MAINTAINER m",
        "BOGUS x",
        "# check=error=true",
        "\\",
        "",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_dockerfiles_never_panic(lines in proptest::collection::vec(0..LINES.len(), 0..14)) {
            let text: Vec<&str> = lines.iter().map(|i| LINES[*i]).collect();
            let source = text.join("\n");
            let _ = dockerfile_to_llb(source.as_bytes(), &ConvertOptions::default(), &FakeResolver);
        }
    }
}
