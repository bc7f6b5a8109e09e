//! Filesystem type and label from on-disk superblocks, in pure Rust.
//!
//! Only the few formats a clb host uses are recognised. The checks follow what `blkid` does
//! closely enough that the labels agree, which the integration tests verify.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// What a superblock says about a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsProbe {
    /// `ext2`, `ext3`, `ext4`, `vfat`, `xfs`, `btrfs`, `squashfs`, `swap` or `iso9660`.
    pub fs_type: String,
    /// The volume label, if the filesystem has one and it is set.
    pub label: Option<String>,
}

/// Probe the filesystem starting at `offset` in `reader`. Read errors count as "nothing found";
/// use [`try_probe_label`] to see them.
pub fn probe_label<R: Read + Seek>(reader: &mut R, offset: u64) -> Option<FsProbe> {
    try_probe_label(reader, offset).ok().flatten()
}

/// Probe a file or block device at `offset`.
pub fn probe_path(path: &Path, offset: u64) -> io::Result<Option<FsProbe>> {
    let mut f = std::fs::File::open(path)?;
    try_probe_label(&mut f, offset)
}

/// Like [`probe_label`], but I/O errors are returned. Reads past the end count as zeros, so a
/// small device simply matches nothing.
pub fn try_probe_label<R: Read + Seek>(r: &mut R, offset: u64) -> io::Result<Option<FsProbe>> {
    // The first 64 KiB + 4 KiB covers every fixed-position superblock we check
    // (btrfs at 64 KiB is the furthest).
    let head = read_at(r, offset, 0x10000 + 0x1000)?;
    if let Some(p) = probe_squashfs(&head)
        .or_else(|| probe_xfs(&head))
        .or_else(|| probe_ext(&head))
        .or_else(|| probe_btrfs(&head))
        .or_else(|| probe_iso9660(&head))
        .or_else(|| probe_swap(&head))
    {
        return Ok(Some(p));
    }
    probe_vfat(r, offset, &head)
}

