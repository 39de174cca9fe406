//! `COPY` and `ADD`: context, stage, image and named-context sources, URLs
//! and git repositories (ADD), heredoc sources, `--chown`, `--chmod`,
//! `--link`, `--exclude`, `--parents`, `--checksum`, `--keep-git-dir`,
//! `--unpack`.

use kiln_frontend::FrontendError;
use kiln_frontend::llb::Digest;
use kiln_frontend::llb::builder::{
    self, ChownOpt, CopyMode, CopyOptions, FileAction, MkfileOptions, OpOptions, State, UserRef,
};

use super::Ctx;
use super::dockerignore::clean;
use super::flags;
use super::from;
use super::stages::{self, StageRun, display_name};
use crate::parser::{Node, chomp_heredoc_content, parse_heredoc};
use crate::shell::{self, Lexer};

/// `user[:group]` → owner (numbers by id, anything else by name).
pub(crate) fn chown_opt(s: &str) -> ChownOpt {
    let conv = |p: &str| -> Option<UserRef> {
        if p.is_empty() {
            None
        } else if let Ok(n) = p.parse::<u32>() {
            Some(UserRef::Id(n))
        } else {
            Some(UserRef::Name(p.to_string()))
        }
    };
    match s.split_once(':') {
        Some((u, g)) => ChownOpt {
            user: conv(u),
            group: conv(g),
        },
        None => ChownOpt {
            user: conv(s),
            group: None,
        },
    }
}

/// `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses separated by commas.
fn is_symbolic_mode(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|clause| {
            let b = clause.as_bytes();
            let mut i = b.iter().take_while(|c| b"ugoa".contains(c)).count();
            let mut ops = 0;
            while i < b.len() {
                if !b"+-=".contains(&b[i]) {
                    return false;
                }
                i += 1;
                ops += 1;
                if i < b.len() && b"ugo".contains(&b[i]) {
                    i += 1;
                    continue;
                }
                i += b[i..].iter().take_while(|c| b"rwxXst".contains(c)).count();
            }
            ops > 0
        })
}

fn parse_chmod(s: &str) -> Result<CopyMode, String> {
    let non_octal = || {
        format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777")
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let m = u32::from_str_radix(s, 8).map_err(|_| non_octal())?;
        if m > 0o7777 {
            return Err(non_octal());
        }
        return Ok(CopyMode::Bits(m));
    }
    if is_symbolic_mode(s) {
        Ok(CopyMode::Symbolic(s.to_string()))
    } else {
        Err(format!(
            "invalid chmod parameter: '{s}': expected an octal or symbolic mode"
        ))
    }
}

/// Whether a path has glob characters (`*`, `?`, `[`), escapes skipped.
fn has_wildcards(p: &str) -> bool {
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return true,
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    false
}

/// A git source reference: `remote[#ref[:subdir]]` or
/// `remote?ref=…&subdir=…&checksum=…&keep-git-dir=…&submodules=…`.
pub(crate) struct GitRef {
    pub remote: String,
    pub reference: String,
    pub subdir: String,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub skip_submodules: bool,
}

pub(crate) fn parse_git_ref(url: &str) -> GitRef {
    let (rest, fragment) = url.split_once('#').unwrap_or((url, ""));
    let (remote, query) = match rest.split_once('?') {
        Some((r, q)) if rest.contains("://") => (r, q),
        _ => (rest, ""),
    };
    let (mut reference, mut subdir) = match fragment.split_once(':') {
        Some((r, s)) => (r.to_string(), s.to_string()),
        None => (fragment.to_string(), String::new()),
    };
    let mut g = GitRef {
        remote: remote.to_string(),
        reference: String::new(),
        subdir: String::new(),
        checksum: None,
        keep_git_dir: None,
        skip_submodules: false,
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "ref" | "branch" | "tag" => reference = v.to_string(),
            "subdir" => subdir = v.to_string(),
            "checksum" | "commit" => g.checksum = Some(v.to_string()),
            "keep-git-dir" => g.keep_git_dir = Some(v == "true" || v == "1"),
            "submodules" => g.skip_submodules = v == "false" || v == "0",
            _ => {}
        }
    }
    g.reference = reference;
    g.subdir = subdir;
    g
}

