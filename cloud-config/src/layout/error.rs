//! Why a layout was refused or failed. Each message is one sentence that names the disk once;
//! an underlying error (an io error, a program's failure) is the `source()`, not repeated in
//! the message.

use std::fmt;
use std::path::PathBuf;

use clb_command::CommandError;

use crate::schema::Filesystem;

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The layout names no disk (`device.path` and `device.label` are both empty).
    #[error("layout: device.path or device.label is needed")]
    NoDevice,
    /// The `script://` command of `device.path` failed.
    #[error("layout: the device script")]
    DeviceScript {
        #[source]
        source: clb_command::CommandError,
    },
    /// The `script://` command of `device.path` printed nothing.
    #[error("layout: the device script {script:?} printed no device")]
    DeviceScriptEmpty { script: String },
    /// `device.label` matches no disk.
    #[error("layout: no disk has a filesystem labelled {label:?}")]
    LabelNotFound { label: String },
    /// `device.label` matches more than one disk; clb never guesses which.
    #[error("layout: several disks have a filesystem labelled {label:?}: {}", paths(.disks))]
    LabelOnSeveralDisks { label: String, disks: Vec<PathBuf> },
    /// The disks could not be listed to find `device.label`.
    #[error("layout: cannot list the disks in /sys/block")]
    ListDisks(#[source] std::io::Error),
    /// The disk does not fit the layout. Nothing was written.
    #[error("layout of {}: {problem}", .device.display())]
    Refused { device: PathBuf, problem: Refusal },
    /// Reading or writing the disk failed; `action` says what was being done.
    #[error("layout of {}: {action}", .device.display())]
    Io {
        device: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// The partition table could not be read or written.
    #[error("layout of {}: {action}", .device.display())]
    Gpt {
        device: PathBuf,
        action: String,
        #[source]
        source: gpt::GptError,
    },
    /// A partition could not be reached (offset loop device) to format or grow it.
    #[error(transparent)]
    Disk(Box<LayoutFailure<clb_disk::DiskError>>),
    /// `mkfs.*`, `e2fsck` or `resize2fs` is missing or failed.
    #[error(transparent)]
    Command(Box<LayoutFailure<CommandError>>),
}

/// What was being done on which disk when `source` failed. Boxed in [`LayoutError`] (the
/// disk and command errors are large); the box is not a link of the error chain, `source` is.
#[derive(Debug, thiserror::Error)]
#[error("layout of {}: {action}", .device.display())]
pub struct LayoutFailure<E: std::error::Error + 'static> {
    pub device: PathBuf,
    pub action: String,
    #[source]
    pub source: E,
}

fn paths(disks: &[PathBuf]) -> String {
    let shown: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    shown.join(", ")
}

/// What about the disk (or the requested layout) makes the layout refuse it. Partitions are
/// named by number (as the kernel counts) and GPT name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An entry of `add_partitions` has neither `fsLabel` nor `pLabel`.
    Unnamed { index: usize },
    /// The filesystem label is longer than the filesystem allows.
    LabelTooLong {
        label: String,
        filesystem: Filesystem,
        max: usize,
    },
    /// The GPT name is longer than the 36 UTF-16 units a GPT entry holds.
    NameTooLong { name: String },
    /// Two entries of `add_partitions` have the same name.
    Duplicate { name: String },
    /// A size (of an entry, or of `expand_partition` when `name` is None) that no disk can
    /// hold: it does not fit in 64 bits of bytes.
    SizeTooLarge { name: Option<String>, size_mib: u64 },
    /// `size: 0` (the rest of the disk) on an entry that is not the last.
    RestNotLast { name: String },
    /// More than one partition on the disk matches an entry.
    Ambiguous { name: String },
    /// An entry is on the disk but an earlier one of the list is not.
    Gap { present: String, missing: String },
    /// A partition of the list is on the disk, but other partitions follow it.
    NotLast { name: String },
    /// The partition found has another GPT name.
    Renamed {
        number: u32,
        name: String,
        wanted: String,
    },
    /// The partition found has another size.
    Resized {
        number: u32,
        name: String,
        size_bytes: u64,
        wanted_mib: u64,
    },
    /// The partition found holds another filesystem.
    Reformatted {
        number: u32,
        name: String,
        found: String,
        wanted: Filesystem,
    },
    /// `expand_partition`, but no partition outside `add_partitions` to grow.
    NothingToExpand,
    /// `expand_partition` to more than fits before the next partition or the disk's end.
    ExpandTooLarge {
        number: u32,
        wanted_mib: u64,
        max_mib: u64,
    },
    /// A new partition does not fit in the free space (`size_mib` 0: the rest, under 1 MiB).
    NoRoom {
        number: u32,
        name: String,
        size_mib: u64,
        free_mib: u64,
    },
    /// The disk has an MBR partition table.
    Mbr,
    /// The whole disk holds a filesystem.
    WholeDiskFilesystem { filesystem: String },
    /// The disk changed between planning and writing (another program at work).
    Changed { what: String },
}

/// A size for people: `8 GiB` when it is whole GiB, else `300 MiB`.
pub(crate) fn size_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

