//! BuildKit conformance: parser dumps, negative cases, line numbers, heredoc
//! expectations and the shell lexer tables, all read from the shared
//! conformance directory (`$KILN_CONFORMANCE_DIR`, default
//! `<repo>/../shared/conformance`). Cases are discovered by listing the data;
//! each failure names its case.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::parser::{self, chomp_heredoc_content, heredocs_from_line, parse_heredoc};
use kiln_dockerfile::shell::{self, EnvList};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    assert!(
        dir.join("parser").is_dir() && dir.join("shell").is_dir(),
        "conformance data not found at {} (set KILN_CONFORMANCE_DIR to the directory \
         holding parser/ and shell/)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_str(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
}

/// Sorted case directories under `dir`.
fn cases(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no cases found in {}", dir.display());
    out
}

fn report(area: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{area}: {} of {total} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn parser_testfiles_dump_like_buildkit() {
    let all = cases(&conformance_dir().join("parser/testfiles"));
    let mut failures = Vec::new();
    for (name, dir) in &all {
        let expected = read_str(&dir.join("result"));
        match parser::parse(&read(&dir.join("Dockerfile"))) {
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
            Ok(ast) => {
                let got = ast.dump() + "\n";
                if got != expected {
                    failures.push(format!(
                        "{name}: dump differs\n--- expected\n{expected}--- got\n{got}"
                    ));
                }
            }
        }
    }
    report("parser/testfiles", all.len(), failures);
}

#[test]
fn parser_negative_testfiles_fail() {
    let all = cases(&conformance_dir().join("parser/testfiles-negative"));
    let mut failures = Vec::new();
    for (name, dir) in &all {
        if let Ok(ast) = parser::parse(&read(&dir.join("Dockerfile"))) {
            failures.push(format!(
                "{name}: parsed but must fail; dump:\n{}",
                ast.dump()
            ));
        }
    }
    report("parser/testfiles-negative", all.len(), failures);
}

#[test]
fn parser_line_numbers() {
    // Expectations from the conformance README (BuildKit's TestParseLineNumbers).
    let path = conformance_dir().join("parser/testfile-line/Dockerfile");
    let ast = parser::parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((ast.start_line, ast.end_line), (5, 31), "root span");
    let spans: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|c| (c.start_line, c.end_line))
        .collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)], "child spans");
}

fn heredoc_json(h: &parser::Heredoc) -> Value {
    serde_json::json!({
        "Name": h.name,
        "FileDescriptor": h.file_descriptor,
        "Expand": h.expand,
        "Chomp": h.chomp,
        "Content": h.content,
    })
}

#[test]
fn heredocs_extracted_like_buildkit() {
    let dir = conformance_dir().join("parser/heredoc");
    let spec: Value = serde_json::from_slice(&read(&dir.join("extract.expected.json")))
        .expect("extract.expected.json");
    let dockerfile = spec["dockerfile"].as_str().expect("dockerfile field");
    let ast = parser::parse(&read(&dir.join(dockerfile))).expect("heredoc Dockerfile parses");
    let all = spec["cases"].as_array().expect("cases array");
    let mut failures = Vec::new();
    for case in all {
        let idx = case["child_index"].as_u64().expect("child_index") as usize;
        let label = format!("child {idx} ({})", case["instruction"]);
        let Some(node) = ast.children.get(idx) else {
            failures.push(format!(
                "{label}: missing (only {} children)",
                ast.children.len()
            ));
            continue;
        };
        let got: Vec<Value> = node.heredocs.iter().map(heredoc_json).collect();
        let want: Vec<Value> = match &case["heredocs"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a.clone(),
            other => panic!("{label}: bad heredocs value {other}"),
        };
        if got != want {
            failures.push(format!("{label}: expected {want:?}\n got {got:?}"));
        }
    }
    report("parser/heredoc extract", all.len(), failures);
}

#[test]
fn heredoc_helpers_like_buildkit() {
    let dir = conformance_dir().join("parser/heredoc");
    let spec: Value = serde_json::from_slice(&read(&dir.join("helpers.expected.json")))
        .expect("helpers.expected.json");
    let mut failures = Vec::new();
    let mut total = 0;

    // JSON (exec) form never carries heredocs.
    let jf = &spec["json_form"];
    let ast = parser::parse(&read(
        &dir.join(jf["dockerfile"].as_str().expect("dockerfile")),
    ))
    .expect("json-form parses");
    for (i, node) in ast.children.iter().enumerate().skip(1) {
        total += 1;
        if !node.heredocs.is_empty() {
            failures.push(format!(
                "json-form child {i} ({}): has heredocs {:?}",
                node.original, node.heredocs
            ));
        }
    }

    total += 1;
    let chomp = &spec["chomp"];
    let got = chomp_heredoc_content(chomp["input"].as_str().expect("input"));
    if got != chomp["expected"].as_str().expect("expected") {
        failures.push(format!("chomp: got {got:?}"));
    }

    let words = &spec["parse_heredoc_word"];
    for w in words["valid_name_EOF"].as_array().expect("valid list") {
        total += 1;
        let w = w.as_str().expect("string");
        match parse_heredoc(w) {
            Ok(Some(h)) if h.name == "EOF" => {}
            other => failures.push(format!("word {w:?}: expected heredoc EOF, got {other:?}")),
        }
    }
    for w in words["error"].as_array().expect("error list") {
        total += 1;
        let w = w.as_str().expect("string");
        if let Ok(h) = parse_heredoc(w) {
            failures.push(format!("word {w:?}: expected an error, got {h:?}"));
        }
    }
    for w in words["not_a_heredoc"].as_array().expect("not list") {
        total += 1;
        let w = w.as_str().expect("string");
        match parse_heredoc(w) {
            Ok(None) => {}
            other => failures.push(format!("word {w:?}: expected no heredoc, got {other:?}")),
        }
    }

    for case in spec["heredocs_from_line"].as_array().expect("line list") {
        total += 1;
        let line = case["line"].as_str().expect("line");
        let want: Vec<&str> = case["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().expect("name"))
            .collect();
        match heredocs_from_line(line) {
            Ok(docs) => {
                let got: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
                if got != want {
                    failures.push(format!("line {line:?}: expected {want:?}, got {got:?}"));
                }
            }
            Err(e) => failures.push(format!("line {line:?}: error {e}")),
        }
    }
    report("parser/heredoc helpers", total, failures);
}

#[test]
fn shell_env_var_test() {
    let path = conformance_dir().join("shell/envVarTest");
    let text = read_str(&path);
    let env = EnvList::from_kv_strings(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let mut failures = Vec::new();
    let mut total = 0;
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 3 {
            failures.push(format!("envVarTest:{lineno}: malformed line {line:?}"));
            continue;
        }
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform != "A" && platform != "U" {
            continue;
        }
        total += 1;
        let got = shell::process_word(input, &env, '\\');
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(v), e) => e != "error" && v == e,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "envVarTest:{lineno}: {input:?} expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(total > 0, "no cases in {}", path.display());
    report("shell/envVarTest", total, failures);
}

#[test]
fn shell_words_test() {
    let path = conformance_dir().join("shell/wordsTest");
    let text = read_str(&path);
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let kv = rest.trim_start_matches(' ');
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 2 {
            failures.push(format!("wordsTest:{lineno}: malformed line {line:?}"));
            continue;
        }
        total += 1;
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start().split(',').collect();
        let got =
            shell::process_words(input, &env, '\\').unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "wordsTest:{lineno}: {input:?} expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(total > 0, "no cases in {}", path.display());
    report("shell/wordsTest", total, failures);
}
