//! Recovery-mode operations: `clb deploy --from-recovery` (lay out COS_STATE and
//! COS_PERSISTENT next to COS_OEM/COS_RECOVERY and install slot `a` from the recovery slot,
//! no network needed) and `clb reset` (reformat COS_STATE and COS_PERSISTENT, redeploy from
//! recovery). Both work on a host booted into recovery and offline on a disk image.

use std::io::Read;
use std::path::{Path, PathBuf};

use clb_disk::{PartitionDevice, PartitionInfo};
use clb_ondisk::{BootState, SlotManifest, SlotName, bootstate::DEFAULT_MAX_TRIES};
use sha2::{Digest, Sha256};

use crate::error::{ClbError, Result};
use clb_cloud_config::Filesystem;

use crate::partitions::{PERSISTENT_LABEL, Part, RECOVERY_LABEL, STATE_LABEL, apply_layout};
use crate::store::StateStore;
use crate::upgrade::now_rfc3339;

/// The whole disk holding the partition with `label`: the image itself offline, the parent
/// block device on a host.
pub fn disk_of_label(disk: Option<&Path>, label: &str) -> Result<PathBuf> {
    if let Some(d) = disk {
        return Ok(d.to_path_buf());
    }
    let part = clb_disk::host_partition_by_label(label).map_err(ClbError::from)?;
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ClbError::State(format!("odd device name {}", part.display())))?;
    // /sys/class/block/vda2 links into .../block/vda/vda2: the parent directory is the disk.
    let sys = std::fs::canonicalize(format!("/sys/class/block/{name}"))
        .map_err(ClbError::io(format!("resolving {name} in /sys")))?;
    let parent = sys
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| ClbError::State(format!("{name} has no parent disk")))?;
    Ok(PathBuf::from("/dev").join(parent))
}

/// Adds COS_STATE (`state_mib`) and COS_PERSISTENT (`persistent_mib`, 0 = the rest) after the
/// partitions already on `disk`, keeping them as they are.
pub fn layout_next_to_recovery(disk: &Path, state_mib: u64, persistent_mib: u64) -> Result<()> {
    let existing = clb_disk::list_partitions(disk).map_err(ClbError::from)?;
    if !existing
        .iter()
        .any(|p| p.fs_label.as_deref() == Some(RECOVERY_LABEL))
    {
        return Err(ClbError::Invalid(format!(
            "{} has no COS_RECOVERY partition to deploy from",
            disk.display()
        )));
    }
    let mut parts: Vec<Part> = existing
        .iter()
        .filter(|p| !matches!(p.fs_label.as_deref(), Some(STATE_LABEL | PERSISTENT_LABEL)))
        .map(|p| {
            // A partition without a filesystem we know is kept as it is, never formatted.
            let fs = p.fs_type.as_deref().and_then(Filesystem::from_name);
            Part::new(
                p.fs_label.as_deref().unwrap_or_default(),
                p.part_name.as_deref().unwrap_or_default(),
                p.size_bytes >> 20,
                fs.unwrap_or(Filesystem::NoFormat),
            )
        })
        .collect();
    parts.push(Part::new(STATE_LABEL, "state", state_mib, Filesystem::Ext4));
    parts.push(Part::new(
        PERSISTENT_LABEL,
        "persistent",
        persistent_mib,
        Filesystem::Ext4,
    ));
    apply_layout(disk, &parts).map(|_| ())
}

/// Copies the recovery slot into `state` as slot `a` (every layer re-hashed on the way) and
/// sets the boot state: a freshly installed, trusted slot.
pub fn install_from_recovery(recovery: &StateStore, state: &StateStore) -> Result<SlotManifest> {
    let _lock = state.lock()?;
    if state.read_bootstate()?.is_some() {
        return Err(ClbError::State(format!(
            "{} already holds a system; use clb reset",
            state.root().display()
        )));
    }
    let source = recovery
        .read_slot(SlotName::Recovery)?
        .ok_or_else(|| ClbError::State("the recovery slot is empty".into()))?;
    state.ensure_dirs()?;
    for layer in &source.layers {
        if state.has_layer(&layer.digest) {
            continue;
        }
        let tmp = state.layout().tmp_dir().join("recovery-copy.tmp");
        copy_checked(&recovery.layout().layer(&layer.digest), &tmp, &layer.digest)?;
        state.install_layer(&tmp, &layer.digest)?;
    }
    let boot = match &source.boot {
        Some(files) => {
            let (from, to) = (
                recovery.layout().boot_dir(SlotName::Recovery),
                state.layout().boot_dir(SlotName::A),
            );
            std::fs::create_dir_all(&to)
                .map_err(ClbError::io(format!("creating {}", to.display())))?;
            copy_checked(&from.join("vmlinuz"), &to.join("vmlinuz"), &files.kernel)?;
            if let Some(initrd) = &files.initrd {
                copy_checked(&from.join("initrd"), &to.join("initrd"), initrd)?;
            }
            Some(files.clone())
        }
        None => None,
    };
    let manifest = SlotManifest {
        slot: SlotName::A,
        staged_at: now_rfc3339(),
        boot,
        ..source
    };
    state.write_slot(&manifest)?;
    state.write_bootstate(&BootState::new(SlotName::A, DEFAULT_MAX_TRIES))?;
    tracing::info!(image = %manifest.image, digest = %manifest.digest, "slot a installed from recovery");
    Ok(manifest)
}

/// Copies `from` to `to` (temp + rename), checking the sha256 on the way.
fn copy_checked(from: &Path, to: &Path, digest: &str) -> Result<()> {
    let tmp = to.with_extension("part");
    let mut input =
        std::fs::File::open(from).map_err(ClbError::io(format!("opening {}", from.display())))?;
    let mut output =
        std::fs::File::create(&tmp).map_err(ClbError::io(format!("creating {}", tmp.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(ClbError::io(format!("reading {}", from.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut output, &buf[..n])
            .map_err(ClbError::io(format!("writing {}", tmp.display())))?;
    }
    drop(output);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        let _ = std::fs::remove_file(&tmp);
        return Err(ClbError::DigestMismatch {
            what: from.display().to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    clb_ondisk::atomic::rename_durable(&tmp, to)
        .map_err(ClbError::io(format!("installing {}", to.display())))
}

/// Formats the partition labelled `label` on `disk` again (ext4, same label). Refuses a
/// mounted one.
pub fn reformat(disk: &Path, label: &str) -> Result<()> {
    let part: PartitionInfo = clb_disk::find_by_label(disk, label).map_err(ClbError::from)?;
    let dev = PartitionDevice::open(disk, part.number, part.start_bytes, part.size_bytes, false)
        .map_err(ClbError::from)?;
    if clb_disk::find_mounted(dev.path()).is_some() {
        return Err(ClbError::State(format!(
            "{label} ({}) is mounted; reset from recovery mode",
            dev.path().display()
        )));
    }
    clb_command::run(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label])
            .arg(dev.path()),
    )?;
    tracing::info!(label, device = %dev.path().display(), "reformatted");
    Ok(())
}