/// Read `len` bytes at `offset`, zero-filling anything past the end of the device.
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    r.seek(SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < len {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A NUL-terminated (or padded) label; empty means "no label".
fn label_from(bytes: &[u8], trim_spaces: bool) -> Option<String> {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    let s = String::from_utf8_lossy(&bytes[..end]);
    let s = if trim_spaces {
        s.trim_end_matches(' ')
    } else {
        &s
    };
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn found(fs_type: &str, label: Option<String>) -> Option<FsProbe> {
    Some(FsProbe {
        fs_type: fs_type.to_string(),
        label,
    })
}

fn probe_squashfs(b: &[u8]) -> Option<FsProbe> {
    // SquashFS has no label; the magic is "hsqs" (little-endian 0x73717368).
    (&b[0..4] == b"hsqs").then(|| FsProbe {
        fs_type: "squashfs".into(),
        label: None,
    })
}

fn probe_xfs(b: &[u8]) -> Option<FsProbe> {
    if &b[0..4] != b"XFSB" {
        return None;
    }
    found("xfs", label_from(&b[108..120], false))
}

// ext feature bits, as blkid uses them to tell ext2, ext3 and ext4 apart.
const EXT3_COMPAT_HAS_JOURNAL: u32 = 0x0004;
const EXT3_INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
// What ext3 understands; anything else means the filesystem needs ext4.
const EXT3_INCOMPAT_SUPPORTED: u32 = 0x0002 | 0x0004 | 0x0010; // filetype, recover, meta_bg
const EXT3_RO_COMPAT_SUPPORTED: u32 = 0x0001 | 0x0002 | 0x0004; // sparse_super, large_file, btree_dir

fn probe_ext(b: &[u8]) -> Option<FsProbe> {
    let sb = &b[1024..2048];
    if le16(sb, 56) != 0xEF53 {
        return None;
    }
    let compat = le32(sb, 92);
    let incompat = le32(sb, 96);
    let ro_compat = le32(sb, 100);
    if incompat & EXT3_INCOMPAT_JOURNAL_DEV != 0 {
        // An external journal device, not a mountable filesystem.
        return found("jbd", label_from(&sb[120..136], false));
    }
    let fs_type =
        if incompat & !EXT3_INCOMPAT_SUPPORTED != 0 || ro_compat & !EXT3_RO_COMPAT_SUPPORTED != 0 {
            "ext4"
        } else if compat & EXT3_COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
    found(fs_type, label_from(&sb[120..136], false))
}

fn probe_btrfs(b: &[u8]) -> Option<FsProbe> {
    let sb = &b[0x10000..0x11000];
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return None;
    }
    found("btrfs", label_from(&sb[0x12b..0x12b + 256], false))
}

fn probe_iso9660(b: &[u8]) -> Option<FsProbe> {
    // The primary volume descriptor is at sector 16 (of 2048 bytes).
    let pvd = &b[32768..32768 + 2048];
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    found("iso9660", label_from(&pvd[40..72], true))
}

fn probe_swap(b: &[u8]) -> Option<FsProbe> {
    // The signature sits in the last 10 bytes of the first page; the page size is the one of
    // the machine that ran mkswap, so try the usual ones.
    for page in [4096usize, 8192, 16384, 65536] {
        let sig = &b[page - 10..page];
        if sig == b"SWAPSPACE2" || sig == b"SWAP-SPACE" {
            // Header after 1024 boot bytes: version, last_page, nr_badpages (u32 each),
            // uuid[16], volume_name[16].
            let label = if sig == b"SWAPSPACE2" {
                label_from(&b[1024 + 28..1024 + 44], false)
            } else {
                None
            };
            return found("swap", label);
        }
    }
    None
}

/// FAT12/16/32. The label lives in two places: the boot sector and a volume-label entry in the
/// root directory. Like blkid, prefer the root directory entry (that is what Windows and
/// `fatlabel` update) and fall back to the boot sector.
fn probe_vfat<R: Read + Seek>(r: &mut R, offset: u64, b: &[u8]) -> io::Result<Option<FsProbe>> {
    let Some(geo) = FatGeometry::parse(b) else {
        return Ok(None);
    };
    let boot_label = if geo.fat32 {
        (b[0x42] == 0x29)
            .then(|| fat_label(&b[0x47..0x52]))
            .flatten()
    } else {
        (b[0x26] == 0x29)
            .then(|| fat_label(&b[0x2B..0x36]))
            .flatten()
    };
    let dir = read_at(r, offset + geo.root_dir_offset, geo.root_dir_len)?;
    let dir_label = fat_dir_label(&dir);
    Ok(found("vfat", dir_label.or(boot_label)))
}

/// The subset of the BIOS parameter block needed to find the root directory.
struct FatGeometry {
    fat32: bool,
    root_dir_offset: u64,
    root_dir_len: usize,
}

impl FatGeometry {
    fn parse(b: &[u8]) -> Option<Self> {
        // A jump instruction, a sane sector size and one of the FAT type strings: enough to
        // avoid mistaking an MBR (which also ends in 0x55AA) for a FAT boot sector.
        if !(b[0] == 0xEB || b[0] == 0xE9) {
            return None;
        }
        let fat32 = &b[0x52..0x57] == b"FAT32";
        let fat16 = &b[0x36..0x39] == b"FAT";
        if !fat32 && !fat16 {
            return None;
        }
        let bps = u64::from(le16(b, 11));
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return None;
        }
        let spc = u64::from(b[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return None;
        }
        let reserved = u64::from(le16(b, 14));
        let nfats = u64::from(b[16]);
        let root_entries = u64::from(le16(b, 17));
        let fat_size = match le16(b, 22) {
            0 => u64::from(le32(b, 36)),
            n => u64::from(n),
        };
        if nfats == 0 || fat_size == 0 || reserved == 0 {
            return None;
        }
        let first_data = (reserved + nfats * fat_size) * bps;
        let (root_dir_offset, root_dir_len) = if fat32 {
            // Only the first cluster of the root directory: the label entry, when present, is
            // in practice the first entry. Following the cluster chain is not worth it here.
            let root_cluster = u64::from(le32(b, 44)).max(2);
            (first_data + (root_cluster - 2) * spc * bps, spc * bps)
        } else {
            let root_start = (reserved + nfats * fat_size) * bps;
            (root_start, root_entries * 32)
        };
        Some(FatGeometry {
            fat32,
            root_dir_offset,
            // Bound the read: a corrupt BPB must not make us allocate gigabytes.
            root_dir_len: usize::try_from(root_dir_len.min(256 * 1024)).ok()?,
        })
    }
}

fn fat_label(raw: &[u8]) -> Option<String> {
    let s: String = raw.iter().map(|&c| char::from(c)).collect();
    let s = s.trim_end_matches([' ', '\0']);
    if s.is_empty() || s == "NO NAME" {
        None
    } else {
        Some(s.to_string())
    }
}

fn fat_dir_label(dir: &[u8]) -> Option<String> {
    for entry in dir.chunks_exact(32) {
        match entry[0] {
            0x00 => break,    // end of directory
            0xE5 => continue, // deleted entry
            _ => {}
        }
        let attr = entry[11];
        // 0x0F marks a long-file-name entry, which also has the volume bit set.
        if attr & 0x08 != 0 && attr & 0x0F != 0x0F {
            return fat_label(&entry[0..11]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Cursor;

    fn probe(buf: Vec<u8>) -> Option<FsProbe> {
        probe_label(&mut Cursor::new(buf), 0)
    }

    #[test]
    fn ext4_label_and_type() {
        let mut b = vec![0u8; 4096];
        b[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[1024 + 96..1024 + 100].copy_from_slice(&0x2C0u32.to_le_bytes()); // extents, 64bit, flex_bg
        b[1024 + 120..1024 + 129].copy_from_slice(b"COS_STATE");
        let p = probe(b.clone()).unwrap();
        assert_eq!(p.fs_type, "ext4");
        assert_eq!(p.label.as_deref(), Some("COS_STATE"));

        // Only a journal: ext3. Nothing: ext2.
        b[1024 + 96..1024 + 100].copy_from_slice(&0x2u32.to_le_bytes());
        b[1024 + 92..1024 + 96].copy_from_slice(&0x4u32.to_le_bytes());
        assert_eq!(probe(b.clone()).unwrap().fs_type, "ext3");
        b[1024 + 92..1024 + 96].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(probe(b.clone()).unwrap().fs_type, "ext2");

        // A full 16-byte label has no terminating NUL.
        b[1024 + 120..1024 + 136].copy_from_slice(b"ABCDEFGHIJKLMNOP");
        assert_eq!(probe(b).unwrap().label.as_deref(), Some("ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn ext_without_label() {
        let mut b = vec![0u8; 2048];
        b[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(probe(b).unwrap().label, None);
    }

    #[test]
    fn probe_honours_offset() {
        let mut b = vec![0u8; 1 << 20];
        let off = 512 * 1024;
        b[off..off + 4].copy_from_slice(b"XFSB");
        b[off + 108..off + 116].copy_from_slice(b"COS_OEM\0");
        assert_eq!(probe_label(&mut Cursor::new(b.clone()), 0), None);
        let p = probe_label(&mut Cursor::new(b), off as u64).unwrap();
        assert_eq!(p.fs_type, "xfs");
        assert_eq!(p.label.as_deref(), Some("COS_OEM"));
    }

    #[test]
    fn squashfs_has_no_label() {
        let mut b = vec![0u8; 100];
        b[0..4].copy_from_slice(b"hsqs");
        let p = probe(b).unwrap();
        assert_eq!(p.fs_type, "squashfs");
        assert_eq!(p.label, None);
    }

    #[test]
    fn swap_label() {
        let mut b = vec![0u8; 8192];
        b[4096 - 10..4096].copy_from_slice(b"SWAPSPACE2");
        b[1024 + 28..1024 + 32].copy_from_slice(b"SWAP");
        let p = probe(b).unwrap();
        assert_eq!(p.fs_type, "swap");
        assert_eq!(p.label.as_deref(), Some("SWAP"));
    }

    #[test]
    fn iso9660_volume_id() {
        let mut b = vec![0u8; 40000];
        b[32768] = 1;
        b[32769..32774].copy_from_slice(b"CD001");
        let mut id = [b' '; 32];
        id[..8].copy_from_slice(b"COS_ISO1");
        b[32768 + 40..32768 + 72].copy_from_slice(&id);
        let p = probe(b).unwrap();
        assert_eq!(p.fs_type, "iso9660");
        assert_eq!(p.label.as_deref(), Some("COS_ISO1"));
    }

    #[test]
    fn btrfs_label() {
        let mut b = vec![0u8; 0x11000];
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        b[0x1012b..0x10130].copy_from_slice(b"BTRFS");
        assert_eq!(probe(b).unwrap().label.as_deref(), Some("BTRFS"));
    }

    fn fat16_boot(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4; // sectors per cluster
        b[14..16].copy_from_slice(&1u16.to_le_bytes()); // reserved
        b[16] = 2; // FATs
        b[17..19].copy_from_slice(&512u16.to_le_bytes()); // root entries
        b[22..24].copy_from_slice(&8u16.to_le_bytes()); // FAT size
        b[0x26] = 0x29;
        b[0x2B..0x36].copy_from_slice(label);
        b[0x36..0x3E].copy_from_slice(b"FAT16   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat16_boot_sector_label_and_root_dir_label() {
        let b = fat16_boot(b"BOOTLABEL  ");
        assert_eq!(
            probe(b.clone()).unwrap().label.as_deref(),
            Some("BOOTLABEL")
        );

        // A volume-label entry in the root directory wins, like in blkid.
        let mut b2 = b.clone();
        let root = (1 + 2 * 8) * 512;
        b2[root..root + 11].copy_from_slice(b"DIRLABEL   ");
        b2[root + 11] = 0x08;
        assert_eq!(probe(b2).unwrap().label.as_deref(), Some("DIRLABEL"));

        // "NO NAME" means no label.
        let b3 = fat16_boot(b"NO NAME    ");
        let p = probe(b3).unwrap();
        assert_eq!(p.fs_type, "vfat");
        assert_eq!(p.label, None);
    }

    #[test]
    fn mbr_is_not_fat() {
        let mut b = vec![0u8; 4096];
        b[0] = 0xEB;
        b[510] = 0x55;
        b[511] = 0xAA;
        assert_eq!(probe(b), None);
    }

    #[test]
    fn vfat_made_by_mkfs_vfat() {
        // mkfs.vfat is required: a missing tool must fail the test, not skip it.
        let dir = tempfile::tempdir().unwrap();
        for (size_kib, fat_bits, spc) in [
            (1024, "12", "4"),
            (8 * 1024, "16", "1"),
            (40 * 1024, "32", "1"),
        ] {
            let img = dir.path().join(format!("fat{fat_bits}.img"));
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(size_kib * 1024).unwrap();
            drop(f);
            let out = std::process::Command::new("mkfs.vfat")
                .args(["-F", fat_bits, "-s", spc, "-n", "COS_GRUB"])
                .arg(&img)
                .output()
                .expect("mkfs.vfat must be installed (apt-get install dosfstools)");
            assert!(out.status.success(), "{out:?}");
            let p = probe_path(&img, 0).unwrap().unwrap();
            assert_eq!(p.fs_type, "vfat");
            assert_eq!(p.label.as_deref(), Some("COS_GRUB"), "FAT{fat_bits}");
        }
    }
}
