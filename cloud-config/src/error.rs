//! Error and diagnostic types.

use std::path::PathBuf;

use serde::Serialize;

/// A message tied to a place in a config source (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The source: a path, a URL, or `<cmdline>`.
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
        }
    }
}

/// Errors of the engine itself (not of a single step: those end up in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config source is not valid YAML or does not fit the schema.
    #[error("{0}")]
    Parse(Diagnostic),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Fetching a `clb.setup=`/`cos.setup=` URL or a download failed.
    #[error("fetch {url}: {message}")]
    Fetch { url: String, message: String },
    /// The disk layout on the device does not match the requested one.
    #[error("layout of {device}: {message}")]
    Layout { device: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
