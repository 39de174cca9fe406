//! Mount stubs: the empty files and dirs a runtime creates in the rootfs for
//! mount destinations that the image lacks (`/run/secrets/x`, `/etc/hosts`,
//! a cache dir...). Left alone they would end up in every layer, so before
//! the run we record which destination paths are missing, and afterwards we
//! remove those that are still empty, deepest first, including the missing
//! parents we recorded (BuildKit's recursive `MountStubsCleaner`).

use std::path::{Path, PathBuf};

use super::paths::resolve_in_root;

/// Missing paths recorded before a run.
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    /// Host paths inside the rootfs, shallowest first.
    missing: Vec<PathBuf>,
}

impl MountStubs {
    /// Record every prefix of each destination that does not exist yet.
    pub(crate) fn record<'a>(root: &Path, dests: impl IntoIterator<Item = &'a Path>) -> Self {
        let mut missing: Vec<PathBuf> = Vec::new();
        for dest in dests {
            let mut prefix = PathBuf::from("/");
            for c in dest.components().skip(1) {
                prefix.push(c);
                let host = resolve_in_root(root, &prefix);
                if fs_err::symlink_metadata(&host).is_err() && !missing.contains(&host) {
                    missing.push(host);
                }
            }
        }
        Self { missing }
    }

    /// Remove the recorded paths that are now empty files or empty dirs.
    /// Returns the paths removed. Errors are ignored: a stub we cannot remove
    /// is junk in a layer, not a failed build.
    pub(crate) fn clean(self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        // Deeper paths were recorded after their parents.
        for p in self.missing.into_iter().rev() {
            let Ok(meta) = fs_err::symlink_metadata(&p) else {
                continue;
            };
            let ok = if meta.is_dir() {
                fs_err::remove_dir(&p).is_ok()
            } else if meta.is_file() && meta.len() == 0 {
                fs_err::remove_file(&p).is_ok()
            } else {
                false
            };
            if ok {
                removed.push(p);
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_empty_stubs_it_recorded() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs_err::create_dir_all(root.join("run")).unwrap();
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::write(root.join("etc/hosts"), "x").unwrap();
        let stubs = MountStubs::record(
            root,
            [
                Path::new("/run/secrets/a"),
                Path::new("/etc/hosts"),
                Path::new("/mnt/ctx"),
                Path::new("/data"),
            ],
        );
        // What a runtime would create:
        fs_err::create_dir_all(root.join("run/secrets")).unwrap();
        fs_err::write(root.join("run/secrets/a"), "").unwrap();
        fs_err::create_dir_all(root.join("mnt/ctx")).unwrap();
        // A process wrote into /data: keep it.
        fs_err::create_dir_all(root.join("data")).unwrap();
        fs_err::write(root.join("data/f"), "keep").unwrap();
        let removed = stubs.clean();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(root.join("run").is_dir());
        assert!(!root.join("run/secrets").exists());
        assert!(!root.join("mnt").exists());
        assert!(root.join("etc/hosts").exists());
        assert!(root.join("data/f").exists());
    }
}
