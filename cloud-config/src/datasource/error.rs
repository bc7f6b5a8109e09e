//! Why `datasource:` failed. A leaf module: the step errors wrap it.

use clb_command::CommandError;

use crate::fetch::FetchError;

/// A provider that answered but whose answer is unusable, or why none answered.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    /// The provider answered with something that is not what its API documents.
    #[error("{provider}: {problem}")]
    Garbage {
        provider: &'static str,
        problem: String,
    },
    /// A request to a provider that had answered before failed.
    #[error("{provider}")]
    Fetch {
        provider: &'static str,
        #[source]
        source: Box<FetchError>,
    },
    /// Finding, mounting or unmounting a config volume failed.
    #[error("{provider}")]
    Command {
        provider: &'static str,
        #[source]
        source: CommandError,
    },
    /// Reading a config volume or a file failed.
    #[error("{provider}: {action}")]
    Io {
        provider: &'static str,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// No provider answered; each one's reason, and the first broken provider's error.
    #[error("no datasource answered ({})", .tried.join("; "))]
    NoneAnswered {
        tried: Vec<String>,
        #[source]
        broken: Option<Box<DatasourceError>>,
    },
}
