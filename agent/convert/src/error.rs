//! The one error type of this crate. Variants are distinct so that callers can map them to
//! exit codes: bad input (`HostilePath`, `Unsupported`, `Corrupt`), bad options, a full disk,
//! a missing or failing `tar2sqfs`, and plain I/O failures.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An entry that could place or point something outside the layer root, or that this
    /// converter refuses on principle (NUL bytes, unknown entry types).
    #[error("refusing layer entry {path:?}: {reason}")]
    HostilePath { path: String, reason: String },
    /// Well-formed input this converter cannot translate faithfully (for example an opaque
    /// marker that arrives after its directory was already written out).
    #[error("unsupported layer entry {path:?}: {reason}")]
    Unsupported { path: String, reason: String },
    /// Truncated or undecodable tar or compression stream.
    #[error("corrupt layer: {0}")]
    Corrupt(String),
    /// Options that `tar2sqfs` would reject anyway, caught before starting it.
    #[error("invalid conversion options: {0}")]
    InvalidOptions(String),
    /// `tar2sqfs` ran without failing but produced no usable output (an empty image, an exit
    /// before reading the whole layer), or could not be given its input (no stdin pipe). A
    /// non-zero exit is `Command`.
    #[error("tar2sqfs: {0}")]
    Tool(String),
    /// The decompressed layer grew past `ConvertOptions::max_tar_bytes` (a decompression bomb,
    /// or a layer larger than the caller can take).
    #[error("the layer decompresses to more than {0} bytes")]
    Expands(u64),
    /// ENOSPC (or EDQUOT) while writing the image or the archive.
    #[error("no space left on device: {0}")]
    NoSpace(String),
    /// `tar2sqfs` could not be started (`Missing` names the Debian package), or exited
    /// non-zero (`Failed`, its stderr tail kept; `says_no_space` when it names ENOSPC).
    #[error(transparent)]
    Command(#[from] clb_command::CommandError),
    // The source is printed by the caller's error chain, so the message names only the action.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ConvertError {
    /// True for errors caused by the layer content or the options rather than the machine.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::HostilePath { .. }
                | Self::Unsupported { .. }
                | Self::Corrupt(_)
                | Self::InvalidOptions(_)
        )
    }

    pub(crate) fn hostile(path: &[u8], reason: impl Into<String>) -> Self {
        Self::HostilePath {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(path: &[u8], reason: impl Into<String>) -> Self {
        Self::Unsupported {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error, turning a full disk into `NoSpace` wherever it happens.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_no_space(&source) {
            Self::NoSpace(context)
        } else {
            Self::Io { context, source }
        }
    }
}

/// Where a failure came from inside the conversion pipeline, so the caller can tell corrupt
/// input, a broken source and a dead `tar2sqfs` apart.
#[derive(Debug)]
pub(crate) enum Failure {
    Convert(ConvertError),
    Read(io::Error),
    Write(io::Error),
}

impl From<ConvertError> for Failure {
    fn from(e: ConvertError) -> Self {
        Self::Convert(e)
    }
}

pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
