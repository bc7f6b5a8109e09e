//! PID 1 plumbing: the API filesystems and our own `switch_root`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::mount::{MountFlags, mount, mount_move};

use crate::Fatal;

/// Where the new root is assembled inside the initramfs.
pub const SYSROOT: &str = "/sysroot";

/// /proc, /sys, /dev (devtmpfs) and /run (tmpfs).
pub fn mount_api_filesystems() -> Result<(), Fatal> {
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for (fs, dir, flags, data) in [
        ("proc", "/proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", nosuid_nodev_noexec, None),
        ("devtmpfs", "/dev", MountFlags::NOSUID, Some(c"mode=0755")),
        (
            "tmpfs",
            "/run",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=0755"),
        ),
    ] {
        std::fs::create_dir_all(dir).map_err(|e| Fatal(format!("create {dir}: {e}")))?;
        match mount(fs, dir, fs, flags, data) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => return Err(Fatal(format!("mount {fs} on {dir}: {e}"))),
        }
    }
    Ok(())
}

/// The init to exec must exist in the new root (checked before the switch, while an error
/// can still be reported with context). A symlink counts: it resolves after the chroot.
pub fn check_init(sysroot: &Path, init: &Path) -> Result<(), Fatal> {
    let rel = init.strip_prefix("/").unwrap_or(init);
    if std::fs::symlink_metadata(sysroot.join(rel)).is_err() {
        return Err(Fatal(format!(
            "{} not found in the new root (set init=)",
            init.display()
        )));
    }
    Ok(())
}

/// Move /dev /proc /sys /run into the new root, free the initramfs, make the new root `/`,
/// chroot into it and exec `init`. Returns only on failure.
pub fn switch_root(sysroot: &Path, init: &Path, slot: &str) -> Result<(), Fatal> {
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        let target = sysroot.join(&dir[1..]);
        std::fs::create_dir_all(&target)
            .map_err(|e| Fatal(format!("create {}: {e}", target.display())))?;
        mount_move(dir, &target)
            .map_err(|e| Fatal(format!("move {dir} to {}: {e}", target.display())))?;
    }
    std::env::set_current_dir(sysroot)
        .map_err(|e| Fatal(format!("chdir {}: {e}", sysroot.display())))?;
    free_initramfs(sysroot);
    mount_move(".", "/").map_err(|e| Fatal(format!("move {} to /: {e}", sysroot.display())))?;
    rustix::process::chroot(".").map_err(|e| Fatal(format!("chroot: {e}")))?;
    std::env::set_current_dir("/").map_err(|e| Fatal(format!("chdir /: {e}")))?;
    // Not through clb-command: exec replaces this process with init (PID 1 stays PID 1), so
    // there is no child to wait for or output to collect; it returns only when exec failed.
    let err = std::process::Command::new(init)
        .env("CLB_SLOT", slot)
        .exec();
    Err(Fatal(format!("exec {}: {err}", init.display())))
}

/// Delete the initramfs' files (they stay in RAM otherwise). Only entries on the root
/// filesystem itself are removed: directories on another device (the new root, anything
/// still mounted) are left alone. Failures only cost memory, so they are ignored.
fn free_initramfs(sysroot: &Path) {
    let Ok(root) = std::fs::symlink_metadata("/") else {
        return;
    };
    // Only an initramfs (rootfs is ramfs or tmpfs) is ever emptied.
    if !matches!(
        rustix::fs::statfs("/").map(|s| s.f_type),
        Ok(0x8584_58f6) | Ok(0x0102_1994)
    ) {
        return;
    }
    remove_same_dev(Path::new("/"), root.dev(), sysroot);
}

fn remove_same_dev(dir: &Path, dev: u64, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        if p == keep {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            remove_same_dev(&p, dev, keep);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}
