//! Error and diagnostic types.
//!
//! Messages name what was being done; the cause (an io error, a program's failure) is the
//! error's `source()` and is not repeated in the message, so a printer that walks the chain
//! (`clb_command::one_line`, as the `clb` binary does) shows each cause once.

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
    /// A yip key clb does not implement, and why (docs/cloud-config.md).
    #[error("not supported by clb: {0}")]
    Unsupported(&'static str),
    /// The root holds something the step does not change or cannot read: a user that exists
    /// with another uid, a bad line in `/etc/passwd`, a file where a directory should be.
    #[error("{0}")]
    Conflict(String),
    /// A program ran and succeeded but printed something unusable (`openssl passwd` without a
    /// crypt hash).
    #[error("{program} printed no {wanted}: {output:?}")]
    Output {
        program: String,
        wanted: &'static str,
        output: String,
    },
    /// `datasource:` found no provider, or one that answered with something unusable.
    #[error(transparent)]
    Datasource(#[from] crate::datasource::error::DatasourceError),
    /// A part that handles several users (`authorized_keys`): the user whose part failed.
    #[error("{user}")]
    User {
        user: String,
        #[source]
        error: Box<StepError>,
    },
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clb_command::{one_line, repeated_source};

    fn part(part: &'static str, error: StepError) -> PartError {
        PartError { part, error }
    }

    /// Each error shape the engine builds, printed the way the binary prints it: every message
    /// leaves its source out, so each cause appears once.
    #[test]
    fn each_cause_is_printed_once() {
        let denied = || std::io::Error::from_raw_os_error(13);
        let cases: Vec<(Box<dyn std::error::Error>, &str)> = vec![
            (
                Box::new(part("files", StepError::io("write /etc/motd")(denied()))),
                "files: write /etc/motd: Permission denied (os error 13)",
            ),
            (
                Box::new(part(
                    "modules",
                    StepError::Command(CommandError::Start {
                        program: "modprobe".into(),
                        source: denied(),
                    }),
                )),
                "modules: cannot start modprobe: Permission denied (os error 13)",
            ),
            (
                Box::new(part(
                    "systemctl",
                    StepError::Command(CommandError::Missing {
                        program: "systemctl".into(),
                    }),
                )),
                "systemctl: systemctl: not found: install the Debian package systemd",
            ),
            (
                Box::new(part(
                    "if",
                    StepError::Regex {
                        pattern: "(".into(),
                        source: regex_lite::Regex::new("(").unwrap_err(),
                    },
                )),
                "if: invalid regular expression \"(\": ",
            ),
            (
                Box::new(part(
                    "downloads",
                    StepError::from(FetchError::Io {
                        url: "http://x/".into(),
                        action: "connect to 10.0.0.1:80".into(),
                        source: denied(),
                    }),
                )),
                "downloads: fetch http://x/: connect to 10.0.0.1:80: Permission denied (os error 13)",
            ),
            (
                Box::new(part(
                    "authorized_keys",
                    StepError::User {
                        user: "root".into(),
                        error: Box::new(
                            StepError::io("write /root/.ssh/authorized_keys")(denied()),
                        ),
                    },
                )),
                "authorized_keys: root: write /root/.ssh/authorized_keys: Permission denied (os error 13)",
            ),
            (
                Box::new(part(
                    "datasource",
                    StepError::Datasource(
                        crate::datasource::error::DatasourceError::NoneAnswered {
                            tried: vec!["aws: connect to 169.254.169.254:80: refused".into()],
                            broken: Some(Box::new(
                                crate::datasource::error::DatasourceError::Garbage {
                                    provider: "hetzner",
                                    problem: "public-keys is 1, not a list".into(),
                                },
                            )),
                        },
                    ),
                )),
                "datasource: no datasource answered (aws: connect to 169.254.169.254:80: refused): hetzner: public-keys is 1, not a list",
            ),
            (
                Box::new(part(
                    "users",
                    StepError::Output {
                        program: "openssl passwd".into(),
                        wanted: "crypt hash",
                        output: "".into(),
                    },
                )),
                "users: openssl passwd printed no crypt hash: \"\"",
            ),
            (
                Box::new(Error::io("read /oem/a.yaml", denied())),
                "read /oem/a.yaml: Permission denied (os error 13)",
            ),
            (
                Box::new(StageError::Step {
                    stage: "boot".into(),
                    step: "motd".into(),
                    file: "/oem/a.yaml".into(),
                    error: Arc::new(part("files", StepError::io("write /etc/motd")(denied()))),
                }),
                "stage boot: step \"motd\" (/oem/a.yaml): files: write /etc/motd: Permission denied (os error 13)",
            ),
        ];
        for (error, line) in cases {
            assert_eq!(repeated_source(error.as_ref()), None, "{error:?}");
            assert!(
                one_line(error.as_ref()).starts_with(line),
                "{}",
                one_line(error.as_ref())
            );
        }
    }
}
