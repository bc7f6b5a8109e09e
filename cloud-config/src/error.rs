//! Error and diagnostic types.
//!
//! Messages name what was being done; the cause (an io error, a program's failure) is the
//! error's `source()` and is not repeated in the message, so a printer that walks the chain
//! (as the `clb` binary and [`render`] do) shows each cause once.

use std::process::ExitStatus;
use std::sync::Arc;

use clb_command::CommandError;
use serde::Serialize;

use crate::fetch::FetchError;
use crate::layout::LayoutError;

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
    /// Reading a config source failed; `context` says which.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Fetching a `clb.setup=`/`cos.setup=` URL failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
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

/// Why a part of a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A file or directory operation in the root; `action` says which (`write /etc/motd`).
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A program the step runs (systemctl, modprobe, openssl, chroot) is missing or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A command of `commands:` exited non-zero; `output` is its last line of output.
    #[error("{script:?} failed ({status}): {output}")]
    Script {
        script: String,
        status: ExitStatus,
        output: String,
    },
    /// `layout:` refused the disk or failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A download failed. (Boxed: a fetch error is large; the box is not a link of the chain.)
    #[error(transparent)]
    Fetch(Box<FetchError>),
    /// A value of the step cannot be used (a relative path, a bad name, an unknown encoding).
    #[error("{0}")]
    Invalid(String),
    /// The root holds something the step does not change or cannot read: a user that exists
    /// with another uid, a bad line in `/etc/passwd`, a file where a directory should be.
    #[error("{0}")]
    Conflict(String),
    /// A condition's regular expression does not compile.
    #[error("invalid regular expression {pattern:?}")]
    Regex {
        pattern: String,
        #[source]
        source: regex_lite::Error,
    },
    /// The step waits (`after:`) for steps that wait for it.
    #[error("dependency cycle between steps: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

impl From<FetchError> for StepError {
    fn from(e: FetchError) -> Self {
        StepError::Fetch(Box::new(e))
    }
}

impl StepError {
    /// For `map_err`: an io error while doing `action`.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
        let action = action.into();
        move |source| StepError::Io { action, source }
    }
}

/// A failed part of a step: the key it came from (`files`, `users`, `layout`, a condition such
/// as `node`, or `after` for a dependency cycle) and why.
#[derive(Debug, thiserror::Error)]
#[error("{part}")]
pub struct PartError {
    pub part: &'static str,
    #[source]
    pub error: StepError,
}

/// A stage run that did not succeed, for callers that stop on it ([`crate::Report::check`]).
/// It carries the first problem; the report has all of them.
#[derive(Debug)]
pub enum StageError {
    /// A config source could not be read or parsed, so its steps did not run.
    Source {
        stage: String,
        diagnostic: Diagnostic,
    },
    /// A step failed; `error` (the `source()`) is its first failed part.
    Step {
        stage: String,
        step: String,
        file: String,
        error: Arc<PartError>,
    },
    /// A strict run stopped early.
    Aborted { stage: String },
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageError::Source { stage, diagnostic } => write!(f, "stage {stage}: {diagnostic}"),
            StageError::Step {
                stage, step, file, ..
            } => write!(f, "stage {stage}: step {step:?} ({file})"),
            StageError::Aborted { stage } => write!(f, "stage {stage}: stopped (strict run)"),
        }
    }
}

/// By hand rather than derived: the source is the `PartError` itself, not the `Arc` that shares
/// it with the report, so callers can downcast to it.
impl std::error::Error for StageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StageError::Step { error, .. } => Some(error.as_ref()),
            StageError::Source { .. } | StageError::Aborted { .. } => None,
        }
    }
}

/// An error and its causes on one line, `a: b: c`, each once: a cause whose text is already on
/// the line (some errors repeat their source) is left out.
pub fn render(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_rendered_once() {
        let e = PartError {
            part: "files",
            error: StepError::io("write /etc/motd")(std::io::Error::from_raw_os_error(13)),
        };
        assert_eq!(
            render(&e),
            "files: write /etc/motd: Permission denied (os error 13)"
        );
        // CommandError::Start repeats its io error in its message: printed once.
        let e = PartError {
            part: "modules",
            error: StepError::Command(CommandError::Start {
                program: "modprobe".into(),
                source: std::io::Error::from_raw_os_error(13),
            }),
        };
        assert_eq!(
            render(&e),
            "modules: cannot start modprobe: Permission denied (os error 13)"
        );
        let e = PartError {
            part: "systemctl",
            error: StepError::Command(CommandError::Missing {
                program: "systemctl".into(),
            }),
        };
        assert_eq!(
            render(&e),
            "systemctl: systemctl: not found: install the Debian package systemd"
        );
    }
}
