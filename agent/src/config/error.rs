//! Why a configuration was refused, and what was ignored in one that was accepted. Both print
//! as one line that starts with the file (and position), as compilers do, so an editor or a
//! log reader can jump to the place.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A configuration that cannot be used; the daemon keeps the one it has.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The reason is part of the message: this line is all a log or a D-Bus caller sees.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `config.d` exists but cannot be listed.
    #[error("{}: cannot list the drop-in directory: {error}", path.display())]
    List {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Bad YAML, a wrong type or a value out of range, at a known place. `line` and `column`
    /// count from 1, columns in characters.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    /// A refusal that concerns the whole file (not UTF-8, too large).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    /// The file (or `config.d` directory) at fault.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::List { path, .. }
            | ConfigError::Invalid { path, .. }
            | ConfigError::File { path, .. } => path,
        }
    }

    /// `(line, column)`, both from 1, when the error has a place in the file.
    pub fn location(&self) -> Option<(u64, u64)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }

    pub(crate) fn at(
        path: &Path,
        at: serde_saphyr::Location,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
        }
    }
}

/// Something ignored in an accepted file: an unknown key (a typo, or a key of a newer clb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    /// From 1.
    pub line: u64,
    /// From 1, in characters.
    pub column: u64,
    /// Without the position, e.g. `unknown key "periodic.windowz" (ignored)`.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}
