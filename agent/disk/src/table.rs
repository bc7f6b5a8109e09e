//! Partition tables (GPT, else MBR primaries) and finding a partition by filesystem label.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use gpt::disk::LogicalBlockSize;

use crate::error::{DiskError, Result};
use crate::probe::probe_label;

/// One partition of a disk image or block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number as the kernel and `sgdisk` count it (1-based).
    pub number: u32,
    /// Byte offset of the first sector from the start of the disk.
    pub start_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// GPT partition name (not the filesystem label); `None` on MBR.
    pub part_name: Option<String>,
    /// GPT partition type GUID, lowercase hyphenated; `None` on MBR.
    pub type_guid: Option<String>,
    /// MBR partition type byte; `None` on GPT.
    pub mbr_type: Option<u8>,
    /// Filesystem found in the partition, if any.
    pub fs_type: Option<String>,
    /// Filesystem label, if any.
    pub fs_label: Option<String>,
}

/// List the partitions of a disk image or whole-disk block device, with their filesystem labels.
pub fn list_partitions(disk: &Path) -> Result<Vec<PartitionInfo>> {
    let mut parts = read_table(disk)?;
    let mut f =
        File::open(disk).map_err(|e| DiskError::io(format!("open {}", disk.display()), e))?;
    for p in &mut parts {
        if let Some(probe) = probe_label(&mut f, p.start_bytes) {
            p.fs_type = Some(probe.fs_type);
            p.fs_label = probe.label;
        }
    }
    Ok(parts)
}

/// The partition whose filesystem label is `label`. Several matches are an error: picking one
/// would be a guess, and a wrong guess here writes an upgrade to the wrong partition.
pub fn find_by_label(disk: &Path, label: &str) -> Result<PartitionInfo> {
    let parts = list_partitions(disk)?;
    let mut matching: Vec<PartitionInfo> = parts
        .into_iter()
        .filter(|p| p.fs_label.as_deref() == Some(label))
        .collect();
    match matching.len() {
        0 => Err(DiskError::LabelNotFound {
            label: label.to_string(),
            searched: disk.display().to_string(),
        }),
        1 => Ok(matching.remove(0)),
        _ => Err(DiskError::DuplicateLabel {
            label: label.to_string(),
            partitions: matching
                .iter()
                .map(|p| format!("{} partition {}", disk.display(), p.number))
                .collect(),
        }),
    }
}

fn read_table(disk: &Path) -> Result<Vec<PartitionInfo>> {
    let gpt_err = match read_gpt(disk) {
        Ok(parts) => return Ok(parts),
        Err(e) => e,
    };
    match read_mbr(disk)? {
        Some(parts) => Ok(parts),
        None => Err(DiskError::NoPartitionTable {
            disk: disk.to_path_buf(),
            reason: format!("no GPT ({gpt_err}) and no MBR"),
        }),
    }
}

/// Sector sizes to try. A block device tells us its logical block size; an image file does not,
/// so try 512 first (almost every image) and then 4096.
fn block_sizes(disk: &Path) -> Vec<LogicalBlockSize> {
    let is_blockdev = std::fs::metadata(disk)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if is_blockdev && let Some(size) = sysfs_logical_block_size(disk) {
        return match size {
            4096 => vec![LogicalBlockSize::Lb4096],
            _ => vec![LogicalBlockSize::Lb512],
        };
    }
    vec![LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096]
}

fn sysfs_logical_block_size(dev: &Path) -> Option<u64> {
    let real = std::fs::canonicalize(dev).ok()?;
    let name = real.file_name()?.to_str()?;
    let s = std::fs::read_to_string(format!("/sys/class/block/{name}/queue/logical_block_size"))
        .ok()?;
    s.trim().parse().ok()
}

fn read_gpt(disk: &Path) -> std::result::Result<Vec<PartitionInfo>, String> {
    let mut last_err = String::new();
    for lb in block_sizes(disk) {
        let cfg = gpt::GptConfig::new().writable(false).logical_block_size(lb);
        let g = match cfg.open(disk) {
            Ok(g) => g,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        let lb_bytes = u64::from(lb);
        let parts = g
            .partitions()
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(&number, p)| PartitionInfo {
                number,
                start_bytes: p.first_lba * lb_bytes,
                size_bytes: (p.last_lba + 1).saturating_sub(p.first_lba) * lb_bytes,
                part_name: Some(p.name.clone()),
                type_guid: Some(p.part_type_guid.guid.to_string()),
                mbr_type: None,
                fs_type: None,
                fs_label: None,
            })
            .collect();
        return Ok(parts);
    }
    Err(last_err)
}

/// MBR primary partitions (extended/logical partitions are not supported: clb never creates
/// them). `Ok(None)` when sector 0 is not an MBR.
fn read_mbr(disk: &Path) -> Result<Option<Vec<PartitionInfo>>> {
    let ctx = || format!("read MBR of {}", disk.display());
    let mut f = File::open(disk).map_err(|e| DiskError::io(ctx(), e))?;
    let mut s0 = [0u8; 512];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut s0))
        .map_err(|e| DiskError::io(ctx(), e))?;
    if s0[510] != 0x55 || s0[511] != 0xAA {
        return Ok(None);
    }
    // A FAT boot sector also ends in 0x55AA: a filesystem on the whole disk is not an MBR.
    if probe_label(&mut f, 0).is_some() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for i in 0..4u32 {
        let at = 446 + 16 * i as usize;
        let e = &s0[at..at + 16];
        let status = e[0];
        let ptype = e[4];
        if status != 0x00 && status != 0x80 {
            return Ok(None); // not a partition table
        }
        if ptype == 0xEE {
            // Protective MBR but the GPT could not be read: do not invent partitions.
            return Ok(None);
        }
        let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
        if ptype == 0 || sectors == 0 || matches!(ptype, 0x05 | 0x0F | 0x85) {
            continue;
        }
        parts.push(PartitionInfo {
            number: i + 1,
            start_bytes: start * 512,
            size_bytes: sectors * 512,
            part_name: None,
            type_guid: None,
            mbr_type: Some(ptype),
            fs_type: None,
            fs_label: None,
        });
    }
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn mbr_primaries() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("mbr.img");
        let mut b = vec![0u8; 4 * 1024 * 1024];
        // Partition 1: type 0x83 at sector 2048, 2048 sectors. Partition 2: extended, skipped.
        b[446 + 4] = 0x83;
        b[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        b[446 + 12..446 + 16].copy_from_slice(&2048u32.to_le_bytes());
        b[462 + 4] = 0x05;
        b[462 + 8..462 + 12].copy_from_slice(&4096u32.to_le_bytes());
        b[462 + 12..462 + 16].copy_from_slice(&10u32.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        // An ext4 label inside partition 1.
        let sb = 2048 * 512 + 1024;
        b[sb + 56..sb + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[sb + 120..sb + 127].copy_from_slice(b"COS_OEM");
        std::fs::write(&img, &b).unwrap();

        let parts = list_partitions(&img).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].start_bytes, 1024 * 1024);
        assert_eq!(parts[0].size_bytes, 1024 * 1024);
        assert_eq!(parts[0].mbr_type, Some(0x83));
        assert_eq!(find_by_label(&img, "COS_OEM").unwrap().number, 1);
    }

    #[test]
    fn blank_disk_has_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::write(&img, vec![0u8; 1024 * 1024]).unwrap();
        assert!(matches!(
            list_partitions(&img),
            Err(DiskError::NoPartitionTable { .. })
        ));
    }
}
