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
use crate::{Fatal, loopdev, persist, say};

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

/// `COS_OEM` at `/oem` and, unless this is a `recovery` boot, the persistent paths from
/// `COS_PERSISTENT` (docs/persistence.md). Recovery leaves COS_PERSISTENT alone: a broken
/// `/etc` there must not break the system that repairs it.
pub(crate) fn mount_oem_and_persistent(
    cfg: &Config,
    sysroot: &Path,
    recovery: bool,
) -> Result<(), Fatal> {
    let private = PathBuf::from(PRIVATE_DIR);
    // The image maker's settings, read before COS_OEM or an overlay covers anything.
    let image_env = read_env(&sysroot.join(persist::IMAGE_ENV));
    // COS_OEM at /oem, with the machine's settings.
    let mut oem_env = None;
    if let Some(dev) = find_optional(&cfg.oem_label)? {
        let target = sysroot.join("oem");
        mount_device(&dev, &target, MountFlags::empty(), &cfg.oem_label)?;
        oem_env = read_env(&target.join(persist::OEM_ENV));
    }
    if recovery {
        say(format_args!(
            "recovery boot: persistent paths not mounted, {} left alone",
            cfg.persistent_label
        ));
        return Ok(());
    }

    let image_name = format!("/{} (image)", persist::IMAGE_ENV);
    let oem_name = format!("/oem/{} ({})", persist::OEM_ENV, cfg.oem_label);
    let sources = [
        persist::EnvSource {
            name: &image_name,
            text: image_env,
        },
        persist::EnvSource {
            name: &oem_name,
            text: oem_env,
        },
    ];
    let (layout, warnings) = persist::resolve(&sources, cfg.persistent_paths.as_deref());
    for w in &warnings {
        say(format_args!("{w}"));
    }
    let (paths, notes) = persist::mount_plan(&layout);
    for n in notes
        .iter()
        .filter(|n| cfg.debug || n.starts_with("warning:"))
    {
        say(format_args!("{n}"));
    }
    if cfg.debug {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let how = if layout.bind { "bind" } else { "overlay" };
        say(format_args!("persistent paths ({how}): {}", list.join(" ")));
    }
    let Some(dev) = find_optional(&cfg.persistent_label)? else {
        if !paths.is_empty() {
            say(format_args!(
                "no {} partition: persistent paths are ephemeral this boot",
                cfg.persistent_label
            ));
        }
        return Ok(());
    };
    let pdir = private.join("persistent");
    mount_device(&dev, &pdir, MountFlags::empty(), &cfg.persistent_label)?;
    let state_dir = pdir.join(".state");
    mkdir(&state_dir)?;
    let units = Path::new(SYSTEMD_RUN_UNITS);
    for path in &paths {
        let mounted = if layout.bind {
            bind_persistent_path(&state_dir, sysroot, path)?
        } else {
            overlay_persistent_path(&state_dir, sysroot, path)?
        };
        if mounted {
            if let Err(e) = write_mount_unit(units, path) {
                say(format_args!("warning: {e}"));
            }
            if cfg.debug {
                say(format_args!("persistent {}", path.display()));
            }
        }
    }
    Ok(())
}

/// A `persistent.env`: `None` when absent, `Some(Err)` when it cannot be read as text.
fn read_env(path: &Path) -> Option<Result<String, String>> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        r => Some(r.map_err(|e| e.to_string())),
    }
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

/// Where systemd looks for runtime units; `/run` travels into the new root.
pub const SYSTEMD_RUN_UNITS: &str = "/run/systemd/system";

/// The unit file for each persistent mount. Without `DefaultDependencies=no` systemd stops
/// the mount at shutdown while journald still holds `/var/log` (and other services `/var/lib`)
/// and prints `Failed unmounting var-log.mount`; without default dependencies it leaves them
/// to systemd-shutdown's final loop, which unmounts them (or remounts them read-only) after
/// every process is gone. A whole unit file, not a drop-in: systemd never reads the drop-ins of
/// a mount unit that another unit referenced (`RequiresMountsFor=/var/log/journal`) before it
/// saw the mount in /proc/self/mountinfo, as `var-log.mount`, `var-lib.mount` and
/// `home.mount` are on Debian; a fragment is read whenever the unit is loaded.
fn mount_unit_file(path: &Path) -> String {
    format!(
        "# Written by clb-initrd at boot: a persistent path (see docs/persistence.md). Already\n\
         # mounted when systemd starts; unmounted by systemd-shutdown's final loop.\n\
         [Unit]\nDescription=clb persistent path {path}\n\
         Documentation=file:///usr/share/doc/clb/persistence.md\nDefaultDependencies=no\n\n\
         [Mount]\nWhat=overlay\nWhere={path}\nType=overlay\n",
        path = path.display()
    )
}

