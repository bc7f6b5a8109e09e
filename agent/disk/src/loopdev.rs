//! Offset loop devices: the way to open one partition of a disk image.
//!
//! We shell out to `losetup` instead of issuing LOOP_CTL_GET_FREE / LOOP_CONFIGURE ioctls:
//! those would need `unsafe` ioctl code, and `losetup --find --show` already handles the race
//! of two processes grabbing the same free device, which is easy to get wrong.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{DiskError, Result};

/// A loop device attached to (a byte range of) a file. Detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
    /// The backing file, canonical, to recognise the device in sysfs.
    file: PathBuf,
    attached: bool,
}

impl LoopDevice {
    /// Attach `file` from byte `offset`, limited to `size` bytes when given (else to the end of
    /// the file). The kernel takes a direct reference to the file, so the range must not be
    /// changed by anyone else while attached.
    pub fn attach(file: &Path, offset: u64, size: Option<u64>, read_only: bool) -> Result<Self> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset"])
            .arg(offset.to_string());
        if let Some(size) = size {
            cmd.arg("--sizelimit").arg(size.to_string());
        }
        if read_only {
            cmd.arg("--read-only");
        }
        cmd.arg(file);
        let stdout = run(&mut cmd)?;
        let device = PathBuf::from(stdout.trim());
        if !device.starts_with("/dev/") {
            return Err(DiskError::Invalid(format!(
                "losetup --find --show {} printed {stdout:?}, not a device",
                file.display()
            )));
        }
        // Precaution: drop any cached blocks the (reused) loop device may hold from an earlier
        // binding, so the filesystem is read as it is in the file now (a VM may have written
        // the image in between). Cheap, since the device was just bound.
        if let Err(e) = run(Command::new("blockdev").arg("--flushbufs").arg(&device)) {
            tracing::warn!(device = %device.display(), "could not flush the loop device's buffers: {e}");
        }
        tracing::debug!(device = %device.display(), file = %file.display(), offset, ?size, read_only, "attached loop device");
        Ok(LoopDevice {
            device,
            file: std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
            attached: true,
        })
    }

    /// The `/dev/loopN` path.
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// The file it is attached to.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Detach now, reporting errors (drop only logs them). Waits briefly until the kernel has
    /// really released the device (see [`wait_released`]).
    pub fn detach(mut self) -> Result<()> {
        self.attached = false;
        detach(&self.device)?;
        wait_released(&self.device, &self.file, RELEASE_TIMEOUT);
        Ok(())
    }

    /// Detach while the device is still in use (mounted). The kernel then marks it
    /// auto-clear and frees it when the last user (the mount) goes away, so a mount that must
    /// outlive this process does not leak a loop device when it is unmounted later.
    /// Returns the device and file, to pass to [`wait_released`] after unmounting.
    pub fn detach_when_unused(mut self) -> Result<(PathBuf, PathBuf)> {
        self.attached = false;
        detach(&self.device)?;
        Ok((
            std::mem::take(&mut self.device),
            std::mem::take(&mut self.file),
        ))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.attached {
            match detach(&self.device) {
                Ok(()) => {
                    wait_released(&self.device, &self.file, RELEASE_TIMEOUT);
                }
                Err(e) => {
                    tracing::warn!(device = %self.device.display(), "could not detach loop device: {e}")
                }
            }
        }
    }
}

/// How long to wait for a detached loop device to be released.
pub(crate) const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Wait until loop `device` no longer serves `file`; false on timeout (logged).
///
/// Detaching a loop device that someone still has open (udev's blkid, a concurrent
/// `losetup`, a mount being torn down) does not fail: the kernel marks it auto-clear and
/// releases it when the last opener closes it. That is normally milliseconds later; waiting
/// here makes "unmounted" also mean "no loop device left" for callers and tests.
pub fn wait_released(device: &Path, file: &Path, timeout: Duration) -> bool {
    let Some(name) = device.file_name() else {
        return true;
    };
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let start = Instant::now();
    loop {
        let still = match std::fs::read_to_string(&sys) {
            // The kernel appends " (deleted)" when the file was unlinked.
            Ok(s) => {
                let s = s.trim_end_matches('\n');
                Path::new(s.strip_suffix(" (deleted)").unwrap_or(s)) == file
            }
            Err(_) => false, // no backing file: unbound
        };
        if !still {
            return true;
        }
        if start.elapsed() >= timeout {
            tracing::warn!(device = %device.display(), file = %file.display(), "loop device still attached");
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn detach(device: &Path) -> Result<()> {
    run(Command::new("losetup").arg("--detach").arg(device)).map(|_| ())
}

/// Runs a tool through the one runner of the tree.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    Ok(clb_command::run(cmd)?)
}

/// A block device holding one partition: either the kernel's own partition node (real disks,
/// QEMU guests) or an offset loop device over the disk (images, and this sandbox where the
/// kernel creates no partition nodes for loop devices).
#[derive(Debug)]
pub enum PartitionDevice {
    /// An existing block device, e.g. `/dev/sda3`; nothing to clean up.
    Node(PathBuf),
    /// A loop device we attached; detached on drop.
    Loop(LoopDevice),
}

impl PartitionDevice {
    /// Open partition `number` (at `start`, `size` bytes) of `disk`. When `disk` is a block
    /// device whose partition node exists, use that node; otherwise attach an offset loop
    /// device.
    pub fn open(disk: &Path, number: u32, start: u64, size: u64, read_only: bool) -> Result<Self> {
        if let Some(node) = partition_node(disk, number) {
            return Ok(PartitionDevice::Node(node));
        }
        LoopDevice::attach(disk, start, Some(size), read_only).map(PartitionDevice::Loop)
    }

    /// The device path to mount.
    pub fn path(&self) -> &Path {
        match self {
            PartitionDevice::Node(p) => p,
            PartitionDevice::Loop(l) => l.path(),
        }
    }
}

/// `/dev/<name>` of partition `number` of block device `disk`, found through sysfs
/// (`/sys/class/block/<disk>/<part>/partition`), if the kernel created it.
fn partition_node(disk: &Path, number: u32) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    if !std::fs::metadata(disk).ok()?.file_type().is_block_device() {
        return None;
    }
    let real = std::fs::canonicalize(disk).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let sys = PathBuf::from("/sys/class/block").join(&name);
    for entry in std::fs::read_dir(&sys).ok()?.flatten() {
        let part_file = entry.path().join("partition");
        let Ok(n) = std::fs::read_to_string(&part_file) else {
            continue;
        };
        if n.trim().parse::<u32>().ok() == Some(number) {
            let node = PathBuf::from("/dev").join(entry.file_name());
            if node.exists() {
                return Some(node);
            }
        }
    }
    None
}
