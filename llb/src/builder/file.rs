//! File ops: chains of mkdir / mkfile / rm / copy / symlink actions.
//!
//! A chain is built with the free functions ([`mkdir`], [`copy`], ...) and
//! the same-named methods on [`FileAction`], then applied to a state with
//! [`State::file`]. Every action but the last gets output `-1`; each action
//! after the first works on the result of the previous one, which the op
//! encodes as an input index `>= len(inputs)`.

use std::collections::HashMap;
use std::sync::Arc;

use super::Constraints;
use super::marshal::Marshaler;
use super::path::{clean, join_dir, normalize};
use super::state::{Output, State};
use crate::pb;

/// A user or group for file ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// Numeric ID.
    Id(u32),
    /// Name, resolved against the target's `/etc/passwd` / `/etc/group`.
    Name(String),
}

/// Owner of created or copied files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChownOpt {
    /// Owning user.
    pub user: Option<UserRef>,
    /// Owning group.
    pub group: Option<UserRef>,
}

impl ChownOpt {
    /// Owner by numeric IDs.
    pub fn ids(uid: u32, gid: u32) -> Self {
        ChownOpt {
            user: Some(UserRef::Id(uid)),
            group: Some(UserRef::Id(gid)),
        }
    }

    fn to_pb(&self, base: i64) -> pb::ChownOpt {
        let conv = |u: &UserRef| pb::UserOpt {
            user: Some(match u {
                UserRef::Id(id) => pb::user_opt::User::ById(*id),
                UserRef::Name(name) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                    name: name.clone(),
                    input: base,
                }),
            }),
        };
        pb::ChownOpt {
            user: self.user.as_ref().map(conv),
            group: self.group.as_ref().map(conv),
        }
    }
}

/// Permission override of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMode {
    /// Numeric permission bits.
    Bits(u32),
    /// Symbolic chmod string such as `u+x,go-w`.
    Symbolic(String),
}

/// Options of [`mkdir`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MkdirOptions {
    /// Create missing parents.
    pub make_parents: bool,
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds.
    pub timestamp: Option<i64>,
}

/// Options of [`mkfile`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MkfileOptions {
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds.
    pub timestamp: Option<i64>,
}

/// Options of [`rm`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RmOptions {
    /// Do not fail when the path does not exist.
    pub allow_not_found: bool,
    /// Allow wildcards in the path.
    pub allow_wildcard: bool,
}

/// Options of [`symlink`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymlinkOptions {
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Timestamp in unix nanoseconds.
    pub timestamp: Option<i64>,
}

/// Options of [`copy`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyOptions {
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Permission override.
    pub mode: Option<CopyMode>,
    /// Resolve symlinks in the source path.
    pub follow_symlinks: bool,
    /// Copy only the contents of a source directory.
    pub copy_dir_contents_only: bool,
    /// Unpack archives like Docker's `ADD`.
    pub attempt_unpack: bool,
    /// Create missing parents of the destination.
    pub create_dest_path: bool,
    /// Allow wildcards in the source path.
    pub allow_wildcard: bool,
    /// Do not fail when a wildcard matches nothing.
    pub allow_empty_wildcard: bool,
    /// Timestamp in unix nanoseconds.
    pub timestamp: Option<i64>,
    /// Copy only paths matching one of these patterns.
    pub include_patterns: Vec<String>,
    /// Skip paths matching any of these patterns.
    pub exclude_patterns: Vec<String>,
    /// Replace destination paths whose type differs from the source.
    pub always_replace_existing_dest_paths: bool,
    /// Paths that must exist in the source.
    pub required_paths: Vec<String>,
}

/// Where a copy reads from.
#[derive(Debug, Clone)]
pub enum CopySource {
    /// Another state.
    State(State),
    /// The result of a chain of actions applied to `base`, computed inside
    /// the same file op.
    Actions {
        /// State the chain starts from.
        base: State,
        /// The chain.
        actions: FileAction,
    },
}

impl From<&State> for CopySource {
    fn from(s: &State) -> Self {
        CopySource::State(s.clone())
    }
}

impl From<State> for CopySource {
    fn from(s: State) -> Self {
        CopySource::State(s)
    }
}

