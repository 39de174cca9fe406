//! No input makes the parser, the instruction layer or the lexer panic:
//! random bytes, Dockerfile-flavoured text and mutated conformance
//! Dockerfiles are fed through the whole front half of the frontend.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_dockerfile::instructions::{
    WordExpander, parse_dockerfile, parse_instruction, parse_mount,
};
use kiln_dockerfile::parser;
use kiln_dockerfile::shell::{self, Lexer};
use proptest::prelude::*;

/// Conformance Dockerfiles used as mutation seeds (empty if the shared data is
/// not available; the byte-level strategies still run).
fn corpus() -> &'static Vec<Vec<u8>> {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
        };
        let mut out = Vec::new();
        for sub in ["parser/testfiles", "parser/testfiles-negative"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(b) = std::fs::read(e.path().join("Dockerfile")) {
                    out.push(b);
                }
            }
        }
        for f in [
            "parser/heredoc/extract.Dockerfile",
            "parser/heredoc/json-form.Dockerfile",
        ] {
            if let Ok(b) = std::fs::read(dir.join(f)) {
                out.push(b);
            }
        }
        out.push(b"FROM a AS b\nRUN --mount=type=cache,target=/c <<EOF\nx\nEOF\n".to_vec());
        out
    })
}

/// Runs everything downstream of the bytes; panics are the only failure.
fn exercise(data: &[u8]) {
    let _ = parser::detect_syntax(data);
    if let Ok(ast) = parser::parse(data) {
        let _ = ast.dump();
        let _ = parse_dockerfile(&ast);
        let env = [("A", "1"), ("EMPTY", "")];
        for node in &ast.children {
            let _ = node.dump();
            let _ = parse_instruction(node);
            let mut ex = WordExpander::new(ast.escape, &env);
            for arg in node.args.iter().chain(node.flags.iter()) {
                let _ = ex.word(arg);
                let _ = ex.words(arg);
                let _ = parse_mount(arg, None);
            }
            for h in &node.heredocs {
                let _ = ex.raw(&h.content);
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    exercise_text(&text);
}

fn exercise_text(text: &str) {
    let env = [("A", "a b"), ("P", "x/y/z.tar.gz"), ("EMPTY", "")];
    for escape in ['\\', '`'] {
        let _ = shell::process_word(text, &env, escape);
        let _ = shell::process_words(text, &env, escape);
        let mut lx = Lexer::new(escape);
        lx.raw_quotes = true;
        lx.raw_escapes = true;
        lx.skip_unset_env = true;
        let _ = lx.process(text, &env);
        lx.skip_process_quotes = true;
        let _ = lx.process(text, &env);
    }
    let _ = parser::parse_heredoc(text);
    let _ = parser::heredocs_from_line(text);
    let _ = parse_mount(text, None);
}

const TOKENS: &[&str] = &[
    "\\\n",
    "`\n",
    "\n",
    "\r\n",
    " ",
    "\t",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "<<EOF",
    "<<-EOF",
    "\nEOF\n",
    "\tEOF\n",
    "'",
    "\"",
    "${",
    "}",
    "$",
    ":-",
    "#",
    "%%",
    "//",
    "[",
    "]",
    ",",
    "--",
    "--mount=",
    "type=cache,",
    "target=/x",
    "--chmod=",
    "ONBUILD ",
    "RUN ",
    "COPY ",
    "FROM ",
    "ENV ",
    "ARG ",
    "HEALTHCHECK ",
    "CMD ",
    "=",
    "\u{feff}",
    "한",
    "\u{0}",
    "\\u0000",
    "[\"a\",",
    "{}",
    "\u{85}",
    "\u{a0}",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Token(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Edit::Token(p, t)),
        (any::<usize>(), 1..16usize).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| Edit::Duplicate(p, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
        match e {
            Edit::Insert(p, b) => {
                let i = at(*p);
                data.splice(i..i, b.iter().copied());
            }
            Edit::Token(p, t) => {
                let i = at(*p);
                data.splice(i..i, TOKENS[*t].bytes());
            }
            Edit::Delete(p, n) => {
                let i = at(*p);
                let j = (i + n).min(len);
                data.drain(i..j);
            }
            Edit::Duplicate(p, n) => {
                let i = at(*p);
                let j = (i + n).min(len);
                let chunk: Vec<u8> = data[i..j].to_vec();
                data.splice(j..j, chunk);
            }
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&data);
    }

    #[test]
    fn dockerfile_like_text_never_panics(
        text in "([A-Z]{2,11}|--[a-z]+=?|[ \t]+|\\\\\n|`\n|\n|<<-?'?[A-Z]{1,3}'?|\\$\\{?[A-Za-z_:#%/?+-]{0,4}\\}?|[\"'\\[\\],={}]|[a-z0-9/.]{1,6}|#[^\n]{0,8}){0,60}"
    ) {
        exercise(text.as_bytes());
    }

    #[test]
    fn mutated_conformance_files_never_panic(
        seed in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..12),
    ) {
        let corpus = corpus();
        let base = corpus[seed % corpus.len()].clone();
        exercise(&apply(base, &edits));
    }

    #[test]
    fn shell_words_never_panic(text in "(\\$\\{?|[a-zA-Z_]{1,3}|[:#%/?+=*-]|\\}|[\"'\\\\`]|\\s|<<?|.){0,40}") {
        exercise_text(&text);
    }
}

#[test]
fn pathological_nesting_is_rejected_without_overflow() {
    let onbuild = "ONBUILD ".repeat(5000) + "RUN x\n";
    let _ = parser::parse(format!("FROM a\n{onbuild}").as_bytes());
    let json = format!("FROM a\nCMD {}\n", "[".repeat(60_000));
    let _ = parser::parse(json.as_bytes());
    let dollars = "${a:-".repeat(10_000);
    let _ = shell::process_word(&dollars, &[("a", "b")], '\\');
    let heredocs = format!("FROM a\nRUN {}\n", "<<A ".repeat(5000));
    let _ = parser::parse(heredocs.as_bytes());
    let long = format!("FROM a\nRUN {}\n", "x".repeat(70_000));
    assert!(parser::parse(long.as_bytes()).is_err());
}
