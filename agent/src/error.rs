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
    pub const UNHEALTHY: u8 = 13;
    pub const UP_TO_DATE: u8 = 14;
    pub const CANCELLED: u8 = 15;
    pub const ACCESS_DENIED: u8 = 16;

    /// One documented exit code. [`TABLE`] is the only place the codes are described:
    /// `clb --help`, the man page and `docs/cli.md` are generated from it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ExitCodeInfo {
        pub code: u8,
        /// Stable kebab-case name, for scripts and generated tables.
        pub name: &'static str,
        pub meaning: &'static str,
        /// Markdown (inline code in backticks); empty when there is nothing to add.
        pub examples: &'static str,
    }

    pub const TABLE: &[ExitCodeInfo] = &[
        ExitCodeInfo {
            code: OK,
            name: "ok",
            meaning: "success",
            examples: "",
        },
        ExitCodeInfo {
            code: FAILURE,
            name: "failure",
            meaning: "other failure",
            examples: "unexpected I/O error",
        },
        ExitCodeInfo {
            code: USAGE,
            name: "usage",
            meaning: "usage",
            examples: "unknown flag, missing argument",
        },
        ExitCodeInfo {
            code: INVALID_INPUT,
            name: "invalid-input",
            meaning: "invalid input",
            examples: "malformed reference or manifest, a manifest over 4 MiB, hostile tar path, a native layer that is no SquashFS, bad key file, \
                       unsupported media type",
        },
        ExitCodeInfo {
            code: VERIFICATION_FAILED,
            name: "verification-failed",
            meaning: "verification failed",
            examples: "unsigned image, wrong key, corrupted signature, payload for another digest",
        },
        ExitCodeInfo {
            code: DIGEST_MISMATCH,
            name: "digest-mismatch",
            meaning: "digest mismatch",
            examples: "a blob or manifest whose bytes do not hash to their digest",
        },
        ExitCodeInfo {
            code: REGISTRY_UNREACHABLE,
            name: "registry-unreachable",
            meaning: "registry unreachable",
            examples: "connection refused, timeouts, stalled downloads, 5xx or answers that end early after retries",
        },
        ExitCodeInfo {
            code: AUTH_REFUSED,
            name: "auth-refused",
            meaning: "registry authentication refused",
            examples: "401/403, wrong credentials",
        },
        ExitCodeInfo {
            code: NO_SPACE,
            name: "no-space",
            meaning: "no space",
            examples: "not enough free space for the download (checked before downloading), ENOSPC, a layer that decompresses past 8 times the free space (a decompression bomb)",
        },
        ExitCodeInfo {
            code: LOCKED,
            name: "locked",
            meaning: "locked",
            examples: "another clb operation holds the state lock",
        },
        ExitCodeInfo {
            code: NOT_FOUND,
            name: "not-found",
            meaning: "not found",
            examples: "unknown repository, tag or platform",
        },
        ExitCodeInfo {
            code: STATE,
            name: "state",
            meaning: "state",
            examples: "nothing installed, nothing to roll back to, corrupt boot state, deploy onto \
                       a disk that holds a system",
        },
        ExitCodeInfo {
            code: HOOK_FAILED,
            name: "hook-failed",
            meaning: "hook failed",
            examples: "a `before-upgrade`/`before-install` hook or a hook shipped in the new image \
                       failed",
        },
        ExitCodeInfo {
            code: UNHEALTHY,
            name: "unhealthy",
            meaning: "health check failed",
            examples: "`clb health-check`: the default target is not active, a unit failed, a \
                       `/etc/clb/health.d` script failed",
        },
        ExitCodeInfo {
            code: UP_TO_DATE,
            name: "up-to-date",
            meaning: "no update",
            examples: "`clb upgrade --check`: the registry has nothing newer than the active slot \
                       (0 means an update is available)",
        },
        ExitCodeInfo {
            code: CANCELLED,
            name: "cancelled",
            meaning: "cancelled",
            examples: "the daemon's operation was cancelled (`Cancel` on D-Bus, Ctrl-C at \
                       `clb upgrade` through the daemon); partial downloads are kept to resume",
        },
        ExitCodeInfo {
            code: ACCESS_DENIED,
            name: "access-denied",
            meaning: "access denied",
            examples: "the daemon refused a changing call from a user who is neither root nor in \
                       the configured `admin_group`",
        },
    ];
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
    /// A layer that inflates past the free space of the store (a decompression bomb).
    #[error(
        "layer {layer} decompresses past {limit} bytes, too much for the {free} bytes free in {path}",
        path = path.display()
    )]
    LayerExpands {
        layer: String,
        limit: u64,
        free: u64,
        path: PathBuf,
    },
    #[error("locked: another clb operation is running on {}", path.display())]
    Locked { path: PathBuf },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("state: {0}")]
    State(String),
    #[error("hook failed: {0}")]
    Hook(String),
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// A signature at `location` that does not verify or cannot be read.
    #[error("signature verification failed for {location}")]
    Signature {
        location: String,
        #[source]
        source: clb_cosign::CosignError,
    },
    /// Signature data that cannot be used at all (not a verification failure: malformed, or
    /// no usable key for it).
    #[error("unusable signature data at {location}")]
    SignatureData {
        location: String,
        #[source]
        source: clb_cosign::CosignError,
    },
    /// A Sigstore bundle that does not verify, or its inputs (trusted root, key, pattern).
    #[error("bundle {location}")]
    Bundle {
        location: String,
        #[source]
        source: clb_cosign::BundleError,
    },
    /// A trust policy (or `--key`) that cannot be used.
    #[error(transparent)]
    Policy(#[from] crate::trust::PolicyError),
    /// The trust policy refused the image's signatures.
    #[error("signature verification failed")]
    Refused(#[from] crate::trust::Refusal),
    /// A key file that cannot be used (bad PEM, wrong password, unsupported algorithm).
    #[error("key {path}")]
    Key {
        path: String,
        #[source]
        source: clb_cosign::CosignError,
    },
    /// Signing or building a signature artifact failed.
    #[error("{context}")]
    Signing {
        context: String,
        #[source]
        source: clb_cosign::CosignError,
    },
    /// Finding, attaching or mounting partitions; the disk crate's error stays typed so the
    /// exit code follows its real cause.
    #[error(transparent)]
    Disk(#[from] clb_disk::DiskError),
    /// Converting a layer to SquashFS.
    #[error(transparent)]
    Convert(#[from] clb_convert::ConvertError),
    /// An external program could not run or failed.
    #[error(transparent)]
    Command(#[from] clb_command::CommandError),
    /// The stage engine's partitioning refused or failed.
    #[error(transparent)]
    Layout(#[from] clb_cloud_config::LayoutError),
    /// A boot state block that does not decode or cannot change as asked.
    #[error(transparent)]
    BootState(#[from] clb_ondisk::bootstate::BootStateError),
    /// Deciding when to reboot: a bad strategy configuration, or the lock server.
    #[error(transparent)]
    Strategy(#[from] crate::strategy::StrategyError),
    /// `/etc/clb/config.yaml` or a drop-in that cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The daemon refused or failed the operation; `code` is its exit code.
    #[error("{message}")]
    Daemon { code: u8, message: String },
    /// The operation was cancelled before it finished.
    #[error("cancelled")]
    Cancelled,
    /// A worker thread of the operation panicked or was cancelled.
    #[error("a worker of this operation stopped unexpectedly")]
    Worker(#[from] tokio::task::JoinError),
    // The binary prints the source after the context, so the message names only the action.
    #[error("{context}")]
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
            ClbError::NoSpace { .. } | ClbError::LayerExpands { .. } => exit::NO_SPACE,
            ClbError::Locked { .. } => exit::LOCKED,
            ClbError::Invalid(_) => exit::INVALID_INPUT,
            ClbError::State(_) => exit::STATE,
            ClbError::Hook(_) => exit::HOOK_FAILED,
            ClbError::Unhealthy(_) => exit::UNHEALTHY,
            ClbError::Signature { .. } => exit::VERIFICATION_FAILED,
            ClbError::Key { .. } | ClbError::SignatureData { .. } => exit::INVALID_INPUT,
            ClbError::Bundle { source, .. } if source.is_invalid_input() => exit::INVALID_INPUT,
            ClbError::Bundle { .. } => exit::VERIFICATION_FAILED,
            ClbError::Signing { .. } => exit::FAILURE,
            ClbError::Policy(_) => exit::INVALID_INPUT,
            ClbError::Refused(_) => exit::VERIFICATION_FAILED,
            ClbError::Disk(e) => disk_exit_code(e),
            ClbError::Convert(e) => convert_exit_code(e),
            ClbError::Command(e) if e.says_no_space() => exit::NO_SPACE,
            ClbError::Command(_) => exit::FAILURE,
            ClbError::Layout(e) => layout_exit_code(e),
            ClbError::BootState(_) => exit::STATE,
            ClbError::Config(_) => exit::INVALID_INPUT,
            ClbError::Worker(_) => exit::FAILURE,
            ClbError::Cancelled => exit::CANCELLED,
            ClbError::Daemon { code, .. } => *code,
            ClbError::Strategy(e) if e.is_config() => exit::INVALID_INPUT,
            ClbError::Strategy(crate::strategy::StrategyError::Cancelled) => exit::CANCELLED,
            ClbError::Strategy(_) => exit::FAILURE,
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

fn disk_exit_code(e: &clb_disk::DiskError) -> u8 {
    use clb_disk::DiskError as D;
    match e {
        D::LabelNotFound { .. }
        | D::DuplicateLabel { .. }
        | D::NoPartitionTable { .. }
        | D::Invalid(_) => exit::INVALID_INPUT,
        D::Io { source, .. } if is_no_space(source) => exit::NO_SPACE,
        D::Command(c) if c.says_no_space() => exit::NO_SPACE,
        D::Busy { .. } | D::NotMounted { .. } | D::Io { .. } | D::Command(_) => exit::STATE,
    }
}

fn layout_exit_code(e: &clb_cloud_config::LayoutError) -> u8 {
    use clb_cloud_config::LayoutError as L;
    match e {
        L::Io { source, .. } if is_no_space(source) => exit::NO_SPACE,
        L::Io { .. } | L::Gpt { .. } | L::Disk(_) | L::Command(_) | L::ListDisks(_) => exit::STATE,
        // The disk or the layout does not fit: the input is at fault.
        _ => exit::INVALID_INPUT,
    }
}

fn convert_exit_code(e: &clb_convert::ConvertError) -> u8 {
    use clb_convert::ConvertError as C;
    match e {
        _ if e.is_invalid_input() => exit::INVALID_INPUT,
        C::NoSpace(_) | C::Expands(_) => exit::NO_SPACE,
        C::Io { source, .. } if is_no_space(source) => exit::NO_SPACE,
        C::Command(c) if c.says_no_space() => exit::NO_SPACE,
        _ => exit::STATE,
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
