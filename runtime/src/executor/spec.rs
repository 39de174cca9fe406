//! The OCI runtime config for one run, generated with `oci-spec`.
//!
//! We start from BuildKit/containerd's defaults rather than `runc spec`'s:
//! containerd's default capability set with `noNewPrivileges: false` (so
//! chown, mknod and setuid helpers work in RUN steps), a raised open-file
//! limit, no AppArmor profile (this kernel has none, and runc fails when one
//! is set), and a cgroups path grouping our containers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder,
    LinuxSyscallBuilder, Mount as OciMount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::user::ResolvedUser;
use super::{NetworkMode, SecurityMode};

/// Inputs to [`build`], already validated and resolved.
pub(crate) struct SpecInput<'a> {
    pub rootfs: &'a Path,
    pub readonly_rootfs: bool,
    pub args: &'a [String],
    pub env: Vec<String>,
    pub cwd: &'a Path,
    pub user: &'a ResolvedUser,
    pub hostname: &'a str,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// Caller mounts plus hosts/resolv.conf, after the standard ones.
    pub extra_mounts: Vec<OciMount>,
    pub cgroups_path: Option<String>,
    pub seccomp: bool,
    pub nofile: u64,
    /// Host devices to create in the container (insecure mode).
    pub devices: Vec<LinuxDevice>,
    /// Capabilities this process may hand out (its bounding set, bit N =
    /// capability N); a container cannot get more, so others are dropped.
    pub cap_mask: u64,
}

/// containerd's default capabilities (`oci.defaultUnixCaps` plus the ones
/// BuildKit relies on).
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability up to CAP_CHECKPOINT_RESTORE (40), for insecure runs.
const ALL_CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's default masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls refused (EPERM) by the default seccomp profile: kernel module,
/// reboot, clock, swap, keyring, accounting and other host-wide knobs that
/// a build step never needs. Everything else is allowed; capabilities remain
/// the primary barrier. This is a deny list, not Docker's full allow list.
const SECCOMP_DENY: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<OciMount, OciSpecError> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(strings(options))
        .build()
}

/// The standard filesystem set: /proc, /dev (tmpfs, runc adds the default
/// device nodes), /dev/pts, /dev/shm, /dev/mqueue, /sys (read-only unless
/// insecure) and the cgroup hierarchy.
fn standard_mounts(security: SecurityMode) -> Result<Vec<OciMount>, OciSpecError> {
    let ro = if security == SecurityMode::Insecure {
        "rw"
    } else {
        "ro"
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ])
}

/// The host's device nodes under `/dev` (skipping the pty, shm and mqueue
/// mounts and the console), as privileged containers get them.
pub(crate) fn host_devices() -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs_err::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skip = ["/dev/pts", "/dev/shm", "/dev/mqueue"]
                    .iter()
                    .any(|p| path == Path::new(p));
                if !skip && depth < 3 {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let rdev = meta.rdev();
            let dev = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(i64::from(libc::major(rdev)))
                .minor(i64::from(libc::minor(rdev)))
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build();
            if let Ok(d) = dev {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// This process' capability bounding set (all bits when unreadable).
pub(crate) fn bounding_set() -> u64 {
    fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The default seccomp profile (see [`SECCOMP_DENY`]).
pub(crate) fn default_seccomp() -> Result<LinuxSeccomp, OciSpecError> {
    use oci_spec::runtime::Arch;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
        ])
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(strings(SECCOMP_DENY))
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .build()?,
        ])
        .build()
}

/// Build the runtime config.
pub(crate) fn build(input: SpecInput<'_>) -> Result<Spec, OciSpecError> {
    // ALL_CAP_NAMES is in capability-number order.
    let allowed: HashSet<Capability> = ALL_CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| input.cap_mask & (1u64 << i) != 0)
        .filter_map(|(_, n)| serde_json::from_value(serde_json::Value::from(*n)).ok())
        .collect();
    let caps: HashSet<Capability> = match input.security {
        SecurityMode::Sandbox => DEFAULT_CAPS
            .iter()
            .copied()
            .filter(|c| allowed.contains(c))
            .collect(),
        SecurityMode::Insecure => allowed,
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(input.args.to_vec())
        .env(input.env)
        .cwd(input.cwd.to_path_buf())
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(input.nofile)
                .soft(input.nofile)
                .build()?,
        ])
        .no_new_privileges(false)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if input.network == NetworkMode::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()?;

    let device_rule = LinuxDeviceCgroupBuilder::default()
        .allow(input.security == SecurityMode::Insecure)
        .access("rwm")
        .build()?;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![device_rule])
        .build()?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .rootfs_propagation("rprivate");
    if !input.devices.is_empty() {
        linux = linux.devices(input.devices);
    }
    if let Some(p) = input.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(p));
    }
    if input.security == SecurityMode::Insecure {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(strings(MASKED_PATHS))
            .readonly_paths(strings(READONLY_PATHS));
        if input.seccomp {
            linux = linux.seccomp(default_seccomp()?);
        }
    }

    let mut mounts = standard_mounts(input.security)?;
    mounts.extend(input.extra_mounts);

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs.to_path_buf())
                .readonly(input.readonly_rootfs)
                .build()?,
        )
        .hostname(input.hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux.build()?)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(user: &'a ResolvedUser, args: &'a [String]) -> SpecInput<'a> {
        SpecInput {
            rootfs: Path::new("/b/rootfs"),
            readonly_rootfs: false,
            args,
            env: vec!["PATH=/bin".into()],
            cwd: Path::new("/"),
            user,
            hostname: "h",
            network: NetworkMode::Host,
            security: SecurityMode::Sandbox,
            extra_mounts: Vec::new(),
            cgroups_path: Some("/kiln/x".into()),
            seccomp: true,
            nofile: 1 << 20,
            devices: Vec::new(),
            cap_mask: u64::MAX,
        }
    }

    #[test]
    fn sandbox_spec_has_buildkit_defaults() {
        let user = ResolvedUser {
            uid: 1,
            gid: 2,
            additional_gids: vec![3],
            home: None,
        };
        let args = vec!["true".to_string()];
        let spec = build(input(&user, &args)).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let p = &json["process"];
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(p["user"]["additionalGids"][0], 3);
        assert_eq!(p["rlimits"][0]["type"], "RLIMIT_NOFILE");
        let caps = p["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPS.len());
        assert!(caps.iter().any(|c| c == "CAP_MKNOD"));
        assert!(p.get("apparmorProfile").is_none());
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "{ns:?}");
        assert!(json["linux"]["seccomp"].is_object());
        assert!(json["linux"]["maskedPaths"].as_array().unwrap().len() > 5);
    }

    #[test]
    fn insecure_and_network_none() {
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: None,
        };
        let args = vec!["true".to_string()];
        let mut i = input(&user, &args);
        i.security = SecurityMode::Insecure;
        i.network = NetworkMode::None;
        let json = serde_json::to_value(build(i).unwrap()).unwrap();
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            ALL_CAP_NAMES.len()
        );
        assert!(json["linux"].get("seccomp").is_none());
        assert!(
            json["linux"]
                .get("maskedPaths")
                .is_none_or(|m| m.as_array().is_some_and(Vec::is_empty))
        );
        assert!(
            json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
    }
}
