//! Mounting overlay rootfs stacks on the host, from the engine process.
//!
//! The new mount API (`fsopen` + one `fsconfig("lowerdir+")` per layer) has
//! no option-string limit, so deep stacks (up to overlay's 500 layers) mount
//! with absolute paths and without any process-wide `chdir`. On kernels
//! before 6.8 `lowerdir+` is refused and we fall back to mount(2) with one
//! option string, which the kernel cuts at one page: that case fails with a
//! clear error instead of the kernel's misleading ENOENT.
//!
//! Options are always `index=off,metacopy=off,redirect_dir=off`, so a host
//! whose module defaults differ cannot produce upper dirs that the layer
//! differ would misread.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Error, OverlaySpec, Result};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const LEGACY_OPTION_LIMIT: usize = 4095;

fn cstr(p: &[u8]) -> std::io::Result<CString> {
    CString::new(p).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// An owned fd closed on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it exactly once.
        unsafe {
            libc::close(self.0);
        }
    }
}

impl Fd {
    /// Messages the kernel queued on an fs context ("e overlayfs: ...").
    fn kernel_log(&self) -> String {
        let mut lines = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..32 {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            lines.push(
                String::from_utf8_lossy(&buf[..n as usize])
                    .trim()
                    .to_string(),
            );
        }
        lines.join("; ")
    }
}

fn set_string(fd: &Fd, key: &CStr, value: &CStr) -> std::io::Result<()> {
    // SAFETY: fd is an fs context; key and value are NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.0,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

enum NewApi {
    Mounted,
    /// The kernel lacks fsopen or `lowerdir+`: try legacy mount(2).
    Unsupported,
}

fn mount_new_api(spec: &OverlaySpec, target: &Path) -> Result<NewApi> {
    let mount_err = |source: std::io::Error, kernel_log: String| Error::Mount {
        what: "overlay",
        target: target.to_path_buf(),
        kernel_log,
        source,
    };
    // SAFETY: plain syscall with a static NUL-terminated name.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(NewApi::Unsupported);
        }
        return Err(mount_err(e, String::new()));
    }
    let fs = Fd(fd as libc::c_int);
    for (i, dir) in spec.lowerdirs.iter().enumerate() {
        let value = cstr(dir.as_os_str().as_bytes()).map_err(|e| mount_err(e, String::new()))?;
        if let Err(e) = set_string(&fs, c"lowerdir+", &value) {
            let log = fs.kernel_log();
            if i == 0 && e.raw_os_error() == Some(libc::EINVAL) && !log.contains("lowerdir+") {
                // Old kernels reject the unknown key itself.
                return Ok(NewApi::Unsupported);
            }
            return Err(mount_err(e, format!("{}: {log}", dir.display())));
        }
    }
    let mut opts: Vec<(&CStr, CString)> = Vec::new();
    if let Some(up) = &spec.upper {
        let u =
            cstr(up.upperdir.as_os_str().as_bytes()).map_err(|e| mount_err(e, String::new()))?;
        let w = cstr(up.workdir.as_os_str().as_bytes()).map_err(|e| mount_err(e, String::new()))?;
        opts.push((c"upperdir", u));
        opts.push((c"workdir", w));
    }
    opts.push((c"index", c"off".to_owned()));
    opts.push((c"metacopy", c"off".to_owned()));
    opts.push((c"redirect_dir", c"off".to_owned()));
    for (k, v) in &opts {
        set_string(&fs, k, v).map_err(|e| mount_err(e, fs.kernel_log()))?;
    }
    // SAFETY: fs is an fs context; the other arguments are unused.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.0,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(mount_err(e, fs.kernel_log()));
    }
    // SAFETY: fs is a created fs context.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.0, FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        let e = std::io::Error::last_os_error();
        return Err(mount_err(e, fs.kernel_log()));
    }
    let mnt = Fd(m as libc::c_int);
    let t = cstr(target.as_os_str().as_bytes()).map_err(|e| mount_err(e, String::new()))?;
    // SAFETY: mnt is a detached mount fd, t a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.0,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(mount_err(std::io::Error::last_os_error(), String::new()));
    }
    // `mnt` and `fs` close here: a still-open mount fd would make the later
    // umount fail with EBUSY.
    Ok(NewApi::Mounted)
}

fn legacy_options(spec: &OverlaySpec, target: &Path) -> Result<String> {
    let check = |p: &Path| -> Result<String> {
        let s = p.to_str().unwrap_or("\0");
        if s.contains([',', ':', '\0']) {
            return Err(Error::UnsafeOverlayPath {
                path: p.to_path_buf(),
            });
        }
        Ok(s.to_string())
    };
    let lowers = spec
        .lowerdirs
        .iter()
        .map(|p| check(p))
        .collect::<Result<Vec<_>>>()?;
    let mut opts = format!("lowerdir={}", lowers.join(":"));
    if let Some(up) = &spec.upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            check(&up.upperdir)?,
            check(&up.workdir)?
        ));
    }
    opts.push_str(",index=off,metacopy=off,redirect_dir=off");
    if opts.len() > LEGACY_OPTION_LIMIT {
        return Err(Error::OverlayTooLong {
            target: target.to_path_buf(),
            layers: spec.lowerdirs.len(),
            len: opts.len(),
        });
    }
    Ok(opts)
}