#[derive(Debug)]
enum ActionKind {
    Mkdir {
        path: String,
        mode: u32,
        opts: MkdirOptions,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        opts: MkfileOptions,
    },
    Rm {
        path: String,
        opts: RmOptions,
    },
    Copy {
        source: Box<CopySource>,
        src: String,
        dest: String,
        opts: Box<CopyOptions>,
    },
    Symlink {
        oldpath: String,
        newpath: String,
        opts: SymlinkOptions,
    },
}

#[derive(Debug)]
struct ActionNode {
    prev: Option<FileAction>,
    kind: ActionKind,
}

/// A chain of file actions (cheap to clone).
#[derive(Debug, Clone)]
pub struct FileAction(Arc<ActionNode>);

fn start(kind: ActionKind) -> FileAction {
    FileAction(Arc::new(ActionNode { prev: None, kind }))
}

/// Creates a directory. Only the permission bits (`0o777`) of `mode` are
/// kept, as in BuildKit's client.
pub fn mkdir(path: impl Into<String>, mode: u32, opts: MkdirOptions) -> FileAction {
    start(ActionKind::Mkdir {
        path: path.into(),
        mode,
        opts,
    })
}

/// Creates a file with `data`. Only the permission bits (`0o777`) of `mode`
/// are kept.
pub fn mkfile(
    path: impl Into<String>,
    mode: u32,
    data: Vec<u8>,
    opts: MkfileOptions,
) -> FileAction {
    start(ActionKind::Mkfile {
        path: path.into(),
        mode,
        data,
        opts,
    })
}

/// Removes a path.
pub fn rm(path: impl Into<String>, opts: RmOptions) -> FileAction {
    start(ActionKind::Rm {
        path: path.into(),
        opts,
    })
}

/// Copies `src` from `source` to `dest`.
pub fn copy(
    source: impl Into<CopySource>,
    src: impl Into<String>,
    dest: impl Into<String>,
    opts: CopyOptions,
) -> FileAction {
    start(ActionKind::Copy {
        source: Box::new(source.into()),
        src: src.into(),
        dest: dest.into(),
        opts: Box::new(opts),
    })
}

/// Creates a symlink at `newpath` pointing to `oldpath`.
pub fn symlink(
    oldpath: impl Into<String>,
    newpath: impl Into<String>,
    opts: SymlinkOptions,
) -> FileAction {
    start(ActionKind::Symlink {
        oldpath: oldpath.into(),
        newpath: newpath.into(),
        opts,
    })
}

impl FileAction {
    fn then(self, kind: ActionKind) -> FileAction {
        FileAction(Arc::new(ActionNode {
            prev: Some(self),
            kind,
        }))
    }

    /// Then creates a directory.
    pub fn mkdir(self, path: impl Into<String>, mode: u32, opts: MkdirOptions) -> FileAction {
        self.then(ActionKind::Mkdir {
            path: path.into(),
            mode,
            opts,
        })
    }

    /// Then creates a file.
    pub fn mkfile(
        self,
        path: impl Into<String>,
        mode: u32,
        data: Vec<u8>,
        opts: MkfileOptions,
    ) -> FileAction {
        self.then(ActionKind::Mkfile {
            path: path.into(),
            mode,
            data,
            opts,
        })
    }

    /// Then removes a path.
    pub fn rm(self, path: impl Into<String>, opts: RmOptions) -> FileAction {
        self.then(ActionKind::Rm {
            path: path.into(),
            opts,
        })
    }

    /// Then copies.
    pub fn copy(
        self,
        source: impl Into<CopySource>,
        src: impl Into<String>,
        dest: impl Into<String>,
        opts: CopyOptions,
    ) -> FileAction {
        self.then(ActionKind::Copy {
            source: Box::new(source.into()),
            src: src.into(),
            dest: dest.into(),
            opts: Box::new(opts),
        })
    }

