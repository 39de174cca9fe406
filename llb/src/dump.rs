//! Human-readable dumps of a [`Definition`], shaped like
//! `buildctl debug dump-llb` (JSON lines) and `dump-llb --dot` (Graphviz).
//!
//! The JSON follows Go's `encoding/json` over BuildKit's generated types:
//! proto field names as keys, zero values omitted, enums as integers, bytes
//! as base64, map keys sorted, and `<`, `>`, `&`, U+2028, U+2029 escaped as
//! `\u003c`-style sequences like Go's encoder. Objects are built by hand as
//! `serde_json::Value`s (with `preserve_order`, so keys keep the proto field
//! order).
//!
//! Uses [`crate::pb`], [`crate::definition`] and [`crate::digest`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::definition::Definition;
use crate::pb;

/// One JSON object per op (terminal op included), one per line, in `def`
/// order: `{"Op":…,"Digest":"sha256:…","OpMetadata":…}`.
///
/// `OpMetadata` is `null` for ops without a metadata entry (older buildctl
/// releases print it that way; newer ones print `{}`).
pub fn dump_json_lines(def: &Definition) -> String {
    let mut out = String::new();
    for entry in def.entries() {
        let mut line = Map::new();
        line.insert("Op".into(), op_json(&entry.op));
        line.insert("Digest".into(), Value::String(entry.digest.to_string()));
        line.insert(
            "OpMetadata".into(),
            def.metadata(&entry.digest)
                .map_or(Value::Null, op_metadata_json),
        );
        out.push_str(&go_json_escape(&Value::Object(line).to_string()));
        out.push('\n');
    }
    out
}

