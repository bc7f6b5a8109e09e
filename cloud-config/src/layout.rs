//! `layout`: GPT partitioning with the gpt crate, filesystems through the `mkfs.*` tools.
//!
//! The plan is computed from the disk as it is, before anything is written, and refuses any
//! disk it would have to guess about (see [`plan_layout`]). Applying a plan a second time
//! finds every partition in place and does nothing.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt::disk::LogicalBlockSize;
use serde::Serialize;

use clb_command::CommandError;

use crate::ctx::Ctx;
use crate::error::Error;
use crate::schema::{Layout, Partition};

const MIB: u64 = 1 << 20;

/// What happens to one partition of the requested layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartAction {
    /// Already there with the right label, type and size.
    Keep,
    /// There (created by an interrupted run) but without its filesystem: format it.
    Format,
    /// To be created and formatted.
    Create,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPartition {
    /// Partition number (1-based, as `sgdisk` and the kernel count).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT partition name.
    pub p_label: String,
    pub fs_label: String,
    /// Normalised: ext2, ext3, ext4, xfs, vfat, swap, btrfs, noformat.
    pub filesystem: String,
    pub action: PartAction,
}

/// Growing the last partition that is not part of `add_partitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expansion {
    pub number: u32,
    pub start_bytes: u64,
    pub from_bytes: u64,
    pub to_bytes: u64,
    /// Filesystem found in it (grown too when ext2/3/4).
    pub fs_type: Option<String>,
}

/// The changes `layout` would make to a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutPlan {
    pub device: PathBuf,
    pub sector_size: u64,
    /// The disk has no partition table: a new GPT is written.
    pub new_table: bool,
    /// None when nothing grows (not asked, or already that large).
    pub expand: Option<Expansion>,
    pub partitions: Vec<PlannedPartition>,
}

impl LayoutPlan {
    /// True when applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        !self.new_table
            && self.expand.is_none()
            && self.partitions.iter().all(|p| p.action == PartAction::Keep)
    }
}

fn layout_err(device: &Path, message: impl Into<String>) -> Error {
    Error::Layout {
        device: device.to_path_buf(),
        message: message.into(),
    }
}

/// The filesystem name clb uses for a requested `filesystem`.
fn normalise_fs(fs: &str) -> Option<&'static str> {
    Some(match fs.to_ascii_lowercase().as_str() {
        "" | "ext4" => "ext4",
        "ext3" => "ext3",
        "ext2" => "ext2",
        "xfs" => "xfs",
        "vfat" | "fat" | "fat32" => "vfat",
        "swap" => "swap",
        "btrfs" => "btrfs",
        "noformat" | "none" => "noformat",
        _ => return None,
    })
}

fn label_limit(fs: &str) -> usize {
    match fs {
        "xfs" => 12,
        "vfat" => 11,
        "btrfs" => 255,
        _ => 16,
    }
}

