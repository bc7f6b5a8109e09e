//! Why a trust policy cannot be used: each a problem of the input (exit code 3).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("verification needs --key, --policy or /etc/clb/policy.yaml (or pass --no-verify)")]
    Missing,
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("policy {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("policy {}", path.display())]
    Pattern {
        path: PathBuf,
        #[source]
        source: clb_cosign::BundleError,
    },
    #[error("key {}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: clb_cosign::CosignError,
    },
    #[error("trusted root {}", path.display())]
    TrustedRoot {
        path: PathBuf,
        #[source]
        source: clb_cosign::BundleError,
    },
}
