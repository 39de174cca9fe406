//! AST node → [`Instruction`].

use super::error::{InstructionError, InstructionErrorKind as K};
use super::flags::{Chmod, FlagKind, FlagSet, nanos_to_duration, parse_go_duration};
use super::mount::parse_mount;
use super::*;
use crate::parser::{Ast, Node, chomp_heredoc_content, parse_heredoc};

const KNOWN: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// HEALTHCHECK intervals other than 0 must be at least this long.
const MIN_HEALTH_DURATION_NS: i128 = 1_000_000;

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest(name: &str) -> Option<String> {
    if name.chars().count() > 32 {
        return None;
    }
    KNOWN
        .iter()
        .map(|k| (levenshtein(name, k), *k))
        .filter(|(d, k)| *d > 0 && *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k.to_string())
}

fn flags(node: &Node, defs: &[(&'static str, FlagKind)]) -> Result<FlagSet, K> {
    let mut set = FlagSet::new(defs);
    set.parse(&node.flags)?;
    Ok(set)
}

fn no_flags(node: &Node) -> Result<(), K> {
    flags(node, &[]).map(|_| ())
}

fn exactly_one(node: &Node, name: &str) -> Result<String, K> {
    no_flags(node)?;
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(K::ExactlyOneArgument(name.into())),
    }
}

fn command_line(node: &Node) -> CommandLine {
    if node.json {
        CommandLine {
            args: node.args.clone(),
            prepend_shell: false,
        }
    } else {
        CommandLine {
            args: if node.args.is_empty() {
                Vec::new()
            } else {
                vec![node.args.join(" ")]
            },
            prepend_shell: true,
        }
    }
}

fn heredoc_file(h: &crate::parser::Heredoc) -> HeredocFile {
    HeredocFile {
        name: h.name.clone(),
        data: if h.chomp {
            chomp_heredoc_content(&h.content)
        } else {
            h.content.clone()
        },
        chomp: h.chomp,
        expand: h.expand,
        file_descriptor: h.file_descriptor,
    }
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, K> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(K::AtLeastOneArgument(name.into()));
    }
    let mut out = Vec::new();
    for triple in node.args.chunks(3) {
        let [key, value, sep] = triple else {
            return Err(K::AtLeastOneArgument(name.into()));
        };
        if key.is_empty() {
            return Err(K::BlankName(name.into()));
        }
        out.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
            legacy: sep.is_empty(),
        });
    }
    Ok(out)
}

fn sources_and_dest(node: &Node, name: &str) -> Result<(Vec<Source>, String), K> {
    if node.args.len() < 2 {
        return Err(K::NoDestination(name.into()));
    }
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(K::HeredocDestination(name.into()));
    }
    let mut sources = Vec::with_capacity(srcs.len());
    for src in srcs {
        let doc = match (node.json, parse_heredoc(src)) {
            (false, Ok(Some(h))) => node.heredocs.iter().find(|d| d.name == h.name),
            _ => None,
        };
        sources.push(match doc {
            Some(d) => Source::Heredoc(heredoc_file(d)),
            None => Source::Path(src.clone()),
        });
    }
    Ok((sources, dest))
}

fn chmod_flag(set: &FlagSet) -> Result<Option<Chmod>, K> {
    set.string("chmod")
        .map(|v| {
            Chmod::parse(&v).map_err(|reason| K::BadFlagValue {
                flag: "chmod".into(),
                value: v.clone(),
                reason,
            })
        })
        .transpose()
}

fn health_duration(set: &FlagSet, flag: &str) -> Result<Option<std::time::Duration>, K> {
    let Some(v) = set.string(flag) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| K::BadFlagValue {
        flag: flag.into(),
        value: v.clone(),
        reason,
    };
    let n = parse_go_duration(&v).map_err(bad)?;
    if n == 0 {
        return Ok(Some(std::time::Duration::ZERO));
    }
    if n < MIN_HEALTH_DURATION_NS {
        return Err(bad("cannot be less than 1ms".into()));
    }
    Ok(Some(nanos_to_duration(n)))
}