fn size_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        size_mib(bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unnamed { index } => write!(
                f,
                "entry {} of add_partitions has neither fsLabel nor pLabel, so a re-run could not find it",
                index + 1
            ),
            Refusal::LabelTooLong {
                label,
                filesystem,
                max,
            } => write!(
                f,
                "label {label:?} is too long for {filesystem} (at most {max} bytes)"
            ),
            Refusal::NameTooLong { name } => {
                write!(f, "pLabel {name:?} is too long (at most 36 characters)")
            }
            Refusal::Duplicate { name } => write!(f, "add_partitions lists {name:?} twice"),
            Refusal::SizeTooLarge {
                name: Some(name),
                size_mib,
            } => write!(f, "partition {name:?}: size {size_mib} MiB is too large"),
            Refusal::SizeTooLarge {
                name: None,
                size_mib,
            } => write!(f, "expand_partition: size {size_mib} MiB is too large"),
            Refusal::RestNotLast { name } => write!(
                f,
                "only the last partition may take the rest of the disk (size 0), not {name:?}"
            ),
            Refusal::Ambiguous { name } => {
                write!(f, "several partitions match {name:?}; refusing to guess")
            }
            Refusal::Gap { present, missing } => write!(
                f,
                "partition {present:?} exists but {missing:?}, listed before it, does not"
            ),
            Refusal::NotLast { name } => write!(
                f,
                "partition {name:?} is not where the layout puts it: other partitions follow it"
            ),
            Refusal::Renamed {
                number,
                name,
                wanted,
            } => write!(
                f,
                "partition {number} is named {name:?}, the layout wants {wanted:?}"
            ),
            Refusal::Resized {
                number,
                name,
                size_bytes: size,
                wanted_mib,
            } => write!(
                f,
                "partition {number} ({name}) is {}, the layout wants {}",
                size_bytes(*size),
                size_mib(*wanted_mib)
            ),
            Refusal::Reformatted {
                number,
                name,
                found,
                wanted,
            } => write!(
                f,
                "partition {number} ({name}) holds {found}, the layout wants {wanted}"
            ),
            Refusal::NothingToExpand => {
                write!(f, "expand_partition: the disk has no partition to grow")
            }
            Refusal::ExpandTooLarge {
                number,
                wanted_mib,
                max_mib,
            } => write!(
                f,
                "expand_partition: partition {number} cannot grow to {}, at most {} fit",
                size_mib(*wanted_mib),
                size_mib(*max_mib)
            ),
            Refusal::NoRoom {
                number,
                name,
                size_mib: 0,
                free_mib,
            } => write!(
                f,
                "partition {number} ({name}) takes the rest of the disk, but only {} is free",
                size_mib(*free_mib)
            ),
            Refusal::NoRoom {
                number,
                name,
                size_mib: want,
                free_mib,
            } => write!(
                f,
                "partition {number} ({name}) needs {}, {} free",
                size_mib(*want),
                size_mib(*free_mib)
            ),
            Refusal::Mbr => write!(
                f,
                "the disk has an MBR partition table; only GPT disks are laid out"
            ),
            Refusal::WholeDiskFilesystem { filesystem } => write!(
                f,
                "the whole disk holds a {filesystem} filesystem; refusing to partition it"
            ),
            Refusal::Changed { what } => {
                write!(f, "the disk changed while it was laid out: {what}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_one_sentence_naming_the_disk_once() {
        let e = LayoutError::Refused {
            device: PathBuf::from("/dev/x"),
            problem: Refusal::NoRoom {
                number: 3,
                name: "COS_STATE".into(),
                size_mib: 8192,
                free_mib: 2048,
            },
        };
        assert_eq!(
            e.to_string(),
            "layout of /dev/x: partition 3 (COS_STATE) needs 8 GiB, 2 GiB free"
        );
        let e = LayoutError::Refused {
            device: PathBuf::from("/dev/x"),
            problem: Refusal::Resized {
                number: 2,
                name: "oem".into(),
                size_bytes: 16 * MIB,
                wanted_mib: 20,
            },
        };
        assert_eq!(
            e.to_string(),
            "layout of /dev/x: partition 2 (oem) is 16 MiB, the layout wants 20 MiB"
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn a_failed_program_is_the_source_not_the_message() {
        let e = LayoutError::Command(Box::new(LayoutFailure {
            device: PathBuf::from("disk.img"),
            action: "format partition 2 (oem) as ext4".into(),
            source: CommandError::Missing {
                program: "mkfs.ext4".into(),
            },
        }));
        assert_eq!(
            e.to_string(),
            "layout of disk.img: format partition 2 (oem) as ext4"
        );
        // The box is not a link of the chain: the source is the CommandError itself.
        let source = std::error::Error::source(&e);
        assert!(matches!(
            source.and_then(|s| s.downcast_ref::<CommandError>()),
            Some(CommandError::Missing { .. })
        ));
        assert_eq!(
            source.map(ToString::to_string).as_deref(),
            Some("mkfs.ext4: not found: install the Debian package e2fsprogs")
        );
    }
}
