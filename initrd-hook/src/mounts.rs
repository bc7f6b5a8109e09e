//! Mounting the parts of the new root: the SquashFS layers stacked with overlayfs, COS_OEM,
//! and the persistent paths from COS_PERSISTENT. Slot boots (`assemble`) and netboots
//! (`netboot`) share all of it; only where the layer files come from differs.
//!
//! Private mounts live under `/run/initramfs/clb/` and travel with `/run` into the booted
//! system.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clb_disk::DiskError;
use rustix::mount::{MountFlags, mount};

use crate::cmdline::Config;
use crate::{Fatal, loopdev, say};

/// Private mounts of the hook.
pub const PRIVATE_DIR: &str = "/run/initramfs/clb";

/// Loop-mount the SquashFS `layers` (bottom first) under `/run/initramfs/clb/layers/<n>` and
/// stack them with overlayfs (tmpfs upper, `clb.overlay` size) on `sysroot`.
pub(crate) fn stack_layers(cfg: &Config, layers: &[PathBuf], sysroot: &Path) -> Result<(), Fatal> {
    let private = PathBuf::from(PRIVATE_DIR);
    let layers_dir = private.join("layers");
    let mut lower = Vec::with_capacity(layers.len());
    for (i, file) in layers.iter().enumerate() {
        let dir = layers_dir.join(i.to_string());
        mkdir(&dir)?;
        let dev = loopdev::attach_read_only(file).map_err(Fatal)?;
        mount(&dev.path, &dir, "squashfs", MountFlags::RDONLY, None).map_err(|e| {
            Fatal(format!(
                "mount layer {} ({}): {e}",
                file.display(),
                dev.path.display()
            ))
        })?;
        // The mount holds the device now; closing our handle lets autoclear free it later.
        drop(dev);
        lower.push(dir);
    }

    // overlayfs: read-only layers (top first in lowerdir) + tmpfs upper.
    let rw = private.join("overlay");
    mkdir(&rw)?;
    let size = format!("size={},mode=0755", cfg.overlay_size);
    mount(
        "tmpfs",
        &rw,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c_str(&size)?.as_c_str()),
    )
    .map_err(|e| Fatal(format!("mount tmpfs ({size}) for the overlay: {e}")))?;
    mkdir(&rw.join("upper"))?;
    mkdir(&rw.join("work"))?;
    let lowerdir: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        rw.join("upper").display(),
        rw.join("work").display()
    );
    mkdir(sysroot)?;
    mount(
        "overlay",
        sysroot,
        "overlay",
        MountFlags::empty(),
        Some(c_str(&opts)?.as_c_str()),
    )
    .map_err(|e| Fatal(format!("mount overlay on {}: {e}", sysroot.display())))?;
    Ok(())
}

/// `COS_OEM` at `/oem` and the persistent paths from `COS_PERSISTENT`, when present.
pub(crate) fn mount_oem_and_persistent(cfg: &Config, sysroot: &Path) -> Result<(), Fatal> {
    let private = PathBuf::from(PRIVATE_DIR);
    // COS_OEM at /oem.
    if let Some(dev) = find_optional(&cfg.oem_label)? {
        let target = sysroot.join("oem");
        mount_device(&dev, &target, MountFlags::empty(), &cfg.oem_label)?;
    }

    // Persistent paths from COS_PERSISTENT.
    if let Some(dev) = find_optional(&cfg.persistent_label)? {
        let pdir = private.join("persistent");
        mount_device(&dev, &pdir, MountFlags::empty(), &cfg.persistent_label)?;
        bind_persistent_paths(&pdir, sysroot, &cfg.persistent_paths, cfg.debug)?;
    } else if !cfg.persistent_paths.is_empty() {
        say(format_args!(
            "no {} partition: persistent paths are ephemeral this boot",
            cfg.persistent_label
        ));
    }
    Ok(())
}

/// Wait up to `timeout` for exactly one block device labelled `label`.
pub(crate) fn wait_for_label(label: &str, timeout: Duration) -> Result<PathBuf, Fatal> {
    let start = Instant::now();
    loop {
        match clb_disk::host_partition_by_label(label) {
            Ok(dev) => return Ok(dev),
            Err(DiskError::LabelNotFound { .. }) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(DiskError::LabelNotFound { .. }) => {
                return Err(Fatal(format!(
                    "no partition labelled {label} after {} s (block devices: {}); \
                     set clb.state_label= or clb.timeout=",
                    timeout.as_secs(),
                    block_devices()
                )));
            }
            Err(e) => return Err(Fatal(e.to_string())),
        }
    }
}

/// The device labelled `label` if there is one (no waiting: it is looked for once the state
/// partition has appeared). Two are still an error.
pub(crate) fn find_optional(label: &str) -> Result<Option<PathBuf>, Fatal> {
    match clb_disk::host_partition_by_label(label) {
        Ok(dev) => Ok(Some(dev)),
        Err(DiskError::LabelNotFound { .. }) => Ok(None),
        Err(e) => Err(Fatal(e.to_string())),
    }
}

fn block_devices() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "none (missing storage driver module?)".into()
    } else {
        names.join(" ")
    }
}

/// Mount a partition found by label, with the filesystem type its superblock names.
pub(crate) fn mount_device(
    dev: &Path,
    target: &Path,
    flags: MountFlags,
    label: &str,
) -> Result<(), Fatal> {
    let fs_type = clb_disk::probe_path(dev, 0)
        .ok()
        .flatten()
        .map(|p| p.fs_type)
        .ok_or_else(|| Fatal(format!("{label} ({}): unknown filesystem", dev.display())))?;
    mkdir(target)?;
    mount(dev, target, &fs_type, flags, None).map_err(|e| {
        Fatal(format!(
            "mount {label} ({}, {fs_type}) on {}: {e}",
            dev.display(),
            target.display()
        ))
    })
}