fn mount_legacy(spec: &OverlaySpec, target: &Path) -> Result<()> {
    let opts = legacy_options(spec, target)?;
    let mount_err = |source| Error::Mount {
        what: "overlay",
        target: target.to_path_buf(),
        kernel_log: String::new(),
        source,
    };
    let t = cstr(target.as_os_str().as_bytes()).map_err(mount_err)?;
    let o = cstr(opts.as_bytes()).map_err(mount_err)?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            0,
            o.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn bind_readonly(source: &Path, target: &Path) -> Result<()> {
    let mount_err = |source| Error::Mount {
        what: "read-only bind",
        target: target.to_path_buf(),
        kernel_log: String::new(),
        source,
    };
    let s = cstr(source.as_os_str().as_bytes()).map_err(mount_err)?;
    let t = cstr(target.as_os_str().as_bytes()).map_err(mount_err)?;
    // SAFETY: NUL-terminated paths that outlive the calls.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let _ = unmount(target);
        return Err(mount_err(e));
    }
    Ok(())
}

/// Mount `spec` at the existing directory `target`.
///
/// A read-only spec with a single lower dir becomes a read-only bind mount
/// (overlay needs two lowers when it has no upper).
pub fn mount_overlay(spec: &OverlaySpec, target: &Path) -> Result<()> {
    if spec.lowerdirs.is_empty() {
        return Err(Error::InvalidRequest {
            problem: format!("overlay for {} has no lower dirs", target.display()),
        });
    }
    if spec.upper.is_none() && spec.lowerdirs.len() == 1 {
        return bind_readonly(&spec.lowerdirs[0], target);
    }
    match mount_new_api(spec, target)? {
        NewApi::Mounted => Ok(()),
        NewApi::Unsupported => mount_legacy(spec, target),
    }
}

/// Unmount `target`, retrying briefly while it is busy (a runtime that just
/// exited may still hold it) and detaching lazily as the last resort.
pub fn unmount(target: &Path) -> Result<()> {
    let t = cstr(target.as_os_str().as_bytes()).map_err(|source| Error::Unmount {
        target: target.to_path_buf(),
        source,
    })?;
    for attempt in 0..50 {
        // SAFETY: NUL-terminated path.
        let r = unsafe { libc::umount2(t.as_ptr(), 0) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) if attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Some(libc::EBUSY) => {
                // SAFETY: NUL-terminated path.
                if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } == 0 {
                    return Ok(());
                }
                return Err(Error::Unmount {
                    target: target.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
            _ => {
                return Err(Error::Unmount {
                    target: target.to_path_buf(),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point (listed in this process' mountinfo).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs_err::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp).as_slice() == want)
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn legacy_option_string_is_bounded() {
        let spec = OverlaySpec {
            lowerdirs: (0..60)
                .map(|i| PathBuf::from(format!("/var/lib/kiln/snapshots/{i:064}/fs")))
                .collect(),
            upper: None,
        };
        let e = legacy_options(&spec, Path::new("/t")).unwrap_err();
        assert!(e.to_string().contains("exceeds the 4 KiB"), "{e}");
        let bad = OverlaySpec {
            lowerdirs: vec![PathBuf::from("/a:b")],
            upper: None,
        };
        assert!(legacy_options(&bad, Path::new("/t")).is_err());
    }

    /// Both mount paths (new API and the legacy fallback) give the same
    /// merged view. Needs root; skipped otherwise.
    #[test]
    fn new_api_and_legacy_mounts_agree() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (l1, l2) = (d.path().join("l1"), d.path().join("l2"));
        for (dir, name) in [(&l1, "top"), (&l2, "bottom")] {
            fs_err::create_dir_all(dir).unwrap();
            fs_err::write(dir.join(name), name).unwrap();
            fs_err::write(dir.join("shared"), name).unwrap();
        }
        for (i, legacy) in [false, true].into_iter().enumerate() {
            let up = d.path().join(format!("up{i}"));
            let work = d.path().join(format!("work{i}"));
            let target = d.path().join(format!("m{i}"));
            for p in [&up, &work, &target] {
                fs_err::create_dir_all(p).unwrap();
            }
            let spec = OverlaySpec {
                lowerdirs: vec![l1.clone(), l2.clone()],
                upper: Some(super::super::UpperDir {
                    upperdir: up.clone(),
                    workdir: work,
                }),
            };
            if legacy {
                mount_legacy(&spec, &target).unwrap();
            } else {
                mount_overlay(&spec, &target).unwrap();
            }
            assert!(is_mount_point(&target));
            let shared = fs_err::read_to_string(target.join("shared"));
            fs_err::write(target.join("new"), "x").unwrap();
            unmount(&target).unwrap();
            assert_eq!(shared.unwrap(), "top");
            assert!(up.join("new").exists());
            assert!(!is_mount_point(&target));
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), b"/plain");
    }
}
