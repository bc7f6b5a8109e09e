//! Carrying out a plan: the GPT (gpt crate), the protective MBR, the kernel's view of the
//! table, filesystems (`mkfs.*`) and growing ext2/3/4 (`e2fsck`, `resize2fs`).

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Command;

use clb_command::CommandError;
use gpt::disk::LogicalBlockSize;

use super::error::{LayoutError, LayoutFailure, Refusal};
use super::plan::{
    Expansion, LayoutPlan, PartAction, PlannedPartition, device_size, io_error, is_block, open_gpt,
    refused,
};
use crate::schema::Filesystem;

fn part_type(fs: Filesystem) -> gpt::partition_types::Type {
    match fs {
        Filesystem::Swap => gpt::partition_types::LINUX_SWAP,
        // vfat is the EFI system partition in every cOS/Elemental layout.
        Filesystem::Vfat => gpt::partition_types::EFI,
        _ => gpt::partition_types::LINUX_FS,
    }
}

/// The gpt crate's io errors become `LayoutError::Io`, so callers find them in the chain (a
/// full disk, a vanished device); its own errors stay `LayoutError::Gpt`.
fn gpt_error(device: &Path, action: &str) -> impl FnOnce(gpt::GptError) -> LayoutError {
    let (device, action) = (device.to_path_buf(), action.to_string());
    move |e| match e {
        gpt::GptError::Io(source) => LayoutError::Io {
            device,
            action,
            source,
        },
        source => LayoutError::Gpt {
            device,
            action,
            source,
        },
    }
}

pub(crate) fn write_table(plan: &LayoutPlan) -> Result<(), LayoutError> {
    let dev = &plan.device;
    let lb = match plan.sector_size {
        4096 => LogicalBlockSize::Lb4096,
        _ => LogicalBlockSize::Lb512,
    };
    let mut disk = if plan.new_table {
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(lb)
            .create(dev)
            .map_err(gpt_error(dev, "create the GPT"))?;
        if plan.disk_guid.is_some() {
            disk.update_guid(plan.disk_guid);
        }
        disk
    } else {
        open_gpt(dev, true).ok_or_else(|| {
            refused(
                dev,
                Refusal::Changed {
                    what: "its GPT is gone".into(),
                },
            )
        })?
    };
    let lbs = plan.sector_size;
    let mut map = disk.take_partitions();
    if let Some(x) = &plan.expand {
        let p = map.get_mut(&x.number).ok_or_else(|| {
            refused(
                dev,
                Refusal::Changed {
                    what: format!("partition {} is gone", x.number),
                },
            )
        })?;
        p.last_lba = p.first_lba + x.to_bytes / lbs - 1;
    }
    for p in plan
        .partitions
        .iter()
        .filter(|p| p.action == PartAction::Create)
    {
        map.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: part_type(p.filesystem),
                part_guid: new_guid(dev)?,
                first_lba: p.start_bytes / lbs,
                last_lba: (p.start_bytes + p.size_bytes) / lbs - 1,
                flags: 0,
                name: p.p_label.clone(),
            },
        );
    }
    // update_partitions recomputes both headers for the device's current size, which also
    // moves the backup header to the end of a disk that grew.
    disk.update_partitions(map)
        .map_err(gpt_error(dev, "update the partition entries"))?;
    disk.write_inplace()
        .map_err(gpt_error(dev, "write the GPT"))?;
    if plan.new_table {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(io_error(dev, "open it to write the protective MBR".into()))?;
        let sectors = device_size(dev)? / lbs;
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
            u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX),
        );
        mbr.update_conservative(&mut f).map_err(|e| {
            let source = match e {
                gpt::mbr::MBRError::Io(e) => e,
                other => std::io::Error::other(other),
            };
            io_error(dev, "write the protective MBR".into())(source)
        })?;
        f.sync_all()
            .map_err(io_error(dev, "flush the protective MBR".into()))?;
    }
    Ok(())
}

/// A random (v4) partition GUID from the kernel's generator.
fn new_guid(dev: &Path) -> Result<uuid::Uuid, LayoutError> {
    const SOURCE: &str = "/proc/sys/kernel/random/uuid";
    let s = std::fs::read_to_string(SOURCE).map_err(io_error(
        dev,
        format!("read a partition GUID from {SOURCE}"),
    ))?;
    parse_guid(dev, SOURCE, &s)
}

/// The GUID `source` gave; a bad one is an io error (the kernel's answer is unusable) whose
/// inner error is the typed `uuid::Error`.
fn parse_guid(dev: &Path, source: &str, text: &str) -> Result<uuid::Uuid, LayoutError> {
    uuid::Uuid::parse_str(text.trim()).map_err(|e| {
        io_error(dev, format!("read a partition GUID from {source}"))(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        ))
    })
}

/// Ask the kernel to re-read the table of a block device (nothing to do for image files).
/// Err: why neither `blockdev` nor `partx` could, for a note (loop devices without partscan
/// always refuse).
pub(crate) fn reread(dev: &Path) -> Result<(), String> {
    if !is_block(dev) {
        return Ok(());
    }
    let Err(blockdev) = clb_command::run(Command::new("blockdev").arg("--rereadpt").arg(dev))
    else {
        return Ok(());
    };
    match clb_command::run(Command::new("partx").arg("-u").arg(dev)) {
        Ok(_) => Ok(()),
        Err(partx) => Err(both_failed(&blockdev, &partx)),
    }
}