    /// Then creates a symlink.
    pub fn symlink(
        self,
        oldpath: impl Into<String>,
        newpath: impl Into<String>,
        opts: SymlinkOptions,
    ) -> FileAction {
        self.then(ActionKind::Symlink {
            oldpath: oldpath.into(),
            newpath: newpath.into(),
            opts,
        })
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// A file op as stored in the graph.
#[derive(Debug)]
pub(crate) struct FileSpec {
    base: State,
    action: FileAction,
}

impl FileSpec {
    pub(crate) fn new(base: State, action: FileAction, c: &mut Constraints) -> Self {
        let mut node = Some(&action);
        let mut stack = Vec::new();
        while let Some(a) = node {
            stack.push(a.clone());
            node = a.0.prev.as_ref();
        }
        while let Some(a) = stack.pop() {
            match &a.0.kind {
                ActionKind::Copy { source, opts, .. } => {
                    if !opts.include_patterns.is_empty() || !opts.exclude_patterns.is_empty() {
                        c.add_cap("file.copy.includeexcludepatterns");
                    }
                    if opts.always_replace_existing_dest_paths {
                        c.add_cap("file.copy.alwaysreplaceexistingdestpaths");
                    }
                    if matches!(opts.mode, Some(CopyMode::Symbolic(_))) {
                        c.add_cap("file.copy.modestring");
                    }
                    if !opts.required_paths.is_empty() {
                        c.add_cap("file.copy.requiredpaths");
                    }
                    if let CopySource::Actions { actions, .. } = &**source {
                        let mut nested = actions.0.prev.as_ref();
                        stack.push(actions.clone());
                        while let Some(n) = nested {
                            stack.push(n.clone());
                            nested = n.0.prev.as_ref();
                        }
                    }
                }
                ActionKind::Rm { opts, .. } if opts.allow_wildcard => c.add_cap("file.rm.wildcard"),
                ActionKind::Symlink { .. } => c.add_cap("file.symlink.create"),
                _ => {}
            }
        }
        FileSpec { base, action }
    }

    /// Every output the op reads, first-use order, without duplicates.
    pub(crate) fn inputs(&self) -> Vec<&Output> {
        let mut out: Vec<&Output> = Vec::new();
        collect_inputs(&self.action, &self.base, &mut out);
        out
    }

    pub(crate) fn render(&self, m: &Marshaler<'_>) -> (Vec<pb::Input>, pb::FileOp) {
        let mut st = RenderState {
            m,
            inputs: Vec::new(),
            actions: Vec::new(),
            visited: HashMap::new(),
        };
        st.add(&self.action, &self.base);
        let n = st.inputs.len() as i64;
        let count = st.actions.len();
        let resolve = |r: Ref| match r {
            Ref::Input(i) => i,
            Ref::Action(k) => n + k as i64,
        };
        let actions = st
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| pb::FileAction {
                input: resolve(a.input),
                secondary_input: resolve(a.input2),
                output: if i + 1 == count { 0 } else { pb::SKIP_OUTPUT },
                action: Some(a.body.clone()),
            })
            .collect();
        (st.inputs, pb::FileOp { actions })
    }
}

fn collect_inputs<'a>(action: &'a FileAction, base: &'a State, out: &mut Vec<&'a Output>) {
    let push = |o: &'a Output, out: &mut Vec<&'a Output>| {
        if !out.iter().any(|x| std::ptr::eq(*x, o)) {
            out.push(o);
        }
    };
    if let Some(prev) = &action.0.prev {
        collect_inputs(prev, base, out);
    }
    if let Some(o) = base.output() {
        push(o, out);
    }
    if let ActionKind::Copy { source, .. } = &action.0.kind {
        match &**source {
            CopySource::State(s) => {
                if let Some(o) = s.output() {
                    push(o, out);
                }
            }
            CopySource::Actions { base, actions } => collect_inputs(actions, base, out),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ref {
    Input(i64),
    Action(usize),
}

struct RenderedAction {
    input: Ref,
    input2: Ref,
    body: pb::file_action::Action,
}

struct RenderState<'a, 'm> {
    m: &'a Marshaler<'m>,
    inputs: Vec<pb::Input>,
    actions: Vec<RenderedAction>,
    visited: HashMap<usize, usize>,
}

impl RenderState<'_, '_> {
    fn add_input(&mut self, state: &State) -> i64 {
        let Some(out) = state.output() else {
            return pb::EMPTY_INPUT;
        };
        let inp = self.m.input(out);
        match self.inputs.iter().position(|i| *i == inp) {
            Some(i) => i as i64,
            None => {
                self.inputs.push(inp);
                self.inputs.len() as i64 - 1
            }
        }
    }

    /// Adds `action` (and its predecessors) bound to `bound`; returns its
    /// position in the action list.
    fn add(&mut self, action: &FileAction, bound: &State) -> usize {
        if let Some(&k) = self.visited.get(&action.key()) {
            return k;
        }
        let prev = action.0.prev.as_ref().map(|p| self.add(p, bound));
        let base = self.add_input(bound);
        let input = match prev {
            Some(k) => Ref::Action(k),
            None => Ref::Input(base),
        };
        let mut input2 = Ref::Input(pb::EMPTY_INPUT);
        if let ActionKind::Copy { source, .. } = &action.0.kind {
            input2 = match &**source {
                CopySource::State(s) => Ref::Input(self.add_input(s)),
                CopySource::Actions { base, actions } => Ref::Action(self.add(actions, base)),
            };
        }
        let body = to_pb_action(&action.0.kind, bound.get_dir(), base);
        self.actions.push(RenderedAction {
            input,
            input2,
            body,
        });
        let k = self.actions.len() - 1;
        self.visited.insert(action.key(), k);
        k
    }
}

fn time(t: Option<i64>) -> i64 {
    t.unwrap_or(-1)
}

fn to_pb_action(kind: &ActionKind, parent: &str, base: i64) -> pb::file_action::Action {
    use pb::file_action::Action;
    let owner = |o: &Option<ChownOpt>| o.as_ref().map(|c| c.to_pb(base));
    match kind {
        ActionKind::Mkdir { path, mode, opts } => Action::Mkdir(pb::FileActionMkDir {
            path: normalize(parent, path, false),
            mode: (*mode & 0o777) as i32,
            make_parents: opts.make_parents,
            owner: owner(&opts.owner),
            timestamp: time(opts.timestamp),
        }),
        ActionKind::Mkfile {
            path,
            mode,
            data,
            opts,
        } => Action::Mkfile(pb::FileActionMkFile {
            path: normalize(parent, path, false),
            mode: (*mode & 0o777) as i32,
            data: data.clone(),
            owner: owner(&opts.owner),
            timestamp: time(opts.timestamp),
        }),
        ActionKind::Rm { path, opts } => Action::Rm(pb::FileActionRm {
            path: normalize(parent, path, false),
            allow_not_found: opts.allow_not_found,
            allow_wildcard: opts.allow_wildcard,
        }),
        ActionKind::Symlink {
            oldpath,
            newpath,
            opts,
        } => Action::Symlink(pb::FileActionSymlink {
            oldpath: oldpath.clone(),
            newpath: normalize(parent, newpath, false),
            owner: owner(&opts.owner),
            timestamp: time(opts.timestamp),
        }),
        ActionKind::Copy {
            source,
            src,
            dest,
            opts,
        } => {
            let src_dir = match &**source {
                CopySource::State(s) => s.get_dir(),
                CopySource::Actions { base, .. } => base.get_dir(),
            };
            // Sources are cleaned and joined to the source state's dir; a
            // trailing slash is not kept (unlike the destination).
            let src = if src.starts_with('/') {
                clean(src)
            } else {
                join_dir(src_dir, &clean(src))
            };
            let (mode, mode_str) = match &opts.mode {
                None => (-1, String::new()),
                Some(CopyMode::Bits(b)) => (*b as i32, String::new()),
                Some(CopyMode::Symbolic(s)) => (0, s.clone()),
            };
            Action::Copy(pb::FileActionCopy {
                src,
                dest: normalize(parent, dest, true),
                owner: owner(&opts.owner),
                mode,
                follow_symlink: opts.follow_symlinks,
                dir_copy_contents: opts.copy_dir_contents_only,
                attempt_unpack_docker_compatibility: opts.attempt_unpack,
                create_dest_path: opts.create_dest_path,
                allow_wildcard: opts.allow_wildcard,
                allow_empty_wildcard: opts.allow_empty_wildcard,
                timestamp: time(opts.timestamp),
                include_patterns: opts.include_patterns.clone(),
                exclude_patterns: opts.exclude_patterns.clone(),
                always_replace_existing_dest_paths: opts.always_replace_existing_dest_paths,
                mode_str,
                required_paths: opts.required_paths.clone(),
            })
        }
    }
}
