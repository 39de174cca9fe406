//! Fuzzes the Dockerfile front half: bytes → AST → typed instructions, plus
//! the shell lexer and `--mount` parser on the same input. Any panic is a bug.

#![no_main]

use kiln_dockerfile::instructions::{
    WordExpander, parse_dockerfile, parse_instruction, parse_mount,
};
use kiln_dockerfile::parser;
use kiln_dockerfile::shell::{self, Lexer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = [("A", "a b"), ("P", "x/y/z.tar.gz"), ("EMPTY", "")];
    let _ = parser::detect_syntax(data);
    if let Ok(ast) = parser::parse(data) {
        let _ = ast.dump();
        let _ = parse_dockerfile(&ast);
        for node in &ast.children {
            let _ = parse_instruction(node);
            let mut ex = WordExpander::new(ast.escape, &env);
            for arg in node.args.iter().chain(node.flags.iter()) {
                let _ = ex.word(arg);
                let _ = ex.words(arg);
            }
            for h in &node.heredocs {
                let _ = ex.raw(&h.content);
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    for escape in ['\\', '`'] {
        let _ = shell::process_word(&text, &env, escape);
        let _ = shell::process_words(&text, &env, escape);
        let mut lx = Lexer::new(escape);
        lx.raw_quotes = true;
        lx.raw_escapes = true;
        lx.skip_unset_env = true;
        let _ = lx.process(&text, &env);
    }
    let _ = parser::parse_heredoc(&text);
    let _ = parse_mount(&text, None);
});