/// Whether an ADD source is a git repository rather than a file URL.
pub(crate) fn is_git_url(s: &str) -> bool {
    if s.starts_with("git://") || s.starts_with("ssh://") || s.starts_with("git@") {
        return true;
    }
    if let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    {
        let path = rest.split(['#', '?']).next().unwrap_or(rest);
        if path.ends_with(".git") {
            return true;
        }
        if let Some(p) = path.strip_prefix("github.com/") {
            return p.trim_end_matches('/').split('/').count() == 2;
        }
    }
    false
}

pub(crate) fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A git source for a named context (`remote[#ref[:subdir]]` or the
/// query form).
pub(crate) fn git_state(url: &str, name: &str) -> State {
    let r = parse_git_ref(url);
    let mut g = builder::git(r.remote, r.reference).custom_name(name);
    if !r.subdir.is_empty() {
        g = g.subdir(r.subdir);
    }
    if r.keep_git_dir == Some(true) {
        g = g.keep_git_dir();
    }
    if let Some(c) = r.checksum {
        g = g.checksum(c);
    }
    if r.skip_submodules {
        g = g.skip_submodules();
    }
    g.state()
}

/// The destination, joined to the working dir, keeping a trailing slash.
fn dest_path(dir: &str, p: &str) -> String {
    let p = if p.is_empty() || p == "." { "./" } else { p };
    let joined = if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("{dir}/{p}"))
    };
    if (p.ends_with('/') || p.ends_with("/.")) && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

enum Src {
    Path(String),
    Heredoc { name: String, data: String },
}

