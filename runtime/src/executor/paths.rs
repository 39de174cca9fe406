//! Resolving container paths inside a rootfs on the host without letting
//! symlinks in the image escape it (an image may ship
//! `/etc/passwd -> /host/secret`).

use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// The host path that `path` (absolute or relative to `/` in the container)
/// names inside `root`, following symlinks as if `root` were `/`. Components
/// that do not exist are appended as they are. The result is always under
/// `root`.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    // Pending components, in reverse so we can pop from the end.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut current: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0usize;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&current);
        candidate.push(&part);
        match fs_err::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && links < MAX_SYMLINKS => {
                links += 1;
                match fs_err::read_link(&candidate) {
                    Ok(target) => {
                        if target.is_absolute() {
                            current.clear();
                        }
                        push_components(&mut pending, &target);
                    }
                    Err(_) => current.push(part),
                }
            }
            _ => current.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(current);
    out
}

/// Push the normal and `..` components of `path` onto `pending` so that the
/// first component is popped first.
fn push_components(pending: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    pending.extend(parts.into_iter().rev());
}

/// `dest` as a clean absolute container path, or `None` when it is not
/// absolute or climbs above `/`.
pub(crate) fn clean_container_path(dest: &Path) -> Option<PathBuf> {
    if !dest.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs_err::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/outside/passwd", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("etc", root.join("e")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/passwd")),
            root.join("outside/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/up/x")),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/e/group")),
            root.join("etc/group")
        );
        assert_eq!(resolve_in_root(root, Path::new("/../../a")), root.join("a"));
    }

    #[test]
    fn symlink_loops_terminate() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", d.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("b")).unwrap();
        let p = resolve_in_root(d.path(), Path::new("/a/x"));
        assert!(p.starts_with(d.path()));
    }

    #[test]
    fn container_paths_are_cleaned() {
        assert_eq!(
            clean_container_path(Path::new("/a/./b/../c")),
            Some(PathBuf::from("/a/c"))
        );
        assert_eq!(clean_container_path(Path::new("a")), None);
        assert_eq!(clean_container_path(Path::new("/..")), None);
    }
}
