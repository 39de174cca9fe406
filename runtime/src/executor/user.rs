//! Resolving `USER` strings against the rootfs' `/etc/passwd` and
//! `/etc/group`, the way containerd's `WithUser` does.

use std::path::Path;

use super::paths::resolve_in_root;
use super::{Error, Result};

/// A user resolved to numeric ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership plus the request).
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, if the user is listed.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

// /etc/passwd of a real image is small; refuse to slurp something huge.
const MAX_DB_SIZE: u64 = 16 * 1024 * 1024;

fn read_db(root: &Path, file: &str) -> String {
    let path = resolve_in_root(root, Path::new(file));
    match fs_err::metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= MAX_DB_SIZE => {
            let bytes = fs_err::read(&path).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) inside
/// the rootfs at `root`. Numeric ids need no database entry; names do.
pub fn resolve_user(root: &Path, spec: &str, extra_gids: &[u32]) -> Result<ResolvedUser> {
    let spec = spec.trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = parse_passwd(&read_db(root, "/etc/passwd"));

    let entry =
        match user_part.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|e| e.uid == uid),
            Err(_) => Some(passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
                Error::UnknownUser {
                    kind: "user",
                    name: user_part.to_string(),
                    file: "/etc/passwd",
                }
            })?),
        };
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map(|e| e.uid).unwrap_or(0),
    };

    let mut groups = None;
    let gid = match group_part.filter(|g| !g.is_empty()) {
        None => entry.map(|e| e.gid).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let all = parse_group(&read_db(root, "/etc/group"));
                let gid = all
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| Error::UnknownUser {
                        kind: "group",
                        name: g.to_string(),
                        file: "/etc/group",
                    })?;
                groups = Some(all);
                gid
            }
        },
    };

    let mut additional = Vec::new();
    if let Some(e) = entry {
        let all = groups.unwrap_or_else(|| parse_group(&read_db(root, "/etc/group")));
        for g in &all {
            if g.members.contains(&e.name) && g.gid != gid {
                additional.push(g.gid);
            }
        }
    }
    for g in extra_gids {
        if *g != gid {
            additional.push(*g);
        }
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: entry.map(|e| e.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(d.path().join("etc")).unwrap();
        fs_err::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1001:Bob:/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs_err::write(
            d.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:bob,alice\nbob:x:1001:\nwheel:x:10:alice\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn names_and_numbers() {
        let d = root();
        let r = resolve_user(d.path(), "", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        let r = resolve_user(d.path(), "bob", &[]).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (1000, 1001, vec![50])
        );
        assert_eq!(r.home.as_deref(), Some("/home/bob"));
        let r = resolve_user(d.path(), "bob:wheel", &[7]).unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (1000, 10, vec![7, 50]));
        let r = resolve_user(d.path(), "1000", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        let r = resolve_user(d.path(), "4242:4343", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 4343));
        let r = resolve_user(d.path(), "4242", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 0));
    }

    #[test]
    fn unknown_names_fail() {
        let d = root();
        let e = resolve_user(d.path(), "nobody", &[]).unwrap_err();
        assert!(e.to_string().contains("unknown user `nobody`"), "{e}");
        let e = resolve_user(d.path(), "bob:nogroup", &[]).unwrap_err();
        assert!(e.to_string().contains("unknown group `nogroup`"), "{e}");
    }
}