/// A Graphviz `digraph` of the definition: one node per entry, one edge per
/// input, exec edges labelled with the non-root mount destination.
pub fn dump_dot(def: &Definition) -> String {
    let mut out = String::from("digraph {\n");
    for entry in def.entries() {
        let (label, shape) = dot_attr(&entry.op, entry.digest.as_str());
        let _ = writeln!(
            out,
            "  {} [label={} shape={}];",
            go_quote(entry.digest.as_str()),
            go_quote(&label),
            go_quote(shape)
        );
    }
    for entry in def.entries() {
        for (i, input) in entry.op.inputs.iter().enumerate() {
            let mut label = "";
            if let Some(pb::op::Op::Exec(e)) = &entry.op.op {
                for m in &e.mounts {
                    if m.input == i as i64 && m.dest != pb::ROOT_MOUNT {
                        label = &m.dest;
                    }
                }
            }
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                go_quote(&input.digest),
                go_quote(entry.digest.as_str()),
                go_quote(label)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn dot_attr(op: &pb::Op, digest: &str) -> (String, &'static str) {
    use pb::file_action::Action;
    use pb::op::Op as K;
    match &op.op {
        Some(K::Source(s)) => (s.identifier.clone(), "ellipse"),
        Some(K::Exec(e)) => (
            e.meta
                .as_ref()
                .map(|m| m.args.join(" "))
                .unwrap_or_default(),
            "box",
        ),
        Some(K::Build(_)) => ("build".into(), "box3d"),
        Some(K::Merge(_)) => ("merge".into(), "invtriangle"),
        Some(K::Diff(_)) => ("diff".into(), "doublecircle"),
        Some(K::File(f)) => {
            let names: Vec<String> = f
                .actions
                .iter()
                .map(|a| match &a.action {
                    Some(Action::Copy(c)) => format!("copy{{src={}, dest={}}}", c.src, c.dest),
                    Some(Action::Mkfile(m)) => format!("mkfile{{path={}}}", m.path),
                    Some(Action::Mkdir(m)) => format!("mkdir{{path={}}}", m.path),
                    Some(Action::Rm(r)) => format!("rm{{path={}}}", r.path),
                    Some(Action::Symlink(s)) => {
                        format!("symlink{{oldpath={}, newpath={}}}", s.oldpath, s.newpath)
                    }
                    None => String::new(),
                })
                .collect();
            (names.join(","), "note")
        }
        Some(K::Passthrough(_)) | None => (digest.to_owned(), "plaintext"),
    }
}

/// Go's `strconv.Quote`: double-quoted with Go escapes; printable Unicode
/// is kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `unicode.IsPrint`: no control, format or separator
/// characters other than the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xf0000..=0x10ffff)
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 the way Go's JSON encoder does.
/// Safe on a whole serialized document: those characters only occur inside
/// strings.
pub fn go_json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Builder for a JSON object that drops zero values like `omitempty`.
struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Obj(Map::new())
    }
    fn put(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.to_owned(), v);
        self
    }
    fn str(self, k: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.put(k, Value::String(v.to_owned()))
        }
    }
    fn int(self, k: &str, v: i64) -> Self {
        if v == 0 { self } else { self.put(k, v.into()) }
    }
    fn uint(self, k: &str, v: u64) -> Self {
        if v == 0 { self } else { self.put(k, v.into()) }
    }
    fn flag(self, k: &str, v: bool) -> Self {
        if v { self.put(k, true.into()) } else { self }
    }
    fn strs(self, k: &str, v: &[String]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.put(k, v.to_vec().into())
        }
    }
    fn bytes(self, k: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.put(
                k,
                base64::engine::general_purpose::STANDARD.encode(v).into(),
            )
        }
    }
    fn opt<T>(self, k: &str, v: Option<&T>, f: impl Fn(&T) -> Value) -> Self {
        match v {
            Some(v) => self.put(k, f(v)),
            None => self,
        }
    }
    fn list<T>(self, k: &str, v: &[T], f: impl Fn(&T) -> Value) -> Self {
        if v.is_empty() {
            self
        } else {
            self.put(k, Value::Array(v.iter().map(f).collect()))
        }
    }
    fn map<T>(self, k: &str, v: &BTreeMap<String, T>, f: impl Fn(&T) -> Value) -> Self {
        if v.is_empty() {
            self
        } else {
            let m: Map<String, Value> = v.iter().map(|(k, v)| (k.clone(), f(v))).collect();
            self.put(k, Value::Object(m))
        }
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn string_map(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// JSON form of an op, as `buildctl debug dump-llb` prints it.
pub fn op_json(op: &pb::Op) -> Value {
    use pb::op::Op as K;
    let kind = match &op.op {
        None => Obj::new(),
        Some(K::Exec(e)) => Obj::new().put("exec", exec_json(e)),
        Some(K::Source(s)) => Obj::new().put(
            "source",
            Obj::new()
                .str("identifier", &s.identifier)
                .map("attrs", &s.attrs, |v| string_map(v))
                .done(),
        ),
        Some(K::File(f)) => Obj::new().put(
            "file",
            Obj::new()
                .list("actions", &f.actions, file_action_json)
                .done(),
        ),
        Some(K::Build(b)) => Obj::new().put(
            "build",
            Obj::new()
                .int("builder", b.builder)
                .map("inputs", &b.inputs, |i| {
                    Obj::new().int("input", i.input).done()
                })
                .opt("def", b.def.as_ref(), definition_json)
                .map("attrs", &b.attrs, |v| string_map(v))
                .done(),
        ),
        Some(K::Merge(m)) => Obj::new().put(
            "merge",
            Obj::new()
                .list("inputs", &m.inputs, |i| {
                    Obj::new().int("input", i.input).done()
                })
                .done(),
        ),
        Some(K::Diff(d)) => Obj::new().put(
            "diff",
            Obj::new()
                .opt("lower", d.lower.as_ref(), |i| {
                    Obj::new().int("input", i.input).done()
                })
                .opt("upper", d.upper.as_ref(), |i| {
                    Obj::new().int("input", i.input).done()
                })
                .done(),
        ),
        Some(K::Passthrough(p)) => Obj::new().put(
            "passthrough",
            Obj::new()
                .str("id", &p.id)
                .list("outputs", &p.outputs, |o| (*o).into())
                .done(),
        ),
    };
    Obj::new()
        .list("inputs", &op.inputs, |i| {
            Obj::new()
                .str("digest", &i.digest)
                .int("index", i.index)
                .done()
        })
        .put("Op", kind.done())
        .opt("platform", op.platform.as_ref(), platform_json)
        .opt("constraints", op.constraints.as_ref(), |c| {
            Obj::new().strs("filter", &c.filter).done()
        })
        .done()
}

fn platform_json(p: &pb::Platform) -> Value {
    Obj::new()
        .str("Architecture", &p.architecture)
        .str("OS", &p.os)
        .str("Variant", &p.variant)
        .str("OSVersion", &p.os_version)
        .strs("OSFeatures", &p.os_features)
        .done()
}

fn exec_json(e: &pb::ExecOp) -> Value {
    Obj::new()
        .opt("meta", e.meta.as_ref(), meta_json)
        .list("mounts", &e.mounts, mount_json)
        .int("network", e.network.into())
        .int("security", e.security.into())
        .list("secretenv", &e.secretenv, |s| {
            Obj::new()
                .str("ID", &s.id)
                .str("name", &s.name)
                .flag("optional", s.optional)
                .done()
        })
        .list("cdiDevices", &e.cdi_devices, |d| {
            Obj::new()
                .str("name", &d.name)
                .flag("optional", d.optional)
                .done()
        })
        .done()
}

fn meta_json(m: &pb::Meta) -> Value {
    Obj::new()
        .strs("args", &m.args)
        .strs("env", &m.env)
        .str("cwd", &m.cwd)
        .str("user", &m.user)
        .opt("proxy_env", m.proxy_env.as_ref(), |p| {
            Obj::new()
                .str("http_proxy", &p.http_proxy)
                .str("https_proxy", &p.https_proxy)
                .str("ftp_proxy", &p.ftp_proxy)
                .str("no_proxy", &p.no_proxy)
                .str("all_proxy", &p.all_proxy)
                .done()
        })
        .list("extraHosts", &m.extra_hosts, |h| {
            Obj::new().str("Host", &h.host).str("IP", &h.ip).done()
        })
        .str("hostname", &m.hostname)
        .list("ulimit", &m.ulimit, |u| {
            Obj::new()
                .str("Name", &u.name)
                .int("Soft", u.soft)
                .int("Hard", u.hard)
                .done()
        })
        .str("cgroupParent", &m.cgroup_parent)
        .flag("removeMountStubsRecursive", m.remove_mount_stubs_recursive)
        .list("validExitCodes", &m.valid_exit_codes, |c| (*c).into())
        .done()
}

fn mount_json(m: &pb::Mount) -> Value {
    let secret_like = |id: &str, uid: u32, gid: u32, mode: u32, optional: bool| {
        Obj::new()
            .str("ID", id)
            .uint("uid", uid.into())
            .uint("gid", gid.into())
            .uint("mode", mode.into())
            .flag("optional", optional)
            .done()
    };
    Obj::new()
        .int("input", m.input)
        .str("selector", &m.selector)
        .str("dest", &m.dest)
        .int("output", m.output)
        .flag("readonly", m.readonly)
        .int("mountType", m.mount_type.into())
        .opt("TmpfsOpt", m.tmpfs_opt.as_ref(), |t| {
            Obj::new().int("size", t.size).done()
        })
        .opt("cacheOpt", m.cache_opt.as_ref(), |c| {
            Obj::new()
                .str("ID", &c.id)
                .int("sharing", c.sharing.into())
                .done()
        })
        .opt("secretOpt", m.secret_opt.as_ref(), |s| {
            secret_like(&s.id, s.uid, s.gid, s.mode, s.optional)
        })
        .opt("SSHOpt", m.ssh_opt.as_ref(), |s| {
            secret_like(&s.id, s.uid, s.gid, s.mode, s.optional)
        })
        .str("resultID", &m.result_id)
        .int("contentCache", m.content_cache.into())
        .done()
}

/// FileAction JSON: `input`, `secondaryInput` and `output` are always
/// printed, and the oneof sits in an `Action` object.
///
/// buildctl's JSON marshaller omits `symlink` (its `Action` object has no
/// such field, so a symlink prints as `"Action":{}`); kiln includes it so
/// the dump shows the whole op.
fn file_action_json(a: &pb::FileAction) -> Value {
    use pb::file_action::Action;
    let action = match &a.action {
        None => Obj::new(),
        Some(Action::Copy(c)) => Obj::new().put(
            "copy",
            Obj::new()
                .str("src", &c.src)
                .str("dest", &c.dest)
                .opt("owner", c.owner.as_ref(), chown_json)
                .int("mode", c.mode.into())
                .flag("followSymlink", c.follow_symlink)
                .flag("dirCopyContents", c.dir_copy_contents)
                .flag(
                    "attemptUnpackDockerCompatibility",
                    c.attempt_unpack_docker_compatibility,
                )
                .flag("createDestPath", c.create_dest_path)
                .flag("allowWildcard", c.allow_wildcard)
                .flag("allowEmptyWildcard", c.allow_empty_wildcard)
                .int("timestamp", c.timestamp)
                .strs("include_patterns", &c.include_patterns)
                .strs("exclude_patterns", &c.exclude_patterns)
                .flag(
                    "alwaysReplaceExistingDestPaths",
                    c.always_replace_existing_dest_paths,
                )
                .str("modeStr", &c.mode_str)
                .strs("required_paths", &c.required_paths)
                .done(),
        ),
        Some(Action::Mkfile(m)) => Obj::new().put(
            "mkfile",
            Obj::new()
                .str("path", &m.path)
                .int("mode", m.mode.into())
                .bytes("data", &m.data)
                .opt("owner", m.owner.as_ref(), chown_json)
                .int("timestamp", m.timestamp)
                .done(),
        ),
        Some(Action::Mkdir(m)) => Obj::new().put(
            "mkdir",
            Obj::new()
                .str("path", &m.path)
                .int("mode", m.mode.into())
                .flag("makeParents", m.make_parents)
                .opt("owner", m.owner.as_ref(), chown_json)
                .int("timestamp", m.timestamp)
                .done(),
        ),
        Some(Action::Rm(r)) => Obj::new().put(
            "rm",
            Obj::new()
                .str("path", &r.path)
                .flag("allowNotFound", r.allow_not_found)
                .flag("allowWildcard", r.allow_wildcard)
                .done(),
        ),
        Some(Action::Symlink(s)) => Obj::new().put(
            "symlink",
            Obj::new()
                .str("oldpath", &s.oldpath)
                .str("newpath", &s.newpath)
                .opt("owner", s.owner.as_ref(), chown_json)
                .int("timestamp", s.timestamp)
                .done(),
        ),
    };
    Obj::new()
        .put("input", a.input.into())
        .put("secondaryInput", a.secondary_input.into())
        .put("output", a.output.into())
        .put("Action", action.done())
        .done()
}

fn chown_json(c: &pb::ChownOpt) -> Value {
    Obj::new()
        .opt("user", c.user.as_ref(), user_opt_json)
        .opt("group", c.group.as_ref(), user_opt_json)
        .done()
}

/// UserOpt JSON: `{"User":{"byName":{…}}}` or `{"User":{"byId":N}}`.
fn user_opt_json(u: &pb::UserOpt) -> Value {
    use pb::user_opt::User;
    let inner = match &u.user {
        None => Obj::new(),
        Some(User::ByName(n)) => Obj::new().put(
            "byName",
            Obj::new().str("name", &n.name).int("input", n.input).done(),
        ),
        Some(User::ById(id)) => Obj::new().uint("byId", (*id).into()),
    };
    Obj::new().put("User", inner.done()).done()
}

/// JSON form of op metadata.
pub fn op_metadata_json(m: &pb::OpMetadata) -> Value {
    Obj::new()
        .flag("ignore_cache", m.ignore_cache)
        .map("description", &m.description, |v| string_map(v))
        .opt("export_cache", m.export_cache.as_ref(), |e| {
            Obj::new().flag("Value", e.value).done()
        })
        .map("caps", &m.caps, |b| Value::Bool(*b))
        .opt("progress_group", m.progress_group.as_ref(), |p| {
            Obj::new()
                .str("id", &p.id)
                .str("name", &p.name)
                .flag("weak", p.weak)
                .done()
        })
        .opt("linux_resources", m.linux_resources.as_ref(), |r| {
            Obj::new()
                .int("memory", r.memory)
                .int("memorySwap", r.memory_swap)
                .uint("cpuShares", r.cpu_shares)
                .uint("cpuPeriod", r.cpu_period)
                .int("cpuQuota", r.cpu_quota)
                .str("cpusetCpus", &r.cpuset_cpus)
                .str("cpusetMems", &r.cpuset_mems)
                .done()
        })
        .done()
}

fn definition_json(d: &pb::Definition) -> Value {
    let b64 = |b: &Vec<u8>| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    Obj::new()
        .list("def", &d.def, b64)
        .map("metadata", &d.metadata, op_metadata_json)
        .opt("Source", d.source.as_ref(), |s| {
            Obj::new()
                .map("locations", &s.locations, |l| {
                    Obj::new()
                        .list("locations", &l.locations, location_json)
                        .done()
                })
                .list("infos", &s.infos, |i| {
                    Obj::new()
                        .str("filename", &i.filename)
                        .bytes("data", &i.data)
                        .opt("definition", i.definition.as_ref(), definition_json)
                        .str("language", &i.language)
                        .done()
                })
                .done()
        })
        .done()
}

fn location_json(l: &pb::Location) -> Value {
    let pos = |p: &pb::Position| {
        Obj::new()
            .int("line", p.line.into())
            .int("character", p.character.into())
            .done()
    };
    Obj::new()
        .int("sourceIndex", l.source_index.into())
        .list("ranges", &l.ranges, |r| {
            Obj::new()
                .opt("start", r.start.as_ref(), pos)
                .opt("end", r.end.as_ref(), pos)
                .done()
        })
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é♥"), "\"a\\\"b\\\\c\\n\\x01é♥\"");
        assert_eq!(go_quote("\u{200b}"), "\"\\u200b\"");
    }

    fn json(v: &str) -> Value {
        serde_json::from_str(v).unwrap()
    }

    #[test]
    fn op_json_shapes_match_buildkit() {
        let exec = pb::Op {
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["echo".into(), "Hello".into(), "World".into()],
                    ..Default::default()
                }),
                mounts: vec![pb::Mount {
                    dest: "/".into(),
                    readonly: true,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&exec),
            json(
                r#"{"Op":{"exec":{"meta":{"args":["echo","Hello","World"]},"mounts":[{"dest":"/","readonly":true}]}}}"#
            )
        );
        let source = pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: "local://context".into(),
                ..Default::default()
            })),
            constraints: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            op_json(&source),
            json(r#"{"Op":{"source":{"identifier":"local://context"}},"constraints":{}}"#)
        );
        let file = pb::Op {
            op: Some(pb::op::Op::File(pb::FileOp {
                actions: vec![pb::FileAction {
                    input: 1,
                    output: 2,
                    action: Some(pb::file_action::Action::Copy(pb::FileActionCopy {
                        src: "/foo".into(),
                        dest: "/bar".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&file),
            json(
                r#"{"Op":{"file":{"actions":[{"Action":{"copy":{"src":"/foo","dest":"/bar"}},"input":1,"secondaryInput":0,"output":2}]}}}"#
            )
        );
        let build = pb::Op {
            op: Some(pb::op::Op::Build(pb::BuildOp {
                def: Some(Default::default()),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(op_json(&build), json(r#"{"Op":{"build":{"def":{}}}}"#));
        let merge = pb::Op {
            op: Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&merge),
            json(r#"{"Op":{"merge":{"inputs":[{},{"input":1}]}}}"#)
        );
        let diff = pb::Op {
            op: Some(pb::op::Op::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: 0 }),
                upper: Some(pb::UpperDiffInput { input: 1 }),
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&diff),
            json(r#"{"Op":{"diff":{"lower":{},"upper":{"input":1}}}}"#)
        );
    }

    #[test]
    fn go_json_escape_html() {
        assert_eq!(go_json_escape("\"a>b&<\""), "\"a\\u003eb\\u0026\\u003c\"");
    }
}