fn parse_kind(node: &Node, depth: usize) -> Result<InstructionKind, K> {
    let upper = node.value.to_uppercase();
    Ok(match node.name().as_str() {
        "from" => {
            let set = flags(node, &[("platform", FlagKind::String)])?;
            let stage_name = match node.args.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    let mut chars = lower.chars();
                    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                        && chars.all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                        });
                    if !valid {
                        return Err(K::InvalidStageName(name.clone()));
                    }
                    Some(lower)
                }
                _ => return Err(K::FromArguments),
            };
            InstructionKind::From(FromCmd {
                image: node.args[0].clone(),
                stage_name,
                platform: set.string("platform"),
            })
        }
        "run" => {
            let set = flags(
                node,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )?;
            if node.args.is_empty() {
                return Err(K::AtLeastOneArgument(upper));
            }
            let mut mounts = Vec::new();
            for value in set.strings("mount") {
                let m = parse_mount(&value, None).map_err(|error| K::Mount {
                    value: value.clone(),
                    error,
                })?;
                mounts.push(m);
            }
            let network = set
                .string("network")
                .map(|v| match v.as_str() {
                    "default" => Ok(NetworkMode::Default),
                    "none" => Ok(NetworkMode::None),
                    "host" => Ok(NetworkMode::Host),
                    _ => Err(K::BadFlagValue {
                        flag: "network".into(),
                        value: v.clone(),
                        reason: "expected default, none or host".into(),
                    }),
                })
                .transpose()?;
            let security = set
                .string("security")
                .map(|v| match v.as_str() {
                    "sandbox" => Ok(SecurityMode::Sandbox),
                    "insecure" => Ok(SecurityMode::Insecure),
                    _ => Err(K::BadFlagValue {
                        flag: "security".into(),
                        value: v.clone(),
                        reason: "expected sandbox or insecure".into(),
                    }),
                })
                .transpose()?;
            InstructionKind::Run(Run {
                command: command_line(node),
                mounts,
                network,
                security,
                heredocs: node.heredocs.iter().map(heredoc_file).collect(),
            })
        }
        "cmd" => {
            no_flags(node)?;
            InstructionKind::Cmd(command_line(node))
        }
        "entrypoint" => {
            no_flags(node)?;
            InstructionKind::Entrypoint(command_line(node))
        }
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(K::AtLeastOneArgument(upper));
            }
            if !node.json {
                return Err(K::NotJson(upper));
            }
            InstructionKind::Shell(node.args.clone())
        }
        "env" => InstructionKind::Env(key_values(node, "ENV")?),
        "label" => InstructionKind::Label(key_values(node, "LABEL")?),
        "arg" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(K::AtLeastOneArgument(upper));
            }
            let mut defs = Vec::new();
            for a in &node.args {
                let def = match a.split_once('=') {
                    Some((k, v)) => ArgDef {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => ArgDef {
                        key: a.clone(),
                        value: None,
                    },
                };
                if def.key.is_empty() {
                    return Err(K::BlankName(upper));
                }
                defs.push(def);
            }
            InstructionKind::Arg(defs)
        }
        "expose" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(K::AtLeastOneArgument(upper));
            }
            InstructionKind::Expose(node.args.clone())
        }
        "volume" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err(K::AtLeastOneArgument(upper));
            }
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(K::EmptyVolume);
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        "user" => InstructionKind::User(exactly_one(node, "USER")?),
        "workdir" => InstructionKind::Workdir(exactly_one(node, "WORKDIR")?),
        "stopsignal" => InstructionKind::StopSignal(exactly_one(node, "STOPSIGNAL")?),
        "maintainer" => InstructionKind::Maintainer(exactly_one(node, "MAINTAINER")?),
        "copy" => {
            let set = flags(
                node,
                &[
                    ("from", FlagKind::String),
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("parents", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, "COPY")?;
            InstructionKind::Copy(CopyCmd {
                sources,
                dest,
                from: set.string("from"),
                chown: set.string("chown"),
                chmod: chmod_flag(&set)?,
                link: set.bool("link").unwrap_or(false),
                parents: set.bool("parents").unwrap_or(false),
                excludes: set.strings("exclude"),
                json: node.json,
            })
        }
        "add" => {
            let set = flags(
                node,
                &[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                    ("keep-git-dir", FlagKind::Bool),
                    ("checksum", FlagKind::String),
                    ("unpack", FlagKind::Bool),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, "ADD")?;
            InstructionKind::Add(AddCmd {
                sources,
                dest,
                chown: set.string("chown"),
                chmod: chmod_flag(&set)?,
                link: set.bool("link").unwrap_or(false),
                excludes: set.strings("exclude"),
                keep_git_dir: set.bool("keep-git-dir"),
                checksum: set.string("checksum"),
                unpack: set.bool("unpack"),
                json: node.json,
            })
        }
        "onbuild" => {
            no_flags(node)?;
            let Some(sub) = node.sub.as_deref() else {
                return Err(K::AtLeastOneArgument(upper));
            };
            match sub.name().as_str() {
                "onbuild" => return Err(K::OnbuildChain),
                "from" | "maintainer" => return Err(K::OnbuildTrigger(sub.value.to_uppercase())),
                _ => {}
            }
            let trigger = build(sub, depth + 1).map_err(|e| *e.kind)?;
            InstructionKind::Onbuild(Onbuild {
                expression: strip_onbuild(&node.original),
                trigger: Box::new(trigger),
            })
        }
        "healthcheck" => {
            let set = flags(
                node,
                &[
                    ("interval", FlagKind::String),
                    ("timeout", FlagKind::String),
                    ("start-period", FlagKind::String),
                    ("start-interval", FlagKind::String),
                    ("retries", FlagKind::String),
                ],
            )?;
            let Some(typ) = node.args.first() else {
                return Err(K::AtLeastOneArgument(upper));
            };
            let rest = &node.args[1..];
            match typ.to_uppercase().as_str() {
                "NONE" => {
                    if !rest.is_empty() {
                        return Err(K::HealthcheckNoneArguments);
                    }
                    InstructionKind::Healthcheck(Healthcheck::None)
                }
                "CMD" => {
                    if rest.is_empty() {
                        return Err(K::HealthcheckMissingCommand);
                    }
                    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
                    if node.json {
                        test.extend(rest.iter().cloned());
                    } else {
                        test.push(rest.join(" "));
                    }
                    let retries = match set.string("retries") {
                        None => None,
                        Some(v) if v.is_empty() => None,
                        Some(v) => {
                            let n: i64 = v.parse().map_err(|_| K::BadFlagValue {
                                flag: "retries".into(),
                                value: v.clone(),
                                reason: "not an integer".into(),
                            })?;
                            let n = u32::try_from(n).map_err(|_| K::BadFlagValue {
                                flag: "retries".into(),
                                value: v.clone(),
                                reason: "must be between 0 and 4294967295".into(),
                            })?;
                            Some(n)
                        }
                    };
                    InstructionKind::Healthcheck(Healthcheck::Cmd(HealthConfig {
                        test,
                        interval: health_duration(&set, "interval")?,
                        timeout: health_duration(&set, "timeout")?,
                        start_period: health_duration(&set, "start-period")?,
                        start_interval: health_duration(&set, "start-interval")?,
                        retries,
                    }))
                }
                other => return Err(K::HealthcheckType(other.to_string())),
            }
        }
        _ => {
            return Err(K::UnknownInstruction {
                name: upper.clone(),
                suggestion: suggest(&upper),
            });
        }
    })
}

