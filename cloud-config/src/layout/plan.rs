//! Planning a layout: find the disk, read what is on it, and work out the changes, refusing
//! any disk the layout would have to guess about. Nothing here writes.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use serde::Serialize;

use super::error::{LayoutError, Refusal};
use crate::schema::{Filesystem, Layout, Partition};

pub(crate) const MIB: u64 = 1 << 20;
/// Bytes of a GPT partition array: 128 entries of 128 bytes.
const GPT_ARRAY_BYTES: u64 = 128 * 128;
/// A GPT partition name holds 36 UTF-16 code units.
const GPT_NAME_UNITS: usize = 36;

/// What happens to one partition of the requested layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    pub filesystem: Filesystem,
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
    /// The disk GUID of a new table (`init_disk` with `disk_name`), else a random one.
    #[serde(serialize_with = "guid_text")]
    pub disk_guid: Option<uuid::Uuid>,
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
pub fn plan_layout(layout: &Layout) -> Result<LayoutPlan, LayoutError> {
    let device = resolve_device(layout)?;
    let state = read_state(&device)?;
    plan_for(&device, layout, &state)
}

pub(crate) fn refused(device: &Path, problem: Refusal) -> LayoutError {
    LayoutError::Refused {
        device: device.to_path_buf(),
        problem,
    }
}

pub(crate) fn io_error(
    device: &Path,
    action: String,
) -> impl FnOnce(std::io::Error) -> LayoutError {
    let device = device.to_path_buf();
    move |source| LayoutError::Io {
        device,
        action,
        source,
    }
}