/// `/etc/ssh` → `etc-ssh` (cOS's naming of `.state/<name>.bind`).
pub fn state_name(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').replace('/', "-")
}

/// Bind `<persistent>/.state/<name>.bind` onto each path of the new root. On first boot the
/// directory is created from the image's content (copied into `<name>.bind.new`, then renamed,
/// so a power cut during the copy redoes it).
pub fn bind_persistent_paths(
    persistent: &Path,
    sysroot: &Path,
    paths: &[PathBuf],
    debug: bool,
) -> Result<(), Fatal> {
    let state_dir = persistent.join(".state");
    mkdir(&state_dir)?;
    for path in paths {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let target = sysroot.join(rel);
        let src = prepare_persistent_dir(&state_dir, path, &target)?;
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            // Following it would resolve against the initramfs, not the new root.
            say(format_args!(
                "warning: {} is a symlink in the image, not made persistent",
                path.display()
            ));
            continue;
        }
        mkdir(&target)?;
        rustix::mount::mount_bind(&src, &target).map_err(|e| {
            Fatal(format!(
                "bind {} on {}: {e}",
                src.display(),
                target.display()
            ))
        })?;
        if debug {
            say(format_args!("persistent {}", path.display()));
        }
    }
    Ok(())
}

/// Create `<state_dir>/<name>.bind` on first use, seeded from `image_dir` when it exists.
pub fn prepare_persistent_dir(
    state_dir: &Path,
    path: &Path,
    image_dir: &Path,
) -> Result<PathBuf, Fatal> {
    let name = state_name(path);
    let src = state_dir.join(format!("{name}.bind"));
    if src.is_dir() {
        return Ok(src);
    }
    let tmp = state_dir.join(format!("{name}.bind.new"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Fatal(format!("remove {}: {e}", tmp.display())))?;
    }
    match std::fs::symlink_metadata(image_dir) {
        Ok(m) if m.is_dir() => copy_tree(image_dir, &tmp)?,
        _ => mkdir(&tmp)?,
    }
    std::fs::rename(&tmp, &src).map_err(|e| {
        Fatal(format!(
            "rename {} to {}: {e}",
            tmp.display(),
            src.display()
        ))
    })?;
    clb_ondisk::atomic::sync_dir(state_dir)
        .map_err(|e| Fatal(format!("sync {}: {e}", state_dir.display())))?;
    Ok(src)
}

/// Copy a directory tree keeping modes, owners and symlinks (special files are skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Fatal> {
    let err =
        |what: &str, p: &Path, e: std::io::Error| Fatal(format!("{what} {}: {e}", p.display()));
    let meta = std::fs::symlink_metadata(from).map_err(|e| err("stat", from, e))?;
    std::fs::create_dir(to).map_err(|e| err("create", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| err("read", from, e))? {
        let entry = entry.map_err(|e| err("read", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let m = std::fs::symlink_metadata(&src).map_err(|e| err("stat", &src, e))?;
        let ft = m.file_type();
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| err("readlink", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| err("symlink", &dst, e))?;
            let _ = std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()));
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| err("copy", &src, e))?;
            set_owner_mode(&dst, &m)?;
        }
    }
    set_owner_mode(to, &meta)
}

fn set_owner_mode(p: &Path, m: &std::fs::Metadata) -> Result<(), Fatal> {
    std::os::unix::fs::chown(p, Some(m.uid()), Some(m.gid()))
        .map_err(|e| Fatal(format!("chown {}: {e}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(|e| Fatal(format!("chmod {}: {e}", p.display())))
}

pub(crate) fn mkdir(p: &Path) -> Result<(), Fatal> {
    std::fs::create_dir_all(p).map_err(|e| Fatal(format!("create {}: {e}", p.display())))
}

fn c_str(s: &str) -> Result<std::ffi::CString, Fatal> {
    std::ffi::CString::new(s).map_err(|_| Fatal(format!("NUL in mount options {s:?}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn persistent_dirs_are_seeded_once() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root/etc/ssh");
        std::fs::create_dir_all(image.join("sub")).unwrap();
        std::fs::write(image.join("sshd_config"), "Port 22\n").unwrap();
        std::os::unix::fs::symlink("sshd_config", image.join("link")).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = dir.path().join("p/.state");
        std::fs::create_dir_all(&state).unwrap();
        let src = prepare_persistent_dir(&state, Path::new("/etc/ssh"), &image).unwrap();
        assert_eq!(src, state.join("etc-ssh.bind"));
        assert_eq!(
            std::fs::read_to_string(src.join("sshd_config")).unwrap(),
            "Port 22\n"
        );
        assert!(src.join("sub").is_dir());
        assert_eq!(
            std::fs::read_link(src.join("link")).unwrap(),
            PathBuf::from("sshd_config")
        );
        assert_eq!(std::fs::metadata(&src).unwrap().mode() & 0o777, 0o700);
        // Second boot: what the system wrote is kept, the image is not copied again.
        std::fs::write(src.join("sshd_config"), "Port 2222\n").unwrap();
        let again = prepare_persistent_dir(&state, Path::new("/etc/ssh"), &image).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.join("sshd_config")).unwrap(),
            "Port 2222\n"
        );
        // A path missing from the image becomes an empty directory; a half copy is redone.
        std::fs::create_dir_all(state.join("home.bind.new/junk")).unwrap();
        let home =
            prepare_persistent_dir(&state, Path::new("/home"), &dir.path().join("none")).unwrap();
        assert_eq!(std::fs::read_dir(home).unwrap().count(), 0);
        assert!(!state.join("home.bind.new").exists());
        assert_eq!(state_name(Path::new("/var/log")), "var-log");
    }
}