/// Removes a leading `ONBUILD` keyword (any case) and the spaces after it.
fn strip_onbuild(original: &str) -> String {
    let t = original.trim_start();
    match t.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => t[7..].trim_start().to_string(),
        _ => t.to_string(),
    }
}

fn build(node: &Node, depth: usize) -> Result<Instruction, InstructionError> {
    let kind = parse_kind(node, depth).map_err(|kind| InstructionError {
        instruction: node.value.to_uppercase(),
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        kind: Box::new(kind),
    })?;
    Ok(Instruction {
        keyword: node.value.clone(),
        original: node.original.clone(),
        start_line: node.start_line,
        end_line: node.end_line,
        kind,
    })
}

/// Turns one AST node into a typed instruction.
pub fn parse_instruction(node: &Node) -> Result<Instruction, InstructionError> {
    build(node, 0)
}

/// Turns a whole AST into meta args and stages.
pub fn parse_dockerfile(ast: &Ast) -> Result<Dockerfile, InstructionError> {
    let mut df = Dockerfile::default();
    for node in &ast.children {
        let ins = parse_instruction(node)?;
        match (&ins.kind, df.stages.last_mut()) {
            (InstructionKind::From(_), _) => df.stages.push(Stage {
                from: ins,
                commands: Vec::new(),
            }),
            (InstructionKind::Arg(_), None) => df.meta_args.push(ins),
            (_, Some(stage)) => stage.commands.push(ins),
            (_, None) => {
                return Err(InstructionError {
                    instruction: node.value.to_uppercase(),
                    line: node.start_line,
                    end_line: node.end_line,
                    original: node.original.clone(),
                    kind: Box::new(K::NoStage),
                });
            }
        }
    }
    Ok(df)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn one(src: &str) -> Result<InstructionKind, InstructionError> {
        let ast = parse(src.as_bytes()).expect("parses");
        parse_instruction(&ast.children[0]).map(|i| i.kind)
    }

    fn err(src: &str) -> K {
        *one(src).expect_err("must fail").kind
    }

    #[test]
    fn from_and_stage_names() {
        assert_eq!(
            one("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build").unwrap(),
            InstructionKind::From(FromCmd {
                image: "golang:1.22".into(),
                stage_name: Some("build".into()),
                platform: Some("$BUILDPLATFORM".into()),
            })
        );
        assert_eq!(err("FROM a b"), K::FromArguments);
        assert!(matches!(err("FROM a AS 1x"), K::InvalidStageName(_)));
        assert!(matches!(err("FROM --plat=x a"), K::UnknownFlag(f) if f == "plat"));
    }

    #[test]
    fn run_forms_and_flags() {
        let InstructionKind::Run(r) =
            one("RUN --mount=type=cache,target=/c --network=none echo hi").unwrap()
        else {
            panic!("not run")
        };
        assert_eq!(r.command.args, vec!["echo hi".to_string()]);
        assert!(r.command.prepend_shell);
        assert_eq!(r.mounts[0].mount_type, MountType::Cache);
        assert_eq!(r.network, Some(NetworkMode::None));
        let InstructionKind::Run(r) = one("RUN [\"a\", \"b\"]").unwrap() else {
            panic!()
        };
        assert!(!r.command.prepend_shell);
        assert!(matches!(
            err("RUN --network=wifi x"),
            K::BadFlagValue { .. }
        ));
        assert!(matches!(
            err("RUN --security=nope x"),
            K::BadFlagValue { .. }
        ));
        assert!(matches!(err("RUN --mount=type=cache x"), K::Mount { .. }));
        assert!(matches!(err("RUN --mount x"), K::MissingFlagValue(_)));
        assert_eq!(err("RUN"), K::AtLeastOneArgument("RUN".into()));
        let InstructionKind::Run(r) = one("RUN <<-EOF\n\techo hi\nEOF\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.heredocs[0].data, "echo hi\n");
    }

    #[test]
    fn copy_and_add() {
        let src = "COPY --from=build --chown=1:1 --chmod=u+x --link --exclude=a --exclude=b <<EOF x /dst/\nhi\nEOF\n";
        let InstructionKind::Copy(c) = one(src).unwrap() else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chmod, Some(Chmod::Symbolic("u+x".into())));
        assert!(c.link && !c.parents);
        assert_eq!(c.excludes, vec!["a".to_string(), "b".to_string()]);
        assert!(matches!(&c.sources[0], Source::Heredoc(h) if h.data == "hi\n" && h.name == "EOF"));
        assert_eq!(c.sources[1], Source::Path("x".into()));
        assert_eq!(c.dest, "/dst/");
        assert!(matches!(err("COPY a"), K::NoDestination(_)));
        assert!(matches!(
            err("COPY --chmod=999 a b"),
            K::BadFlagValue { .. }
        ));
        assert!(matches!(err("COPY --checksum=x a b"), K::UnknownFlag(_)));
        assert!(matches!(
            err("COPY --link=perhaps a b"),
            K::BadBoolFlag { .. }
        ));
        assert!(matches!(
            err("COPY a <<EOF\nx\nEOF\n"),
            K::HeredocDestination(_)
        ));
        let InstructionKind::Add(a) =
            one("ADD --checksum=sha256:abc --keep-git-dir=false --chmod=0755 u /d").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.checksum.as_deref(), a.keep_git_dir),
            (Some("sha256:abc"), Some(false))
        );
        assert_eq!(a.chmod, Some(Chmod::Octal(0o755)));
        assert!(matches!(err("ADD --from=x a b"), K::UnknownFlag(_)));
    }

    #[test]
    fn heredoc_sources_and_run_files() {
        let InstructionKind::Copy(c) =
            one("COPY <<EOF1 <<'EOF2' foo.txt /bar\none\nEOF1\n\ttwo\nEOF2\n").unwrap()
        else {
            panic!()
        };
        let names: Vec<_> = c
            .sources
            .iter()
            .map(|s| match s {
                Source::Heredoc(h) => (h.name.as_str(), h.data.as_str(), h.expand),
                Source::Path(p) => (p.as_str(), "", true),
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("EOF1", "one\n", true),
                ("EOF2", "\ttwo\n", false),
                ("foo.txt", "", true)
            ]
        );
        let InstructionKind::Copy(c) = one("COPY <<-EOF /bar\n\tTESTING\nEOF").unwrap() else {
            panic!()
        };
        assert!(matches!(&c.sources[0], Source::Heredoc(h) if h.data == "TESTING\n" && h.chomp));
        let InstructionKind::Run(r) = one("RUN <<'EOF' | python\nprint(1)\nEOF").unwrap() else {
            panic!()
        };
        assert_eq!(r.command.args, vec!["<<'EOF' | python".to_string()]);
        assert_eq!(
            (r.heredocs[0].data.as_str(), r.heredocs[0].expand),
            ("print(1)\n", false)
        );
        let InstructionKind::Run(r) = one("RUN [\"<<EOF\"]").unwrap() else {
            panic!()
        };
        assert!(r.heredocs.is_empty() && !r.command.prepend_shell);
        assert_eq!(
            err("COPY /foo <<EOF\nEOF"),
            K::HeredocDestination("COPY".into())
        );
        let InstructionKind::Copy(c) = one("COPY [\"<<EOF\", \"/d\"]").unwrap() else {
            panic!()
        };
        assert_eq!(c.sources, vec![Source::Path("<<EOF".into())]);
    }

    #[test]
    fn env_arg_label() {
        let InstructionKind::Env(e) = one("ENV a=1 b=\"2 3\"").unwrap() else {
            panic!()
        };
        assert_eq!(e[1].value, "\"2 3\"");
        let InstructionKind::Env(e) = one("ENV a b c").unwrap() else {
            panic!()
        };
        assert!(e[0].legacy && e[0].value == "b c");
        assert_eq!(err("ENV"), K::AtLeastOneArgument("ENV".into()));
        assert_eq!(err("ENV =x"), K::BlankName("ENV".into()));
        let InstructionKind::Arg(a) = one("ARG x y=2").unwrap() else {
            panic!()
        };
        assert_eq!(
            (a[0].value.clone(), a[1].value.clone()),
            (None, Some("2".into()))
        );
        assert_eq!(err("ARG =1"), K::BlankName("ARG".into()));
        assert!(matches!(
            one("LABEL a=b").unwrap(),
            InstructionKind::Label(_)
        ));
    }

    #[test]
    fn simple_ones() {
        assert_eq!(err("USER"), K::ExactlyOneArgument("USER".into()));
        assert_eq!(err("WORKDIR"), K::ExactlyOneArgument("WORKDIR".into()));
        assert_eq!(
            one("STOPSIGNAL SIGKILL").unwrap(),
            InstructionKind::StopSignal("SIGKILL".into())
        );
        assert_eq!(err("SHELL bash -c"), K::NotJson("SHELL".into()));
        assert_eq!(err("EXPOSE"), K::AtLeastOneArgument("EXPOSE".into()));
        assert_eq!(err("VOLUME [\"\"]"), K::EmptyVolume);
        assert!(matches!(err("USER --x=1 a"), K::UnknownFlag(_)));
        assert!(matches!(
            one("MAINTAINER me").unwrap(),
            InstructionKind::Maintainer(_)
        ));
        assert_eq!(
            err("RUNN x"),
            K::UnknownInstruction {
                name: "RUNN".into(),
                suggestion: Some("RUN".into())
            }
        );
    }

    #[test]
    fn onbuild() {
        let InstructionKind::Onbuild(o) = one("ONBUILD  RUN echo hi").unwrap() else {
            panic!()
        };
        assert_eq!(o.expression, "RUN echo hi");
        assert!(matches!(o.trigger.kind, InstructionKind::Run(_)));
        assert_eq!(err("ONBUILD ONBUILD RUN x"), K::OnbuildChain);
        assert_eq!(err("ONBUILD FROM x"), K::OnbuildTrigger("FROM".into()));
        assert!(matches!(err("ONBUILD RUN --bad x"), K::UnknownFlag(_)));
    }

    #[test]
    fn healthcheck() {
        let hc = |s: &str| match one(s).unwrap() {
            InstructionKind::Healthcheck(h) => h,
            _ => panic!(),
        };
        assert_eq!(hc("HEALTHCHECK NONE"), Healthcheck::None);
        let Healthcheck::Cmd(c) = hc("HEALTHCHECK --interval=5s --retries=3 CMD curl -f x") else {
            panic!()
        };
        assert_eq!(
            c.test,
            vec!["CMD-SHELL".to_string(), "curl -f x".to_string()]
        );
        assert_eq!(c.interval, Some(std::time::Duration::from_secs(5)));
        assert_eq!(c.retries, Some(3));
        let Healthcheck::Cmd(c) = hc("HEALTHCHECK CMD [\"a\", \"b\"]") else {
            panic!()
        };
        assert_eq!(c.test, vec!["CMD", "a", "b"]);
        assert_eq!(err("HEALTHCHECK NONE x"), K::HealthcheckNoneArguments);
        assert_eq!(err("HEALTHCHECK CMD"), K::HealthcheckMissingCommand);
        assert!(matches!(err("HEALTHCHECK TCP x"), K::HealthcheckType(_)));
        assert!(matches!(
            err("HEALTHCHECK --interval=1us CMD x"),
            K::BadFlagValue { .. }
        ));
        assert!(matches!(
            err("HEALTHCHECK --retries=-1 CMD x"),
            K::BadFlagValue { .. }
        ));
        assert!(matches!(
            err("HEALTHCHECK --timeout=5 CMD x"),
            K::BadFlagValue { .. }
        ));
    }

    #[test]
    fn stages_and_errors_quote_the_line() {
        let ast = parse(b"ARG V=1\nFROM a AS b\nRUN x\nFROM b\nCOPY --from=b / /\n").unwrap();
        let df = parse_dockerfile(&ast).unwrap();
        assert_eq!(df.meta_args.len(), 1);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].commands.len(), 1);
        let ast = parse(b"RUN x\n").unwrap();
        assert_eq!(*parse_dockerfile(&ast).unwrap_err().kind, K::NoStage);
        let ast = parse(b"FROM a\n\nCOPY --bogus a b\n").unwrap();
        let e = parse_dockerfile(&ast).unwrap_err();
        assert_eq!(e.line, 3);
        let msg = e.to_string();
        assert!(
            msg.contains("line 3") && msg.contains("COPY") && msg.contains("COPY --bogus a b"),
            "{msg}"
        );
    }
}