/// The disk `layout.device` names: `path` as given (a partition node means its disk), or the
/// one disk holding a filesystem labelled `label`.
fn resolve_device(layout: &Layout) -> Result<PathBuf, LayoutError> {
    let dev = layout.device.as_ref().ok_or(LayoutError::NoDevice)?;
    if let Some(script) = dev.path.strip_prefix("script://") {
        let p = PathBuf::from(script_device(script)?);
        return Ok(parent_disk(&p).unwrap_or(p));
    }
    if !dev.path.is_empty() {
        let p = PathBuf::from(&dev.path);
        return Ok(parent_disk(&p).unwrap_or(p));
    }
    if dev.label.is_empty() {
        return Err(LayoutError::NoDevice);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .map_err(LayoutError::ListDisks)?
        .flatten()
    {
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
        0 => Err(LayoutError::LabelNotFound {
            label: dev.label.clone(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(LayoutError::LabelOnSeveralDisks {
            label: dev.label.clone(),
            disks: found,
        }),
    }
}

/// `script://COMMAND ARGS`: runs the command (split on whitespace, no shell, as yip does) and
/// takes its trimmed output as the device path.
fn script_device(script: &str) -> Result<String, LayoutError> {
    let mut words = script.split_whitespace();
    let program = words.next().ok_or(LayoutError::NoDevice)?;
    let out = clb_command::run(std::process::Command::new(program).args(words))
        .map_err(|source| LayoutError::DeviceScript { source })?;
    let device = out.trim().to_string();
    if device.is_empty() {
        return Err(LayoutError::DeviceScriptEmpty {
            script: script.to_string(),
        });
    }
    Ok(device)
}

/// `/dev/sda` for `/dev/sda2` (through sysfs), None when `p` is not a partition node.
fn parent_disk(p: &Path) -> Option<PathBuf> {
    if !is_block(p) {
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

pub(crate) fn is_block(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// Open the GPT at 512 then 4096 bytes per sector. None: no GPT at all.
pub(crate) fn open_gpt(device: &Path, writable: bool) -> Option<gpt::GptDisk<std::fs::File>> {
    let mut last = String::new();
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        match gpt::GptConfig::new()
            .writable(writable)
            .logical_block_size(lb)
            .open(device)
        {
            Ok(d) => return Some(d),
            Err(e) => last = e.to_string(),
        }
    }
    tracing::debug!(device = %device.display(), "no GPT: {last}");
    None
}

pub(crate) fn device_size(device: &Path) -> Result<u64, LayoutError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(device).map_err(io_error(device, "open it".into()))?;
    f.seek(SeekFrom::End(0))
        .map_err(io_error(device, "read its size".into()))
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

impl Existing {
    fn size_bytes(&self, lb: u64) -> u64 {
        (self.last_lba - self.first_lba + 1) * lb
    }
}

/// What is on the disk: sector size, usable range, partitions sorted by start.
struct DiskState {
    lb: u64,
    has_gpt: bool,
    first_usable: u64,
    last_usable: u64,
    parts: Vec<Existing>,
}

fn read_state(device: &Path) -> Result<DiskState, LayoutError> {
    let size = device_size(device)?;
    let open = || std::fs::File::open(device).map_err(io_error(device, "open it".into()));
    match open_gpt(device, false) {
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
            let mut f = open()?;
            for p in &mut parts {
                if let Some(probe) = clb_disk::probe_label(&mut f, p.first_lba * lb) {
                    p.fs_type = Some(probe.fs_type);
                    p.fs_label = probe.label;
                }
            }
            parts.sort_by_key(|p| p.first_lba);
            // A disk that grew since the table was written (cloud volume resized): the usable
            // range is recomputed from the real size when the table is rewritten.
            let array_lbs = GPT_ARRAY_BYTES.div_ceil(lb);
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
            if clb_disk::list_partitions(device).is_ok_and(|parts| !parts.is_empty()) {
                return Err(refused(device, Refusal::Mbr));
            }
            if let Some(probe) = clb_disk::probe_label(&mut open()?, 0) {
                return Err(refused(
                    device,
                    Refusal::WholeDiskFilesystem {
                        filesystem: probe.fs_type,
                    },
                ));
            }
            let lb = sector_size(device);
            let array_lbs = GPT_ARRAY_BYTES.div_ceil(lb);
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

/// An entry of `add_partitions`, checked, with its GPT name.
struct Wanted<'a> {
    part: &'a Partition,
    gpt_name: String,
    /// `part.size` in bytes (0: the rest of the disk).
    size_bytes: u64,
}

/// `mib` MiB in bytes; a size from the config that overflows is refused.
fn mib_bytes(device: &Path, mib: u64, name: Option<&str>) -> Result<u64, LayoutError> {
    mib.checked_mul(MIB).ok_or_else(|| {
        refused(
            device,
            Refusal::SizeTooLarge {
                name: name.map(str::to_string),
                size_mib: mib,
            },
        )
    })
}

fn check_wanted<'a>(device: &Path, layout: &'a Layout) -> Result<Vec<Wanted<'a>>, LayoutError> {
    let mut wanted: Vec<Wanted> = Vec::new();
    for (index, p) in layout.add_partitions.iter().enumerate() {
        if p.fs_label.is_empty() && p.p_label.is_empty() {
            return Err(refused(device, Refusal::Unnamed { index }));
        }
        let max = p.filesystem.label_limit();
        if p.fs_label.len() > max {
            return Err(refused(
                device,
                Refusal::LabelTooLong {
                    label: p.fs_label.clone(),
                    filesystem: p.filesystem,
                    max,
                },
            ));
        }
        let gpt_name = if p.p_label.is_empty() {
            p.fs_label.clone()
        } else {
            p.p_label.clone()
        };
        if gpt_name.encode_utf16().count() > GPT_NAME_UNITS {
            return Err(refused(device, Refusal::NameTooLong { name: gpt_name }));
        }
        if wanted.iter().any(|w| {
            w.gpt_name == gpt_name || (!p.fs_label.is_empty() && w.part.fs_label == p.fs_label)
        }) {
            return Err(refused(device, Refusal::Duplicate { name: gpt_name }));
        }
        let size_bytes = mib_bytes(device, p.size, Some(&gpt_name))?;
        wanted.push(Wanted {
            part: p,
            gpt_name,
            size_bytes,
        });
    }
    if let Some(w) = wanted.iter().rev().skip(1).find(|w| w.part.size == 0) {
        return Err(refused(
            device,
            Refusal::RestNotLast {
                name: w.gpt_name.clone(),
            },
        ));
    }
    Ok(wanted)
}

fn plan_for(device: &Path, layout: &Layout, state: &DiskState) -> Result<LayoutPlan, LayoutError> {
    let init_disk = layout.device.as_ref().is_some_and(|d| d.init_disk);
    // yip derives the GUID from the name (UUIDv5 in the URL namespace), default YIP_DISK.
    let disk_guid = layout.device.as_ref().filter(|d| d.init_disk).map(|d| {
        let name = if d.disk_name.is_empty() {
            "YIP_DISK"
        } else {
            d.disk_name.as_str()
        };
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
    });
    let lb = state.lb;
    let align = (MIB / lb).max(1);
    let wanted = check_wanted(device, layout)?;
    // Find each wanted partition on the disk.
    let mut matched: Vec<Option<usize>> = Vec::new();
    for w in &wanted {
        let p = w.part;
        let found: Vec<usize> = state
            .parts
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                if p.fs_label.is_empty() {
                    e.name == w.gpt_name
                } else {
                    e.fs_label.as_deref() == Some(p.fs_label.as_str())
                        || (e.fs_type.is_none() && e.name == w.gpt_name)
                }
            })
            .map(|(i, _)| i)
            .collect();
        match found[..] {
            [] => matched.push(None),
            [i] => matched.push(Some(i)),
            _ => {
                return Err(refused(
                    device,
                    Refusal::Ambiguous {
                        name: w.gpt_name.clone(),
                    },
                ));
            }
        }
    }
    let present = matched.iter().take_while(|m| m.is_some()).count();
    if let Some(later) = matched[present..].iter().position(Option::is_some) {
        return Err(refused(
            device,
            Refusal::Gap {
                present: wanted[present + later].gpt_name.clone(),
                missing: wanted[present].gpt_name.clone(),
            },
        ));
    }
    // The found ones must be the last partitions, in order. (Saturating: two entries that
    // match the same partition fail this check instead.)
    let tail_start = state.parts.len().saturating_sub(present);
    for (k, m) in matched[..present].iter().enumerate() {
        if *m != Some(tail_start + k) {
            return Err(refused(
                device,
                Refusal::NotLast {
                    name: wanted[k].gpt_name.clone(),
                },
            ));
        }
    }
    let mut parts = Vec::new();
    for (w, e) in wanted.iter().zip(&state.parts[tail_start..]) {
        let size = e.size_bytes(lb);
        if e.name != w.gpt_name {
            return Err(refused(
                device,
                Refusal::Renamed {
                    number: e.number,
                    name: e.name.clone(),
                    wanted: w.gpt_name.clone(),
                },
            ));
        }
        if w.part.size != 0 && size != w.size_bytes {
            return Err(refused(
                device,
                Refusal::Resized {
                    number: e.number,
                    name: w.gpt_name.clone(),
                    size_bytes: size,
                    wanted_mib: w.part.size,
                },
            ));
        }
        let fs = w.part.filesystem;
        let action = match &e.fs_type {
            _ if fs == Filesystem::NoFormat => PartAction::Keep,
            None => PartAction::Format,
            Some(t) if t == fs.name() => PartAction::Keep,
            Some(t) => {
                return Err(refused(
                    device,
                    Refusal::Reformatted {
                        number: e.number,
                        name: w.gpt_name.clone(),
                        found: t.clone(),
                        wanted: fs,
                    },
                ));
            }
        };
        parts.push(PlannedPartition {
            number: e.number,
            start_bytes: e.first_lba * lb,
            size_bytes: size,
            p_label: w.gpt_name.clone(),
            fs_label: w.part.fs_label.clone(),
            filesystem: fs,
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
            return Err(refused(device, Refusal::NothingToExpand));
        };
        let limit = state
            .parts
            .get(tail_start)
            .map(|n| n.first_lba - 1)
            .unwrap_or(state.last_usable);
        let target = if x.size == 0 {
            limit
        } else {
            e.first_lba + mib_bytes(device, x.size, None)? / lb - 1
        };
        if target > limit {
            return Err(refused(
                device,
                Refusal::ExpandTooLarge {
                    number: e.number,
                    wanted_mib: x.size,
                    max_mib: (limit - e.first_lba + 1) * lb / MIB,
                },
            ));
        }
        if target > e.last_lba {
            expand = Some(Expansion {
                number: e.number,
                start_bytes: e.first_lba * lb,
                from_bytes: e.size_bytes(lb),
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
    for (number, w) in (first_new..).zip(wanted.iter().skip(present)) {
        let start = (end_lba + 1).max(state.first_usable).div_ceil(align) * align;
        let last = if w.part.size == 0 {
            state.last_usable
        } else {
            start + w.size_bytes / lb - 1
        };
        if last > state.last_usable || last < start + align - 1 {
            return Err(refused(
                device,
                Refusal::NoRoom {
                    number,
                    name: w.gpt_name.clone(),
                    size_mib: w.part.size,
                    free_mib: (state.last_usable + 1).saturating_sub(start) * lb / MIB,
                },
            ));
        }
        parts.push(PlannedPartition {
            number,
            start_bytes: start * lb,
            size_bytes: (last - start + 1) * lb,
            p_label: w.gpt_name.clone(),
            fs_label: w.part.fs_label.clone(),
            filesystem: w.part.filesystem,
            action: PartAction::Create,
        });
        end_lba = last;
    }
    Ok(LayoutPlan {
        device: device.to_path_buf(),
        sector_size: lb,
        new_table: !state.has_gpt && (init_disk || !parts.is_empty() || expand.is_some()),
        disk_guid,
        expand,
        partitions: parts,
    })
}

/// A GUID in plans' JSON as its usual text (the uuid crate's serde feature is not built).
fn guid_text<S: serde::Serializer>(g: &Option<uuid::Uuid>, s: S) -> Result<S::Ok, S::Error> {
    match g {
        Some(g) => s.serialize_some(&g.to_string()),
        None => s.serialize_none(),
    }
}