/// `<units>/<escaped path>.mount` for the mount on `path` (of the new root).
pub fn write_mount_unit(units: &Path, path: &Path) -> Result<(), Fatal> {
    mkdir(units)?;
    let file = units.join(persist::mount_unit(path));
    clb_ondisk::atomic::write_atomic(&file, mount_unit_file(path).as_bytes())
        .map_err(|e| Fatal(format!("write {}: {e}", file.display())))
}

/// Where a persistent mount on `path` goes in the new root: `None` (with a warning) when it
/// cannot go there: `path` or a directory above it is a symlink in the image (following it
/// would resolve against the initramfs, not the new root), or something there is not a
/// directory. Missing: created in the root (it lands in the tmpfs upper layer) so there is
/// something to mount on.
fn persistent_target(sysroot: &Path, path: &Path) -> Result<Option<PathBuf>, Fatal> {
    let target = sysroot.join(path.strip_prefix("/").unwrap_or(path));
    let warn = |what: String| {
        say(format_args!(
            "warning: {} is {what} in the image: not made persistent",
            path.display()
        ));
        Ok(None)
    };
    let mut at = sysroot.to_path_buf();
    let mut shown = PathBuf::from("/");
    for part in path.components().skip(1) {
        at.push(part);
        shown.push(part);
        let what = match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => "a symlink",
            Ok(m) if !m.is_dir() => "not a directory",
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Fatal(format!("stat {}: {e}", at.display()))),
        };
        return if at == target {
            warn(what.to_string())
        } else {
            warn(format!("under {} ({what})", shown.display()))
        };
    }
    mkdir(&target)?;
    Ok(Some(target))
}

/// Mount overlayfs on `path`: the image's own directory below (the lower is resolved before
/// the mount covers it; the root is itself an overlay, so this stacks two deep, the kernel's
/// limit), `.state/<name>.overlay/{upper,work}` above. Returns whether it mounted.
fn overlay_persistent_path(state_dir: &Path, sysroot: &Path, path: &Path) -> Result<bool, Fatal> {
    let Some(target) = persistent_target(sysroot, path)? else {
        return Ok(false);
    };
    let name = persist::state_name(path);
    let old_bind = state_dir.join(format!("{name}.bind"));
    if old_bind.is_dir() && !state_dir.join(format!("{name}.overlay")).exists() {
        say(format_args!(
            "{}: bind-mode state .state/{name}.bind left untouched, the overlay starts empty \
             (PERSISTENT_STATE_BIND=true uses it again)",
            path.display()
        ));
    }
    let dirs = prepare_overlay_dirs(state_dir, path, &target)?;
    // The upper persists across images, so nothing in it may depend on the lower it was made
    // against: no index (it would refuse the next image's lower), no redirects or metacopy
    // files (they point into the lower by path or handle).
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off",
        target.display(),
        dirs.upper.display(),
        dirs.work.display()
    );
    mount(
        "overlay",
        &target,
        "overlay",
        MountFlags::empty(),
        Some(c_str(&opts)?.as_c_str()),
    )
    .map_err(|e| {
        Fatal(format!(
            "mount overlay on {} ({opts}): {e}",
            target.display()
        ))
    })?;
    Ok(true)
}

/// The upper and work directories of a persistent overlay.
#[derive(Debug, PartialEq, Eq)]
pub struct OverlayDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// `<state_dir>/<name>.overlay/{upper,work}`, made on first use as `<name>.overlay.new` and
/// renamed into place, so a power cut leaves nothing or the whole pair. The upper directory is
/// the overlay's root directory: it takes the image directory's owner and mode (`/root`
/// stays 0700); afterwards they are the host's, like any directory copied up.
pub fn prepare_overlay_dirs(
    state_dir: &Path,
    path: &Path,
    image_dir: &Path,
) -> Result<OverlayDirs, Fatal> {
    let dir = state_dir.join(format!("{}.overlay", persist::state_name(path)));
    let dirs = |d: &Path| OverlayDirs {
        upper: d.join("upper"),
        work: d.join("work"),
    };
    if dir.is_dir() {
        let d = dirs(&dir);
        // Someone may have cleaned out the work directory; overlayfs needs it to exist.
        mkdir(&d.upper)?;
        mkdir(&d.work)?;
        return Ok(d);
    }
    let tmp = state_dir.join(format!("{}.overlay.new", persist::state_name(path)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Fatal(format!("remove {}: {e}", tmp.display())))?;
    }
    let new = dirs(&tmp);
    mkdir(&new.upper)?;
    mkdir(&new.work)?;
    let meta = std::fs::metadata(image_dir)
        .map_err(|e| Fatal(format!("stat {}: {e}", image_dir.display())))?;
    set_owner_mode(&new.upper, &meta)?;
    let sync = |d: &Path| {
        clb_ondisk::atomic::sync_dir(d).map_err(|e| Fatal(format!("sync {}: {e}", d.display())))
    };
    sync(&tmp)?;
    std::fs::rename(&tmp, &dir).map_err(|e| {
        Fatal(format!(
            "rename {} to {}: {e}",
            tmp.display(),
            dir.display()
        ))
    })?;
    sync(state_dir)?;
    Ok(dirs(&dir))
}

