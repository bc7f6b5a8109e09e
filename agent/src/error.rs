//! Typed errors of the agent library and the exit codes the `clb` binary maps them to.
//! The codes are part of the CLI contract: `docs/cli.md` lists them.

use std::path::PathBuf;

use thiserror::Error;

/// Exit codes, one per failure class a script may want to tell apart.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID_INPUT: u8 = 3;
    pub const VERIFICATION_FAILED: u8 = 4;
    pub const DIGEST_MISMATCH: u8 = 5;
    pub const REGISTRY_UNREACHABLE: u8 = 6;
    pub const AUTH_REFUSED: u8 = 7;
    pub const NO_SPACE: u8 = 8;
    pub const LOCKED: u8 = 9;
    pub const NOT_FOUND: u8 = 10;
    pub const STATE: u8 = 11;
    pub const HOOK_FAILED: u8 = 12;
}

#[derive(Debug, Error)]
pub enum ClbError {
    #[error("signature verification failed: {0}")]
    Verification(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    #[error("registry refused authentication: {0}")]
    AuthRefused(String),
    #[error("not found in registry: {0}")]
    NotFound(String),
    #[error(
        "not enough space in {path}: need {needed} bytes, {available} available",
        path = path.display()
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("locked: another clb operation is running on {}", path.display())]
    Locked { path: PathBuf },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("state: {0}")]
    State(String),
    #[error("hook failed: {0}")]
    Hook(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ClbError> = std::result::Result<T, E>;

impl ClbError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClbError::Verification(_) => exit::VERIFICATION_FAILED,
            ClbError::DigestMismatch { .. } => exit::DIGEST_MISMATCH,
            ClbError::Unreachable(_) => exit::REGISTRY_UNREACHABLE,
            ClbError::AuthRefused(_) => exit::AUTH_REFUSED,
            ClbError::NotFound(_) => exit::NOT_FOUND,
            ClbError::NoSpace { .. } => exit::NO_SPACE,
            ClbError::Locked { .. } => exit::LOCKED,
            ClbError::Invalid(_) => exit::INVALID_INPUT,
            ClbError::State(_) => exit::STATE,
            ClbError::Hook(_) => exit::HOOK_FAILED,
            ClbError::Io { source, .. } if is_no_space(source) => exit::NO_SPACE,
            ClbError::Io { .. } => exit::FAILURE,
        }
    }

    /// Wraps an I/O error with what we were doing; ENOSPC keeps its own exit code.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClbError {
        let context = context.into();
        move |source| ClbError::Io { context, source }
    }
}

pub fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

/// Walks an error chain (as the binary sees it) for the most specific exit code.
pub fn exit_code_of(err: &(dyn std::error::Error + 'static)) -> u8 {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(clb) = e.downcast_ref::<ClbError>() {
            return clb.exit_code();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && is_no_space(io)
        {
            return exit::NO_SPACE;
        }
        current = e.source();
    }
    exit::FAILURE
}