pub(crate) fn dispatch(
    ctx: &mut Ctx<'_>,
    run: &mut StageRun,
    node: &Node,
) -> Result<(), FrontendError> {
    let is_add = node.name() == "add";
    let kw = if is_add { "ADD" } else { "COPY" };
    let f = flags::parse(&node.flags, stages::flag_defs(&node.name()))
        .map_err(|e| ctx.err.at(node, e))?;
    let vars = run.vars();
    let esc = ctx.ast.escape;
    let expand = |w: &str| shell::process_word(w, &vars, esc).map_err(|e| ctx.err.at(node, e));

    if node.args.len() < 2 {
        return Err(ctx.err.at(
            node,
            format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined."),
        ));
    }
    let (dest_raw, src_raw) = node.args.split_last().unwrap_or((&node.args[0], &[]));
    let mut srcs = Vec::new();
    let heredoc_of = |w: &str| -> Option<crate::parser::Heredoc> {
        if node.json {
            return None;
        }
        let h = parse_heredoc(w).ok().flatten()?;
        node.heredocs.iter().find(|d| d.name == h.name).cloned()
    };
    if heredoc_of(dest_raw).is_some() {
        return Err(ctx.err.at(
            node,
            format!("{kw} cannot accept a heredoc as a destination"),
        ));
    }
    for w in src_raw {
        if let Some(doc) = heredoc_of(w) {
            let mut data = if doc.chomp {
                chomp_heredoc_content(&doc.content)
            } else {
                doc.content.clone()
            };
            if doc.expand {
                let mut lex = Lexer::new('\\');
                lex.skip_process_quotes = true;
                data = lex
                    .process(&data, &vars)
                    .map_err(|e| ctx.err.at(node, e))?
                    .result;
            }
            srcs.push(Src::Heredoc {
                name: doc.name,
                data,
            });
        } else {
            srcs.push(Src::Path(if node.json { w.clone() } else { expand(w)? }));
        }
    }
    let dest_word = if node.json {
        dest_raw.clone()
    } else {
        expand(dest_raw)?
    };
    if srcs.len() > 1 && !dest_word.ends_with('/') {
        return Err(ctx.err.at(
            node,
            format!("When using {kw} with more than one source file, the destination must be a directory and end with a /"),
        ));
    }
    let dest = dest_path(run.state.get_dir(), &dest_word);

    let chown_str = match f.one("chown") {
        Some(c) => Some(expand(c)?),
        None => None,
    };
    let chmod_str = match f.one("chmod") {
        Some(m) => Some(expand(m)?),
        None => None,
    };
    let owner = chown_str.as_deref().map(chown_opt);
    let mode = match &chmod_str {
        Some(m) => Some(parse_chmod(m).map_err(|e| ctx.err.at(node, e))?),
        None => None,
    };
    let mut excludes = Vec::new();
    for e in f.many("exclude") {
        excludes.push(expand(e)?);
    }
    let parents = f.on("parents");
    let link = f.on("link");
    let keep_git_dir = f.on("keep-git-dir");
    let checksum = match f.one("checksum") {
        Some(c) => Some(expand(c)?),
        None => None,
    };
    let unpack = f.one("unpack").map(|v| v == "true");

    if let Some(v) = f.one("from")
        && shell::process_word(v, &Vec::<(String, String)>::new(), esc)
            .ok()
            .as_deref()
            != Some(v)
    {
        return Err(ctx.err.at(
            node,
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
        ));
    }
    let source = match f.one("from") {
        Some(v) => {
            let d = from::from_source(ctx, v, node, run.index)?;
            d.state
        }
        None => State::scratch(),
    };
    let from_context = f.one("from").is_none();

    let paths: Vec<&String> = srcs
        .iter()
        .filter_map(|s| match s {
            Src::Path(p) => Some(p),
            Src::Heredoc { .. } => None,
        })
        .collect();
    if checksum.is_some() {
        if paths.len() != 1 {
            return Err(ctx
                .err
                .at(node, "checksum can't be specified for multiple sources"));
        }
        if !is_http_url(paths[0]) && !is_git_url(paths[0]) {
            return Err(ctx.err.at(node, "checksum requires HTTP(S) or Git sources"));
        }
    }

    let display = display_name(ctx, run, &node.original);
    let name = run.prefix(&display);
    let timestamp = run.epoch_ns;
    let mut action: Option<FileAction> = None;
    let push = |a: Option<FileAction>,
                src: State,
                path: String,
                mut opts: CopyOptions|
     -> Option<FileAction> {
        opts.timestamp = timestamp;
        Some(match a {
            None => builder::copy(src, path, dest.clone(), opts),
            Some(a) => a.copy(src, path, dest.clone(), opts),
        })
    };
    let mut history = String::from(kw);
    if parents {
        history.push_str(" --parents");
    }
    if let Some(c) = &chown_str {
        history.push_str(&format!(" --chown={c}"));
    }
    if let Some(m) = &chmod_str {
        history.push_str(&format!(" --chmod={m}"));
    }
    // Paths (context, URLs, git) first, then heredoc documents.
    for p in &paths {
        let p = p.as_str();
        history.push_str(&format!(" {p}"));
        if is_git_url(p) && (is_add || !p.starts_with("git@")) {
            if !is_add {
                return Err(ctx.err.at(node, "source can't be a git ref for COPY"));
            }
            let git = parse_git_ref(p);
            let keep = match (f.one("keep-git-dir"), git.keep_git_dir) {
                (Some(a), Some(b)) if (a == "true") != b => {
                    return Err(ctx.err.at(node, "inconsistent keep-git-dir configuration"));
                }
                (_, Some(b)) => b,
                (Some(a), None) => a == "true",
                (None, None) => keep_git_dir,
            };
            let sum = match (&checksum, &git.checksum) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ctx
                        .err
                        .at(node, format!("checksum mismatch {a:?} != {b:?}")));
                }
                (_, Some(b)) => Some(b.clone()),
                (a, None) => a.clone(),
            };
            let mut g = builder::git(git.remote.clone(), git.reference.clone()).custom_name(&name);
            if !git.subdir.is_empty() {
                g = g.subdir(git.subdir.clone());
            }
            if keep {
                g = g.keep_git_dir();
            }
            if let Some(c) = sum {
                g = g.checksum(c);
            }
            if git.skip_submodules {
                g = g.skip_submodules();
            }
            let opts = CopyOptions {
                owner: owner.clone(),
                mode: mode.clone(),
                create_dest_path: true,
                ..Default::default()
            };
            action = push(action, g.state(), "/".to_string(), opts);
        } else if is_http_url(p) {
            if !is_add {
                return Err(ctx.err.at(node, "source can't be a URL for COPY"));
            }
            let path = p
                .split(['?', '#'])
                .next()
                .unwrap_or(p)
                .split_once("://")
                .map_or("", |(_, r)| r.split_once('/').map_or("", |(_, path)| path));
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            let file = if base.is_empty() || base == "." {
                "__unnamed__".to_string()
            } else {
                base.to_string()
            };
            let mut h = builder::http(p)
                .filename(file.clone())
                .custom_name(&name)
                .description("com.docker.dockerfile.v1.command", node.original.trim());
            if let Some(c) = &checksum {
                let d: Digest = c.parse().map_err(|_| {
                    ctx.err
                        .at(node, format!("invalid checksum digest format: {c:?}"))
                })?;
                h = h.checksum(&d);
            }
            let opts = CopyOptions {
                owner: owner.clone(),
                mode: mode.clone(),
                create_dest_path: true,
                attempt_unpack: unpack == Some(true),
                ..Default::default()
            };
            action = push(action, h.state(), file, opts);
        } else {
            let mut include = Vec::new();
            let mut required = Vec::new();
            let mut src = p.to_string();
            if parents {
                let (parent, pattern) = match p.split_once("/./") {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => ("/".to_string(), p.to_string()),
                };
                src = parent;
                let pat = clean(&format!("/{pattern}"));
                // Required paths are relative to the copy source (the pivot).
                if !has_wildcards(&src) && !has_wildcards(&pat) {
                    required.push(pat.clone());
                }
                include.push(pat.trim_start_matches('/').to_string());
            }
            let src = clean(&format!("/{src}"));
            let st = if from_context {
                ctx.context_state()
            } else {
                source.clone()
            };
            let opts = CopyOptions {
                owner: owner.clone(),
                mode: mode.clone(),
                follow_symlinks: true,
                copy_dir_contents_only: true,
                attempt_unpack: unpack.unwrap_or(is_add),
                create_dest_path: true,
                allow_wildcard: true,
                allow_empty_wildcard: true,
                include_patterns: include,
                exclude_patterns: excludes.clone(),
                required_paths: required,
                ..Default::default()
            };
            action = push(action, st, src, opts);
        }
    }
    for s in &srcs {
        let Src::Heredoc { name: doc, data } = s else {
            continue;
        };
        history.push_str(&format!(" <<{doc}"));
        let c = builder::Constraints::default()
            .custom_name("[internal] preparing inline document")
            .platform(run.platform.clone());
        let st = State::scratch().file_with(
            builder::mkfile(
                doc.clone(),
                0o644,
                data.clone().into_bytes(),
                MkfileOptions::default(),
            ),
            c,
        );
        let opts = CopyOptions {
            owner: owner.clone(),
            mode: mode.clone(),
            create_dest_path: true,
            ..Default::default()
        };
        action = push(action, st, format!("/{doc}"), opts);
    }
    history.push_str(&format!(" {dest_word}"));
    let Some(action) = action else {
        return Err(ctx
            .err
            .at(node, format!("{kw} requires at least one source")));
    };

    let mut c = builder::Constraints::default()
        .custom_name(name.clone())
        .description("com.docker.dockerfile.v1.command", node.original.trim());
    c = ctx.located(c, node);
    if run.ignore_cache {
        c = c.ignore_cache();
    }
    if link && mode.is_none() {
        let pg = format!("stage-{}-step-{}", run.index, run.cmd_index);
        let copy_c = c
            .clone()
            .progress_group(pg.clone(), name.clone(), true)
            .platform(run.platform.clone());
        let link_name = name.replacen(&display, &format!("LINK {display}"), 1);
        let merge_c = c
            .progress_group(pg, name.clone(), false)
            .custom_name(link_name);
        let layer = State::scratch().file_with(action, copy_c);
        let merged = builder::merge_with(&[run.state.clone(), layer], merge_c);
        run.state = run.state.with_output(merged.output().cloned());
    } else {
        run.state = run.state.file_with(action, c);
    }
    run.image.history(format!("{history} # buildkit"), false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "x"), "/app/x");
        assert_eq!(dest_path("/", "/abs/"), "/abs/");
        assert!(is_git_url(
            "https://github.com/moby/buildkit.git#v0.12:docs"
        ));
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(!is_git_url("https://example.com/a.tar.gz"));
        assert_eq!(parse_chmod("755"), Ok(CopyMode::Bits(0o755)));
        assert!(parse_chmod("u+x,go-w").is_ok());
        assert!(parse_chmod("9").is_err());
    }
}