/// The disk `layout.device` names: `path` as given (a partition node means its disk), or the
/// one disk holding a filesystem labelled `label`.
fn resolve_device(layout: &Layout) -> Result<PathBuf, Error> {
    let Some(dev) = &layout.device else {
        return Err(layout_err(
            Path::new(""),
            "layout needs device.path or device.label",
        ));
    };
    if !dev.path.is_empty() {
        let p = PathBuf::from(&dev.path);
        return Ok(parent_disk(&p).unwrap_or(p));
    }
    if dev.label.is_empty() {
        return Err(layout_err(
            Path::new(""),
            "layout needs device.path or device.label",
        ));
    }
    let mut found = Vec::new();
    let entries = std::fs::read_dir("/sys/block").map_err(|e| Error::io("read /sys/block", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let disk = PathBuf::from("/dev").join(&name);
        if let Ok(parts) = clb_disk::list_partitions(&disk)
            && parts
                .iter()
                .any(|p| p.fs_label.as_deref() == Some(dev.label.as_str()))
        {
            found.push(disk);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(layout_err(
            Path::new(""),
            format!("no disk has a filesystem labelled {:?}", dev.label),
        )),
        _ => Err(layout_err(
            Path::new(""),
            format!(
                "several disks have a filesystem labelled {:?}: {found:?}",
                dev.label
            ),
        )),
    }
}

/// `/dev/sda` for `/dev/sda2` (through sysfs), None when `p` is not a partition node.
fn parent_disk(p: &Path) -> Option<PathBuf> {
    let md = std::fs::metadata(p).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let real = std::fs::canonicalize(p).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let sys = std::fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
    if !sys.join("partition").exists() {
        return None;
    }
    let parent = sys.parent()?.file_name()?.to_str()?.to_string();
    Some(PathBuf::from("/dev").join(parent))
}

fn is_block(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// Open the GPT for reading at 512 then 4096 bytes per sector. Ok(None): no GPT at all.
fn open_gpt(device: &Path, writable: bool) -> Result<Option<gpt::GptDisk<std::fs::File>>, Error> {
    let mut last = String::new();
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        match gpt::GptConfig::new()
            .writable(writable)
            .logical_block_size(lb)
            .open(device)
        {
            Ok(d) => return Ok(Some(d)),
            Err(e) => last = e.to_string(),
        }
    }
    tracing::debug!(device = %device.display(), "no GPT: {last}");
    Ok(None)
}

fn device_size(device: &Path) -> Result<u64, Error> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(device)
        .map_err(|e| Error::io(format!("open {}", device.display()), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of {}", device.display()), e))
}

fn sector_size(device: &Path) -> u64 {
    if is_block(device)
        && let Some(name) = std::fs::canonicalize(device)
            .ok()
            .and_then(|r| r.file_name().map(|n| n.to_string_lossy().into_owned()))
        && let Ok(s) =
            std::fs::read_to_string(format!("/sys/class/block/{name}/queue/logical_block_size"))
        && let Ok(n) = s.trim().parse::<u64>()
    {
        return n;
    }
    512
}

/// A partition as found on the disk.
#[derive(Debug, Clone)]
struct Existing {
    number: u32,
    first_lba: u64,
    last_lba: u64,
    name: String,
    fs_type: Option<String>,
    fs_label: Option<String>,
}

/// What is on the disk: sector size, usable range, partitions sorted by start.
struct DiskState {
    lb: u64,
    has_gpt: bool,
    first_usable: u64,
    last_usable: u64,
    parts: Vec<Existing>,
}

fn read_state(device: &Path) -> Result<DiskState, Error> {
    let size = device_size(device)?;
    match open_gpt(device, false)? {
        Some(disk) => {
            let lb: u64 = (*disk.logical_block_size()).into();
            let header = disk.header();
            let mut parts: Vec<Existing> = disk
                .partitions()
                .iter()
                .filter(|(_, p)| p.is_used())
                .map(|(n, p)| Existing {
                    number: *n,
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    name: p.name.clone(),
                    fs_type: None,
                    fs_label: None,
                })
                .collect();
            let mut f = std::fs::File::open(device)
                .map_err(|e| Error::io(format!("open {}", device.display()), e))?;
            for p in &mut parts {
                if let Some(probe) = clb_disk::probe_label(&mut f, p.first_lba * lb) {
                    p.fs_type = Some(probe.fs_type);
                    p.fs_label = probe.label;
                }
            }
            parts.sort_by_key(|p| p.first_lba);
            // A disk that grew since the table was written (cloud volume resized): the usable
            // range is recomputed from the real size when the table is rewritten.
            let array_lbs = (128 * 128u64).div_ceil(lb);
            let last_usable = (size / lb)
                .saturating_sub(1 + array_lbs + 1)
                .max(header.last_usable);
            Ok(DiskState {
                lb,
                has_gpt: true,
                first_usable: header.first_usable,
                last_usable,
                parts,
            })
        }
        None => {
            // No GPT: refuse anything else that looks like a table (MBR partitions, a
            // filesystem on the whole disk) instead of overwriting it.
            match clb_disk::list_partitions(device) {
                Ok(parts) if !parts.is_empty() => {
                    return Err(layout_err(
                        device,
                        "has an MBR partition table; only GPT disks are laid out",
                    ));
                }
                _ => {}
            }
            let mut f = std::fs::File::open(device)
                .map_err(|e| Error::io(format!("open {}", device.display()), e))?;
            if let Some(probe) = clb_disk::probe_label(&mut f, 0) {
                return Err(layout_err(
                    device,
                    format!(
                        "holds a {} filesystem on the whole disk; refusing to partition it",
                        probe.fs_type
                    ),
                ));
            }
            let lb = sector_size(device);
            let array_lbs = (128 * 128u64).div_ceil(lb);
            Ok(DiskState {
                lb,
                has_gpt: false,
                first_usable: 2 + array_lbs,
                last_usable: (size / lb).saturating_sub(2 + array_lbs),
                parts: Vec::new(),
            })
        }
    }
}

/// Work out what `layout` changes on its disk, refusing when the disk does not fit:
///
/// * partitions of `add_partitions` already on the disk are found by filesystem label (or,
///   without one, by GPT name) and must have the requested GPT name, filesystem and size;
/// * those found must be the first ones of the list and the last ones on the disk, in order
///   (anything else means someone else laid this disk out);
/// * the missing ones are appended, 1 MiB aligned, and must fit; `size: 0` (the rest) is
///   allowed only for the last one.
///
/// `expand_partition` grows the last partition that is not one of `add_partitions`, before
/// adding (like yip); it never shrinks.
pub fn plan_layout(layout: &Layout) -> Result<LayoutPlan, Error> {
    let device = resolve_device(layout)?;
    let state = read_state(&device)?;
    plan_for(&device, layout, &state)
}

fn plan_for(device: &Path, layout: &Layout, state: &DiskState) -> Result<LayoutPlan, Error> {
    let lb = state.lb;
    let align = (MIB / lb).max(1);
    let wanted: Vec<(&Partition, &'static str, String)> = layout
        .add_partitions
        .iter()
        .map(|p| {
            let fs = normalise_fs(&p.filesystem).ok_or_else(|| {
                layout_err(device, format!("unsupported filesystem {:?}", p.filesystem))
            })?;
            if p.fs_label.is_empty() && p.p_label.is_empty() {
                return Err(layout_err(
                    device,
                    "every partition needs fsLabel or pLabel (to find it again on a re-run)",
                ));
            }
            if p.fs_label.len() > label_limit(fs) {
                return Err(layout_err(
                    device,
                    format!("label {:?} too long for {fs}", p.fs_label),
                ));
            }
            let gpt_name = if p.p_label.is_empty() {
                p.fs_label.clone()
            } else {
                p.p_label.clone()
            };
            if gpt_name.encode_utf16().count() > 36 {
                return Err(layout_err(device, format!("pLabel {gpt_name:?} too long")));
            }
            Ok((p, fs, gpt_name))
        })
        .collect::<Result<_, _>>()?;
    if let Some(i) = wanted.iter().position(|(p, _, _)| p.size == 0)
        && i + 1 != wanted.len()
    {
        return Err(layout_err(
            device,
            "only the last partition may have size 0 (the rest of the disk)",
        ));
    }
    // Find each wanted partition on the disk.
    let mut matched: Vec<Option<usize>> = Vec::new();
    for (p, _, gpt_name) in &wanted {
        let by_label: Vec<usize> = state
            .parts
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                if p.fs_label.is_empty() {
                    e.name == *gpt_name
                } else {
                    e.fs_label.as_deref() == Some(p.fs_label.as_str())
                        || (e.fs_type.is_none() && e.name == *gpt_name)
                }
            })
            .map(|(i, _)| i)
            .collect();
        match by_label.len() {
            0 => matched.push(None),
            1 => matched.push(Some(by_label[0])),
            _ => {
                return Err(layout_err(
                    device,
                    format!("several partitions match {gpt_name:?}; refusing to guess"),
                ));
            }
        }
    }
    let present = matched.iter().take_while(|m| m.is_some()).count();
    if matched[present..].iter().any(Option::is_some) {
        return Err(layout_err(
            device,
            "some requested partitions exist but an earlier one of the list does not",
        ));
    }
    let tail_start = state.parts.len().checked_sub(present).ok_or_else(|| {
        layout_err(
            device,
            "fewer partitions on disk than matched (internal error)",
        )
    })?;
    for (k, m) in matched[..present].iter().enumerate() {
        if *m != Some(tail_start + k) {
            return Err(layout_err(
                device,
                format!(
                    "partition {:?} is not where the layout puts it (other partitions follow it)",
                    wanted[k].2
                ),
            ));
        }
    }
    let mut parts = Vec::new();
    for (k, (p, fs, gpt_name)) in wanted.iter().enumerate().take(present) {
        let e = &state.parts[tail_start + k];
        let size = (e.last_lba - e.first_lba + 1) * lb;
        if e.name != *gpt_name {
            return Err(layout_err(
                device,
                format!(
                    "partition {} is named {:?}, the layout wants {gpt_name:?}",
                    e.number, e.name
                ),
            ));
        }
        if p.size != 0 && size != p.size * MIB {
            return Err(layout_err(
                device,
                format!(
                    "partition {} ({gpt_name}) is {size} bytes, the layout wants {} MiB",
                    e.number, p.size
                ),
            ));
        }
        let action = match (&e.fs_type, *fs) {
            (_, "noformat") => PartAction::Keep,
            (None, _) => PartAction::Format,
            (Some(t), want) if t == want => PartAction::Keep,
            (Some(t), want) => {
                return Err(layout_err(
                    device,
                    format!(
                        "partition {} ({gpt_name}) holds {t}, the layout wants {want}",
                        e.number
                    ),
                ));
            }
        };
        parts.push(PlannedPartition {
            number: e.number,
            start_bytes: e.first_lba * lb,
            size_bytes: size,
            p_label: gpt_name.clone(),
            fs_label: p.fs_label.clone(),
            filesystem: fs.to_string(),
            action,
        });
    }
    // Expansion: the last partition before the requested ones.
    let mut expand = None;
    let mut end_lba = state.parts[..tail_start]
        .last()
        .map(|e| e.last_lba)
        .unwrap_or(0);
    if let Some(x) = &layout.expand_partition {
        let Some(e) = state.parts[..tail_start].last() else {
            return Err(layout_err(
                device,
                "expand_partition: the disk has no partition to grow",
            ));
        };
        let limit = state
            .parts
            .get(tail_start)
            .map(|n| n.first_lba - 1)
            .unwrap_or(state.last_usable);
        let target = if x.size == 0 {
            limit
        } else {
            e.first_lba + x.size * MIB / lb - 1
        };
        if target > limit {
            return Err(layout_err(
                device,
                format!(
                    "expand_partition: {} MiB does not fit (at most {} MiB)",
                    x.size,
                    (limit - e.first_lba + 1) * lb / MIB
                ),
            ));
        }
        if target > e.last_lba {
            expand = Some(Expansion {
                number: e.number,
                start_bytes: e.first_lba * lb,
                from_bytes: (e.last_lba - e.first_lba + 1) * lb,
                to_bytes: (target - e.first_lba + 1) * lb,
                fs_type: e.fs_type.clone(),
            });
            end_lba = target;
        }
    }
    if let Some(last) = state.parts.last().filter(|_| present > 0) {
        end_lba = last.last_lba;
    }
    // New partitions, appended after the last one.
    let first_new = state.parts.iter().map(|e| e.number).max().unwrap_or(0) + 1;
    for (next_number, (p, fs, gpt_name)) in (first_new..).zip(wanted.iter().skip(present)) {
        let start = (end_lba + 1).max(state.first_usable).div_ceil(align) * align;
        let last = if p.size == 0 {
            state.last_usable
        } else {
            start + p.size * MIB / lb - 1
        };
        if last > state.last_usable || last < start + align - 1 {
            return Err(layout_err(
                device,
                format!(
                    "partition {gpt_name:?} ({} MiB) does not fit: {} MiB free",
                    p.size,
                    (state.last_usable + 1).saturating_sub(start) * lb / MIB
                ),
            ));
        }
        parts.push(PlannedPartition {
            number: next_number,
            start_bytes: start * lb,
            size_bytes: (last - start + 1) * lb,
            p_label: gpt_name.clone(),
            fs_label: p.fs_label.clone(),
            filesystem: fs.to_string(),
            action: PartAction::Create,
        });
        end_lba = last;
    }
    Ok(LayoutPlan {
        device: device.to_path_buf(),
        sector_size: lb,
        new_table: !state.has_gpt && (!parts.is_empty() || expand.is_some()),
        expand,
        partitions: parts,
    })
}

/// The step part: plan, then apply (or in dry run, describe).
pub(crate) fn apply(ctx: &mut Ctx, layout: &Layout) -> Result<(), String> {
    let plan = plan_layout(layout).map_err(|e| e.to_string())?;
    if plan.is_noop() {
        return Ok(());
    }
    let dev = plan.device.display().to_string();
    if plan.new_table {
        ctx.act(format!("write a new GPT on {dev}"));
    }
    if let Some(x) = &plan.expand {
        ctx.act(format!(
            "grow partition {} of {dev} from {} to {} MiB",
            x.number,
            x.from_bytes / MIB,
            x.to_bytes / MIB
        ));
    }
    for p in &plan.partitions {
        match p.action {
            PartAction::Keep => {}
            PartAction::Create => {
                ctx.act(format!(
                    "create partition {} {:?} on {dev} ({} MiB at {} MiB) and format it {} {:?}",
                    p.number,
                    p.p_label,
                    p.size_bytes / MIB,
                    p.start_bytes / MIB,
                    p.filesystem,
                    p.fs_label
                ));
            }
            PartAction::Format => {
                ctx.act(format!(
                    "format partition {} of {dev} as {} {:?}",
                    p.number, p.filesystem, p.fs_label
                ));
            }
        }
    }
    if ctx.dry_run {
        return Ok(());
    }
    write_table(&plan).map_err(|e| e.to_string())?;
    if let Err(e) = reread(&plan.device) {
        ctx.notes
            .push(format!("kernel not told about the new table: {e}"));
    }
    for p in &plan.partitions {
        if p.action != PartAction::Keep {
            format(&plan.device, p)?;
        }
    }
    if let Some(x) = &plan.expand {
        grow_fs(ctx, &plan.device, x)?;
    }
    Ok(())
}

fn part_type(fs: &str) -> gpt::partition_types::Type {
    match fs {
        "swap" => gpt::partition_types::LINUX_SWAP,
        // vfat is the EFI system partition in every cOS/Elemental layout.
        "vfat" => gpt::partition_types::EFI,
        _ => gpt::partition_types::LINUX_FS,
    }
}

fn write_table(plan: &LayoutPlan) -> Result<(), Error> {
    let dev = &plan.device;
    let gpt_err = |e: gpt::GptError| layout_err(dev, format!("GPT: {e}"));
    let lb = match plan.sector_size {
        4096 => LogicalBlockSize::Lb4096,
        _ => LogicalBlockSize::Lb512,
    };
    let mut disk = if plan.new_table {
        gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(lb)
            .create(dev)
            .map_err(gpt_err)?
    } else {
        open_gpt(dev, true)?.ok_or_else(|| layout_err(dev, "GPT vanished"))?
    };
    let lbs = plan.sector_size;
    let mut map = disk.take_partitions();
    if let Some(x) = &plan.expand {
        let p = map
            .get_mut(&x.number)
            .ok_or_else(|| layout_err(dev, format!("partition {} vanished", x.number)))?;
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
                part_type_guid: part_type(&p.filesystem),
                part_guid: new_guid()?,
                first_lba: p.start_bytes / lbs,
                last_lba: (p.start_bytes + p.size_bytes) / lbs - 1,
                flags: 0,
                name: p.p_label.clone(),
            },
        );
    }
    // update_partitions recomputes both headers for the device's current size, which also
    // moves the backup header to the end of a disk that grew.
    disk.update_partitions(map).map_err(gpt_err)?;
    disk.write_inplace().map_err(gpt_err)?;
    if plan.new_table {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(|e| Error::io(format!("open {}", dev.display()), e))?;
        let sectors = device_size(dev)? / lbs;
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
            u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX),
        );
        mbr.update_conservative(&mut f)
            .map_err(|e| layout_err(dev, format!("protective MBR: {e}")))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("sync {}", dev.display()), e))?;
    }
    Ok(())
}

