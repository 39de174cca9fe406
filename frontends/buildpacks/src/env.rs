//! The environment algebra of the buildpack contract: env files with
//! `override` / `default` / `prepend` / `append` / `delim` suffixes, the
//! well-known layer subdirectories that feed path variables, platform env,
//! and the filtering of the build image's own environment.
//!
//! Semantics follow the Buildpack API (0.5+ for suffix-less files) and the
//! lifecycle's behaviour: values are used byte for byte, `prepend`/`append`
//! join with the `.delim` of the same directory or with nothing at all, and
//! an empty current value is replaced rather than joined.

/// Variables whose platform values are prepended with `:` instead of
/// replacing the current value.
pub const PATH_VARS: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "PKG_CONFIG_PATH",
];

/// Variables of the build image's environment that reach buildpacks.
const PASS_THROUGH: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "PKG_CONFIG_PATH",
    "HOME",
    "HOSTNAME",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "CNB_STACK_ID",
];

/// Checks an environment variable name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the variable name is empty".into());
    }
    if name.contains('=') || name.contains('\0') {
        return Err(format!("the variable name {name:?} contains '=' or NUL"));
    }
    Ok(())
}

/// An ordered environment (first definition keeps its position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

/// How an env file changes its variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace.
    Override,
    /// Set only if unset or empty.
    Default,
    /// Put in front.
    Prepend,
    /// Put behind.
    Append,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        Env::default()
    }

    /// From `KEY=VALUE` strings (entries without `=` are skipped; a later
    /// duplicate wins).
    pub fn from_list<S: AsRef<str>>(list: &[S]) -> Self {
        let mut e = Env::new();
        for item in list {
            if let Some((k, v)) = item.as_ref().split_once('=')
                && !k.is_empty()
            {
                e.set(k, v);
            }
        }
        e
    }

    /// Only the variables of `self` that pass into a buildpack's process.
    pub fn filtered_for_build(&self) -> Env {
        Env {
            vars: self
                .vars
                .iter()
                .filter(|(k, _)| PASS_THROUGH.contains(&k.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (override).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.vars.retain(|(k, _)| k != name);
    }

    /// Applies one action. `delim` joins the old and new value for
    /// prepend/append; an unset or empty old value is simply replaced.
    pub fn apply(&mut self, name: &str, action: Action, value: &str, delim: Option<&str>) {
        let cur = self.get(name).unwrap_or("").to_string();
        let new = match action {
            Action::Override => value.to_string(),
            Action::Default => {
                if !cur.is_empty() {
                    return;
                }
                value.to_string()
            }
            Action::Prepend if cur.is_empty() => value.to_string(),
            Action::Append if cur.is_empty() => value.to_string(),
            Action::Prepend => format!("{value}{}{cur}", delim.unwrap_or("")),
            Action::Append => format!("{cur}{}{value}", delim.unwrap_or("")),
        };
        self.set(name, &new);
    }

    /// Prepends a directory to a path variable with `:`.
    pub fn prepend_path(&mut self, name: &str, dir: &str) {
        self.apply(name, Action::Prepend, dir, Some(":"));
    }

    /// Applies platform env (`/platform/env`): path variables are prepended
    /// with `:`, anything else is overridden.
    pub fn apply_platform(&mut self, platform: &[(String, String)]) {
        for (k, v) in platform {
            if PATH_VARS.contains(&k.as_str()) {
                self.prepend_path(k, v);
            } else {
                self.set(k, v);
            }
        }
    }

    /// Applies the files of one env directory, given as `(file name,
    /// content)`. Files are applied in name order; `NAME.delim` sets the
    /// separator for `NAME` in this directory. Returns the names of files
    /// that were ignored (unknown suffix).
    pub fn apply_dir(&mut self, files: &[(String, String)]) -> Vec<String> {
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let delim = |var: &str| -> Option<&str> {
            let want = format!("{var}.delim");
            files
                .iter()
                .find(|(n, _)| *n == want)
                .map(|(_, c)| c.as_str())
        };
        let mut ignored = Vec::new();
        for (file, content) in sorted {
            let (var, suffix) = match file.split_once('.') {
                Some((v, s)) => (v, s),
                None => (file.as_str(), ""),
            };
            if validate_name(var).is_err() {
                ignored.push(file.clone());
                continue;
            }
            let action = match suffix {
                "" | "override" => Action::Override,
                "default" => Action::Default,
                "prepend" => Action::Prepend,
                "append" => Action::Append,
                "delim" => continue,
                _ => {
                    ignored.push(file.clone());
                    continue;
                }
            };
            let d = delim(var);
            self.apply(var, action, content, d);
        }
        ignored
    }

    /// `KEY=VALUE` strings in order.
    pub fn to_list(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.vars
    }
}

/// Which variables a well-known layer subdirectory feeds.
pub fn root_dir_vars(subdir: &str, launch: bool) -> &'static [&'static str] {
    match (subdir, launch) {
        ("bin", _) => &["PATH"],
        ("lib", false) => &["LD_LIBRARY_PATH", "LIBRARY_PATH"],
        ("lib", true) => &["LD_LIBRARY_PATH"],
        ("include", false) => &["CPATH"],
        ("pkgconfig", false) => &["PKG_CONFIG_PATH"],
        _ => &[],
    }
}

/// The well-known subdirectories, in the order they are applied.
pub const ROOT_DIRS: &[&str] = &["bin", "lib", "include", "pkgconfig"];

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn all_suffixes() {
        let mut e = Env::from_list(&["O=old", "D=keep", "P=mid", "A=mid", "E="]);
        let ignored = e.apply_dir(&files(&[
            ("O", "new"),
            ("D.default", "nope"),
            ("E.default", "filled"),
            ("U.default", "unset-filled"),
            ("P.prepend", "front"),
            ("P.delim", ":"),
            ("A.append", "back"),
            ("X.override", "x"),
            ("Y.bogus", "y"),
            ("A.B.append", "z"),
        ]));
        assert_eq!(e.get("O"), Some("new"));
        assert_eq!(e.get("D"), Some("keep"));
        assert_eq!(e.get("E"), Some("filled"));
        assert_eq!(e.get("U"), Some("unset-filled"));
        assert_eq!(e.get("P"), Some("front:mid"));
        // No .delim for A: joined with nothing, as the lifecycle does.
        assert_eq!(e.get("A"), Some("midback"));
        assert_eq!(e.get("X"), Some("x"));
        assert_eq!(e.get("Y"), None);
        assert_eq!(ignored, vec!["A.B.append", "Y.bogus"]);
    }

    #[test]
    fn prepend_append_on_empty_adds_no_delim() {
        let mut e = Env::new();
        e.apply_dir(&files(&[
            ("P.prepend", "a"),
            ("P.delim", ","),
            ("Q.append", "b"),
            ("Q.delim", ","),
        ]));
        assert_eq!(e.get("P"), Some("a"));
        assert_eq!(e.get("Q"), Some("b"));
        e.apply_dir(&files(&[
            ("P.prepend", "c"),
            ("Q.append", "d"),
            ("Q.delim", ";"),
        ]));
        assert_eq!(
            e.get("P"),
            Some("ca"),
            "the delim of an earlier dir does not carry over"
        );
        assert_eq!(e.get("Q"), Some("b;d"));
    }

    #[test]
    fn values_are_byte_exact() {
        let mut e = Env::new();
        e.apply_dir(&files(&[("N", "line\n")]));
        assert_eq!(e.get("N"), Some("line\n"));
    }

    #[test]
    fn platform_env_and_filter() {
        let base = Env::from_list(&["PATH=/bin", "FOO=bar", "HOME=/root", "junk"]);
        let mut e = base.filtered_for_build();
        assert_eq!(e.to_list(), vec!["PATH=/bin", "HOME=/root"]);
        e.apply_platform(&[("PATH".into(), "/opt".into()), ("FOO".into(), "x".into())]);
        assert_eq!(e.get("PATH"), Some("/opt:/bin"));
        assert_eq!(e.get("FOO"), Some("x"));
        e.prepend_path("LD_LIBRARY_PATH", "/l");
        assert_eq!(e.get("LD_LIBRARY_PATH"), Some("/l"));
        assert!(validate_name("A=B").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn root_dirs() {
        assert_eq!(
            root_dir_vars("lib", false),
            &["LD_LIBRARY_PATH", "LIBRARY_PATH"]
        );
        assert_eq!(root_dir_vars("lib", true), &["LD_LIBRARY_PATH"]);
        assert!(root_dir_vars("include", true).is_empty());
        assert!(root_dir_vars("share", false).is_empty());
    }
}
