//! `layout`: GPT partitioning with the gpt crate, filesystems through the `mkfs.*` tools.
//!
//! The plan is computed from the disk as it is, before anything is written, and refuses any
//! disk it would have to guess about (see [`plan_layout`]). Applying a plan a second time
//! finds every partition in place and does nothing. The `layout:` step of a config file and
//! callers in code (`clb deploy`) both go through [`apply_layout`].

mod error;
mod plan;
mod write;

use std::fmt;

use serde::Serialize;

pub use error::{LayoutError, LayoutFailure, Refusal};
pub use plan::{Expansion, LayoutPlan, PartAction, PlannedPartition, plan_layout};

use error::size_mib;
use plan::MIB;

use crate::schema::Layout;

/// How to apply a layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayoutOptions {
    /// Plan only: the outcome lists what would change and nothing is written.
    pub dry_run: bool,
}

/// What [`apply_layout`] did (or, in a dry run, would do) to the disk. Its `Display` is one
/// line for people: `/dev/vda: created partition 3 "state" (8 GiB, ext4 "COS_STATE"); left
/// partitions 1 "efi", 2 "oem" alone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutOutcome {
    /// The plan that was applied (in a dry run: that would be).
    pub plan: LayoutPlan,
    pub dry_run: bool,
    /// The grown partition's filesystem was grown too (ext2/3/4 only).
    pub filesystem_grown: bool,
    /// Remarks that are not changes: the kernel not told about a new table, a filesystem
    /// left at its size.
    pub notes: Vec<String>,
}

impl LayoutOutcome {
    /// True when the disk was (or in a dry run would be) changed.
    pub fn changed(&self) -> bool {
        !self.plan.is_noop()
    }

    /// One line per change in the order they are made (`write a new GPT on /dev/vda`,
    /// `create partition 3 "state" on /dev/vda (8192 MiB at 4160 MiB) and format it ext4
    /// "COS_STATE"`), as the step report lists them.
    pub fn changes(&self) -> Vec<String> {
        let plan = &self.plan;
        let dev = plan.device.display();
        let mut out = Vec::new();
        if plan.new_table {
            out.push(format!("write a new GPT on {dev}"));
        }
        if let Some(x) = &plan.expand {
            out.push(format!(
                "grow partition {} of {dev} from {} to {} MiB",
                x.number,
                x.from_bytes / MIB,
                x.to_bytes / MIB
            ));
        }
        for p in &plan.partitions {
            match p.action {
                PartAction::Keep => {}
                PartAction::Create => out.push(format!(
                    "create partition {} {:?} on {dev} ({} MiB at {} MiB) and format it {} {:?}",
                    p.number,
                    p.p_label,
                    p.size_bytes / MIB,
                    p.start_bytes / MIB,
                    p.filesystem,
                    p.fs_label
                )),
                PartAction::Format => out.push(format!(
                    "format partition {} of {dev} as {} {:?}",
                    p.number, p.filesystem, p.fs_label
                )),
            }
        }
        if let Some(x) = plan.expand.as_ref().filter(|_| self.filesystem_grown) {
            out.push(format!("resize2fs partition {} of {dev}", x.number));
        }
        out
    }
}

impl fmt::Display for LayoutOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = &self.plan;
        let (wrote, grew, created, formatted) = if self.dry_run {
            ("would write", "would grow", "would create", "would format")
        } else {
            ("wrote", "grew", "created", "formatted")
        };
        let mut items = Vec::new();
        if plan.new_table {
            items.push(format!("{wrote} a new GPT"));
        }
        if let Some(x) = &plan.expand {
            let fs = match &x.fs_type {
                Some(t) if self.filesystem_grown => format!(" and its {t} filesystem"),
                _ => String::new(),
            };
            items.push(format!(
                "{grew} partition {}{fs} from {} to {}",
                x.number,
                size_mib(x.from_bytes / MIB),
                size_mib(x.to_bytes / MIB)
            ));
        }
        let mut kept = Vec::new();
        for p in &plan.partitions {
            let label = if p.fs_label.is_empty() {
                String::new()
            } else {
                format!(" {:?}", p.fs_label)
            };
            match p.action {
                PartAction::Create => items.push(format!(
                    "{created} partition {} {:?} ({}, {}{label})",
                    p.number,
                    p.p_label,
                    size_mib(p.size_bytes / MIB),
                    p.filesystem
                )),
                PartAction::Format => items.push(format!(
                    "{formatted} partition {} {:?} as {}{label}",
                    p.number, p.p_label, p.filesystem
                )),
                PartAction::Keep => kept.push(format!("{} {:?}", p.number, p.p_label)),
            }
        }
        match kept.len() {
            0 => {}
            1 => items.push(format!("left partition {} alone", kept[0])),
            _ => items.push(format!("left partitions {} alone", kept.join(", "))),
        }
        if !self.changed() {
            items.insert(0, "nothing to do".to_string());
        }
        write!(f, "{}: {}", plan.device.display(), items.join("; "))?;
        if !self.notes.is_empty() {
            write!(f, " ({})", self.notes.join("; "))?;
        }
        Ok(())
    }
}

/// Lays `layout` out on its disk: plans it with [`plan_layout`] (refusing a disk that does not
/// fit, before anything is written), then writes the GPT, formats the new partitions and grows
/// `expand_partition` with its ext2/3/4 filesystem. A layout already in place changes nothing.
/// The `layout:` step of a config file runs exactly this.
///
/// ```no_run
/// use std::path::Path;
/// use clb_cloud_config::{Filesystem, Layout, LayoutOptions, Partition, apply_layout};
///
/// let layout = Layout::on_device(
///     Path::new("/dev/vda"),
///     vec![
///         Partition::new("COS_STATE", "state", 8192, Filesystem::Ext4),
///         Partition::new("COS_PERSISTENT", "persistent", 0, Filesystem::Ext4),
///     ],
/// );
/// let outcome = apply_layout(&layout, &LayoutOptions::default())?;
/// // "/dev/vda: created partition 3 "state" (8 GiB, ext4 "COS_STATE"); created partition 4 …"
/// println!("{outcome}");
/// # Ok::<(), clb_cloud_config::LayoutError>(())
/// ```
pub fn apply_layout(layout: &Layout, opts: &LayoutOptions) -> Result<LayoutOutcome, LayoutError> {
    let plan = plan_layout(layout)?;
    let mut outcome = LayoutOutcome {
        plan,
        dry_run: opts.dry_run,
        filesystem_grown: false,
        notes: Vec::new(),
    };
    if opts.dry_run || !outcome.changed() {
        return Ok(outcome);
    }
    let plan = &outcome.plan;
    write::write_table(plan)?;
    if let Err(why) = write::reread(&plan.device) {
        outcome
            .notes
            .push(format!("kernel not told about the new table: {why}"));
    }
    for p in plan
        .partitions
        .iter()
        .filter(|p| p.action != PartAction::Keep)
    {
        write::format(&plan.device, p)?;
    }
    if let Some(x) = &plan.expand {
        outcome.filesystem_grown = write::grow_fs(&plan.device, x)?;
        if let Some(fs) = x.fs_type.as_ref().filter(|_| !outcome.filesystem_grown) {
            outcome.notes.push(format!(
                "partition {} grown; its {fs} filesystem was left at its size (only ext2/3/4 are grown)",
                x.number
            ));
        }
    }
    Ok(outcome)
}