/// A random (v4) partition GUID from the kernel's generator.
fn new_guid() -> Result<uuid::Uuid, Error> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| Error::io("read /proc/sys/kernel/random/uuid", e))?;
    uuid::Uuid::parse_str(s.trim())
        .map_err(|e| layout_err(Path::new(""), format!("bad uuid from the kernel: {e}")))
}

/// Ask the kernel to re-read the table of a block device (nothing to do for image files).
fn reread(dev: &Path) -> Result<(), String> {
    if !is_block(dev) {
        return Ok(());
    }
    clb_command::run(Command::new("blockdev").arg("--rereadpt").arg(dev))
        .or_else(|e1| {
            clb_command::run(Command::new("partx").arg("-u").arg(dev))
                .map_err(|e2| format!("{e1}; {e2}"))
        })
        .map(|_| ())
}

fn format(dev: &Path, p: &PlannedPartition) -> Result<(), String> {
    if p.filesystem == "noformat" {
        return Ok(());
    }
    let part = clb_disk::PartitionDevice::open(dev, p.number, p.start_bytes, p.size_bytes, false)
        .map_err(|e| format!("open partition {}: {e}", p.number))?;
    let node = part.path().to_path_buf();
    let mut cmd = match p.filesystem.as_str() {
        "ext2" | "ext3" | "ext4" => {
            let mut c = Command::new(format!("mkfs.{}", p.filesystem));
            c.args(["-F", "-q"]);
            if !p.fs_label.is_empty() {
                c.arg("-L").arg(&p.fs_label);
            }
            c
        }
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-f", "-q"]);
            if !p.fs_label.is_empty() {
                c.arg("-L").arg(&p.fs_label);
            }
            c
        }
        "btrfs" => {
            let mut c = Command::new("mkfs.btrfs");
            c.args(["-f", "-q"]);
            if !p.fs_label.is_empty() {
                c.arg("-L").arg(&p.fs_label);
            }
            c
        }
        "vfat" => {
            let mut c = Command::new("mkfs.vfat");
            // -I: we format a partition we just created. Without it mkfs.vfat refuses a
            // device that it thinks has partitions, e.g. a reused loop device whose stale
            // partition entries linger in sysfs.
            c.arg("-I");
            if !p.fs_label.is_empty() {
                c.arg("-n").arg(&p.fs_label);
            }
            c
        }
        "swap" => {
            let mut c = Command::new("mkswap");
            if !p.fs_label.is_empty() {
                c.arg("-L").arg(&p.fs_label);
            }
            c
        }
        other => return Err(format!("unsupported filesystem {other}")),
    };
    cmd.arg(&node);
    let r = clb_command::run(&mut cmd)
        .map(|_| ())
        .map_err(|e| e.to_string());
    drop(part);
    r
}

