//! Opening COS_STATE: of a disk image (offline tools, tests) or of the running host.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::mount::MountFlags;

use crate::error::{DiskError, Result};
use crate::loopdev::PartitionDevice;
use crate::mount::Mount;
use crate::probe::try_probe_label;
use crate::table::{PartitionInfo, find_by_label};

/// Where clb keeps its private mount points and records (tmpfs on a booted host).
pub const RUN_DIR: &str = "/run/clb";

/// A partition (found by label) mounted at a private directory. On drop: sync, unmount,
/// detach the loop device, remove the directory.
#[derive(Debug)]
pub struct StateDisk {
    partition: Option<PartitionInfo>,
    mount: Option<Mount>,
    device: Option<PartitionDevice>,
    dir: PathBuf,
}

impl StateDisk {
    /// Find the partition labelled `label` on `disk` (an image file or a whole-disk block
    /// device), attach it (offset loop device, or the kernel's partition node when there is
    /// one) and mount it under /run/clb/disk-*.
    pub fn open(disk: &Path, label: &str, writable: bool) -> Result<Self> {
        let part = find_by_label(disk, label)?;
        let device = PartitionDevice::open(
            disk,
            part.number,
            part.start_bytes,
            part.size_bytes,
            !writable,
        )?;
        let mut sd = Self::mount_device(device, part.fs_type.clone(), writable)?;
        sd.partition = Some(part);
        Ok(sd)
    }

    /// Mount an existing block device (e.g. from [`host_partition_by_label`]). Prefer
    /// [`crate::find_mounted`] first: mounting a filesystem that is already mounted elsewhere
    /// works for ext4 but is easy to get wrong (read-only vs read-write).
    pub fn open_device(dev: &Path, writable: bool) -> Result<Self> {
        let probe = crate::probe::probe_path(dev, 0)
            .map_err(|e| DiskError::io(format!("probe {}", dev.display()), e))?;
        Self::mount_device(
            PartitionDevice::Node(dev.to_path_buf()),
            probe.map(|p| p.fs_type),
            writable,
        )
    }

    fn mount_device(
        device: PartitionDevice,
        fs_type: Option<String>,
        writable: bool,
    ) -> Result<Self> {
        let fs_type = fs_type.ok_or_else(|| {
            DiskError::Invalid(format!("no filesystem on {}", device.path().display()))
        })?;
        let dir = private_dir(Path::new(RUN_DIR), "disk")?;
        let mut flags = MountFlags::NOATIME | MountFlags::NODEV | MountFlags::NOSUID;
        if !writable {
            flags |= MountFlags::RDONLY;
        }
        let mount = match Mount::new(device.path(), &dir, &fs_type, flags, None) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(StateDisk {
            partition: None,
            mount: Some(mount),
            device: Some(device),
            dir,
        })
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The partition, when opened from a disk with [`StateDisk::open`].
    pub fn partition(&self) -> Option<&PartitionInfo> {
        self.partition.as_ref()
    }

    /// The block device that is mounted (`/dev/loopN` or a partition node).
    pub fn device(&self) -> Option<&Path> {
        self.device.as_ref().map(|d| d.path())
    }

    /// Unmount and detach now, reporting errors (drop only logs them).
    pub fn close(mut self) -> Result<()> {
        self.sync();
        let res = match self.mount.take() {
            Some(m) => m.unmount(),
            None => Ok(()),
        };
        res?;
        let dev = self.device.take();
        if let Some(PartitionDevice::Loop(l)) = dev {
            l.detach()?;
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }

    fn sync(&self) {
        // umount syncs too, but a lazy unmount (busy) would not; flush what we wrote now.
        if let Ok(d) = File::open(&self.dir)
            && let Err(e) = rustix::fs::syncfs(&d)
        {
            tracing::warn!(dir = %self.dir.display(), "syncfs failed: {e}");
        }
    }
}

impl Drop for StateDisk {
    fn drop(&mut self) {
        if self.mount.is_some() {
            self.sync();
        }
        // Order matters: unmount before detaching the loop device under it.
        drop(self.mount.take());
        drop(self.device.take());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Create a fresh directory `<run_dir>/<prefix>-<pid>-<n>`.
pub(crate) fn private_dir(run_dir: &Path, prefix: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(run_dir)
        .map_err(|e| DiskError::io(format!("create {}", run_dir.display()), e))?;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = run_dir.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(DiskError::io(format!("create {}", dir.display()), e)),
        }
    }
}

/// The host block device (`/dev/...`) whose filesystem label is `label`, scanning every block
/// device the kernel knows (`/sys/class/block`: whole disks and partitions). Two devices with
/// the label are an error (e.g. a second disk with an old install plugged in).
pub fn host_partition_by_label(label: &str) -> Result<PathBuf> {
    let mut matches = Vec::new();
    let entries = std::fs::read_dir("/sys/class/block")
        .map_err(|e| DiskError::io("read /sys/class/block", e))?;
    for entry in entries.flatten() {
        let sys = entry.path();
        // Empty devices (unattached loop devices, empty CD drives) have nothing to probe.
        let size = std::fs::read_to_string(sys.join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) == 0 {
            continue;
        }
        // Names with a '/' in them are spelt with '!' in sysfs (cciss!c0d0).
        let name = entry.file_name().to_string_lossy().replace('!', "/");
        let node = PathBuf::from("/dev").join(&name);
        let is_blk = std::fs::metadata(&node)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if !is_blk {
            continue;
        }
        let Ok(mut f) = File::open(&node) else {
            continue;
        };
        match try_probe_label(&mut f, 0) {
            Ok(Some(p)) if p.label.as_deref() == Some(label) => matches.push(node),
            Ok(_) => {}
            Err(e) => tracing::debug!(dev = %node.display(), "probe failed: {e}"),
        }
    }
    matches.sort();
    match matches.len() {
        0 => Err(DiskError::LabelNotFound {
            label: label.to_string(),
            searched: "host block devices".to_string(),
        }),
        1 => Ok(matches.remove(0)),
        _ => Err(DiskError::DuplicateLabel {
            label: label.to_string(),
            partitions: matches.iter().map(|p| p.display().to_string()).collect(),
        }),
    }
}