/// cOS's bind mode: bind `.state/<name>.bind` onto `path`, seeded from the image the first
/// time. Returns whether it mounted.
fn bind_persistent_path(state_dir: &Path, sysroot: &Path, path: &Path) -> Result<bool, Fatal> {
    let Some(target) = persistent_target(sysroot, path)? else {
        return Ok(false);
    };
    let src = prepare_persistent_dir(state_dir, path, &target)?;
    rustix::mount::mount_bind(&src, &target).map_err(|e| {
        Fatal(format!(
            "bind {} on {}: {e}",
            src.display(),
            target.display()
        ))
    })?;
    Ok(true)
}

/// Create `<state_dir>/<name>.bind` on first use, seeded from `image_dir` when it exists
/// (copied into `<name>.bind.new`, then renamed, so a power cut during the copy redoes it).
pub fn prepare_persistent_dir(
    state_dir: &Path,
    path: &Path,
    image_dir: &Path,
) -> Result<PathBuf, Fatal> {
    let name = persist::state_name(path);
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
    }

    #[test]
    fn overlay_dirs_are_made_once_with_the_image_dirs_mode() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root/root");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = dir.path().join("p/.state");
        std::fs::create_dir_all(&state).unwrap();
        // A power cut during an earlier first boot left a half-made pair: redone.
        std::fs::create_dir_all(state.join("root.overlay.new/upper/junk")).unwrap();
        let d = prepare_overlay_dirs(&state, Path::new("/root"), &image).unwrap();
        assert_eq!(
            d,
            OverlayDirs {
                upper: state.join("root.overlay/upper"),
                work: state.join("root.overlay/work"),
            }
        );
        assert!(!state.join("root.overlay.new").exists());
        assert_eq!(std::fs::read_dir(&d.upper).unwrap().count(), 0);
        assert_eq!(std::fs::metadata(&d.upper).unwrap().mode() & 0o7777, 0o700);
        assert!(d.work.is_dir());
        // Later boots keep what the host wrote (and its mode), even against another image
        // directory; a work directory someone removed comes back.
        std::fs::write(d.upper.join("host.txt"), "mine").unwrap();
        std::fs::set_permissions(&d.upper, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::remove_dir(&d.work).unwrap();
        let other = dir.path().join("root2");
        std::fs::create_dir_all(&other).unwrap();
        let again = prepare_overlay_dirs(&state, Path::new("/root"), &other).unwrap();
        assert_eq!(again, d);
        assert_eq!(
            std::fs::read_to_string(d.upper.join("host.txt")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::metadata(&d.upper).unwrap().mode() & 0o7777, 0o750);
        assert!(d.work.is_dir());
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["root.overlay"]);
    }

    #[test]
    fn targets_missing_symlinked_or_not_directories() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = &dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("srv")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let t = |p: &str| persistent_target(root, Path::new(p)).unwrap();
        assert_eq!(t("/etc"), Some(root.join("etc")));
        assert_eq!(t("/srv"), None);
        // Below a symlink: /srv/data would be made where the link points, outside the root.
        assert_eq!(t("/srv/data"), None);
        assert!(!outside.join("data").exists());
        assert_eq!(t("/file"), None);
        assert_eq!(t("/file/x"), None);
        // Missing from the image: made in the root, parents too.
        assert_eq!(t("/var/lib"), Some(root.join("var/lib")));
        assert!(root.join("var/lib").is_dir());
    }

    #[test]
    fn mount_units_are_named_like_systemds_and_have_no_default_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["/var/log", "/srv/my-data"] {
            write_mount_unit(dir.path(), Path::new(p)).unwrap();
        }
        let unit = std::fs::read_to_string(dir.path().join("var-log.mount")).unwrap();
        assert!(unit.contains("\n[Unit]\n"), "{unit}");
        assert!(unit.contains("\nDefaultDependencies=no\n"), "{unit}");
        assert!(
            unit.ends_with("[Mount]\nWhat=overlay\nWhere=/var/log\nType=overlay\n"),
            "{unit}"
        );
        assert!(dir.path().join("srv-my\\x2ddata.mount").is_file());
        // Rewritten on every boot, no temp files left.
        write_mount_unit(dir.path(), Path::new("/var/log")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
