//! One error type for the whole crate. Messages are one line so the CLI can print them as is.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while finding, attaching or mounting disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// No partition (or host block device) carries this filesystem label.
    #[error("no partition with filesystem label {label:?} on {searched}")]
    LabelNotFound { label: String, searched: String },

    /// More than one partition carries the label. We never guess which one is meant.
    #[error("filesystem label {label:?} is on more than one partition: {}", partitions.join(", "))]
    DuplicateLabel {
        label: String,
        partitions: Vec<String>,
    },

    /// Neither a GPT nor an MBR partition table was found.
    #[error("no partition table on {}: {reason}", disk.display())]
    NoPartitionTable { disk: PathBuf, reason: String },

    /// An I/O or system call error, with what we were doing (the source is printed by the
    /// caller's error chain, so the message names only the action).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// An external tool (losetup, blkid) could not run or failed.
    #[error(transparent)]
    Command(#[from] clb_command::CommandError),

    /// The target is busy and could not be unmounted.
    #[error("{} is busy", target.display())]
    Busy { target: PathBuf },

    /// The target is not something we mounted (no record or not a mount point).
    #[error("{} is not mounted by clb", target.display())]
    NotMounted { target: PathBuf },

    /// The caller passed something unusable (e.g. an empty layer list).
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl DiskError {
    /// Wrap an `io::Error` with a short description of the operation.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        DiskError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Convert a rustix errno into a std io error (used for `DiskError::Io`).
pub(crate) fn errno_io(context: impl Into<String>, e: rustix::io::Errno) -> DiskError {
    DiskError::io(context, io::Error::from(e))
}

pub type Result<T, E = DiskError> = std::result::Result<T, E>;