fn grow_fs(ctx: &mut Ctx, dev: &Path, x: &Expansion) -> Result<(), String> {
    match x.fs_type.as_deref() {
        Some("ext2" | "ext3" | "ext4") => {
            let part =
                clb_disk::PartitionDevice::open(dev, x.number, x.start_bytes, x.to_bytes, false)
                    .map_err(|e| format!("open partition {}: {e}", x.number))?;
            let node = part.path().to_path_buf();
            let mounted = clb_disk::find_mounted(&node).is_some();
            if !mounted {
                // resize2fs refuses an unmounted filesystem that was not checked just before.
                match clb_command::run(Command::new("e2fsck").args(["-f", "-p"]).arg(&node)) {
                    Ok(_) => {}
                    // 1: errors were fixed, the filesystem is fine now; other codes need a human.
                    Err(CommandError::Failed { status, .. }) if status.code() == Some(1) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            ctx.actions.push(format!(
                "resize2fs partition {} of {}",
                x.number,
                dev.display()
            ));
            clb_command::run(Command::new("resize2fs").arg(&node))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Some(other) => {
            ctx.notes.push(format!(
                "partition {} grown; its {other} filesystem was left at its size (only ext2/3/4 are grown)",
                x.number
            ));
            Ok(())
        }
        None => Ok(()),
    }
}