/// Why neither `blockdev` nor `partx` re-read the table, each error with its causes.
fn both_failed(blockdev: &CommandError, partx: &CommandError) -> String {
    format!(
        "{}; {}",
        clb_command::one_line(blockdev),
        clb_command::one_line(partx)
    )
}

fn command_error(dev: &Path, action: String) -> impl FnOnce(CommandError) -> LayoutError {
    let device = dev.to_path_buf();
    move |source| {
        LayoutError::Command(Box::new(LayoutFailure {
            device,
            action,
            source,
        }))
    }
}

/// Attach partition `number` (its kernel node, or an offset loop device on an image file).
fn open_partition(
    dev: &Path,
    number: u32,
    start: u64,
    size: u64,
) -> Result<clb_disk::PartitionDevice, LayoutError> {
    clb_disk::PartitionDevice::open(dev, number, start, size, false).map_err(|source| {
        LayoutError::Disk(Box::new(LayoutFailure {
            device: dev.to_path_buf(),
            action: format!("open partition {number}"),
            source,
        }))
    })
}

pub(crate) fn format(dev: &Path, p: &PlannedPartition) -> Result<(), LayoutError> {
    let (program, flags, label_flag): (&str, &[&str], &str) = match p.filesystem {
        Filesystem::NoFormat => return Ok(()),
        Filesystem::Ext4 => ("mkfs.ext4", &["-F", "-q"], "-L"),
        Filesystem::Ext3 => ("mkfs.ext3", &["-F", "-q"], "-L"),
        Filesystem::Ext2 => ("mkfs.ext2", &["-F", "-q"], "-L"),
        Filesystem::Xfs => ("mkfs.xfs", &["-f", "-q"], "-L"),
        Filesystem::Btrfs => ("mkfs.btrfs", &["-f", "-q"], "-L"),
        // -I: we format a partition we just created. Without it mkfs.vfat refuses a device
        // that it thinks has partitions, e.g. a reused loop device whose stale partition
        // entries linger in sysfs.
        Filesystem::Vfat => ("mkfs.vfat", &["-I"], "-n"),
        Filesystem::Swap => ("mkswap", &[], "-L"),
    };
    let part = open_partition(dev, p.number, p.start_bytes, p.size_bytes)?;
    let mut cmd = Command::new(program);
    cmd.args(flags);
    if !p.fs_label.is_empty() {
        cmd.arg(label_flag).arg(&p.fs_label);
    }
    cmd.arg(part.path());
    clb_command::run(&mut cmd).map_err(command_error(
        dev,
        format!(
            "format partition {} ({}) as {}",
            p.number, p.p_label, p.filesystem
        ),
    ))?;
    // The loop device (if one was attached) is detached only after mkfs is done with it.
    drop(part);
    Ok(())
}

/// Grow the filesystem of a grown partition: Ok(true) when it was, Ok(false) for a filesystem
/// clb does not grow.
pub(crate) fn grow_fs(dev: &Path, x: &Expansion) -> Result<bool, LayoutError> {
    if !matches!(x.fs_type.as_deref(), Some("ext2" | "ext3" | "ext4")) {
        return Ok(false);
    }
    let part = open_partition(dev, x.number, x.start_bytes, x.to_bytes)?;
    let node = part.path().to_path_buf();
    if clb_disk::find_mounted(&node).is_none() {
        // resize2fs refuses an unmounted filesystem that was not checked just before.
        match clb_command::run(Command::new("e2fsck").args(["-f", "-p"]).arg(&node)) {
            Ok(_) => {}
            // 1: errors were fixed, the filesystem is fine now; other codes need a human.
            Err(CommandError::Failed { status, .. }) if status.code() == Some(1) => {}
            Err(e) => {
                return Err(command_error(dev, format!("check partition {}", x.number))(
                    e,
                ));
            }
        }
    }
    clb_command::run(Command::new("resize2fs").arg(&node)).map_err(command_error(
        dev,
        format!("grow the filesystem of partition {}", x.number),
    ))?;
    drop(part);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_guid_keeps_the_uuid_error() {
        let dev = Path::new("/dev/vda");
        match parse_guid(dev, "/proc/x", "not-a-guid\n") {
            Err(LayoutError::Io { source, .. }) => {
                assert!(
                    source
                        .get_ref()
                        .is_some_and(|e| e.downcast_ref::<uuid::Error>().is_some()),
                    "{source:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_guid(dev, "/proc/x", "2c1a7e6b-8d55-4c4a-9a43-6c1f1a2e3b4d\n").is_ok());
    }

    #[test]
    fn a_failed_reread_keeps_each_cause() {
        let start = |program: &str| CommandError::Start {
            program: program.into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            both_failed(&start("blockdev"), &start("partx")),
            "cannot start blockdev: Permission denied (os error 13); \
             cannot start partx: Permission denied (os error 13)"
        );
    }
}
