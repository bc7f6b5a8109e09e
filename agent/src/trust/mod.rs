//! Which signatures an image needs: the trust policy, and its verdict on what was found.
//! Fetching the signatures is [`crate::signatures`]' job.

mod error;
mod evaluate;
mod policy;

pub use error::PolicyError;
pub use evaluate::{Decision, Found, Refusal, evaluate};
pub use policy::{Entry, HOST_POLICY, Requirement, SignerKind, TrustPolicy, TrustedSigner};

use std::path::{Path, PathBuf};

/// The policy an operation uses: `--no-verify` accepts anything; `--key` replaces any
/// policy file; else `--policy`, else the host's `/etc/clb/policy.yaml`.
pub fn resolve(
    verify: bool,
    keys: &[PathBuf],
    policy: Option<&Path>,
) -> Result<TrustPolicy, PolicyError> {
    if !verify {
        return Ok(TrustPolicy::accept_anything());
    }
    if !keys.is_empty() {
        return TrustPolicy::from_keys(keys);
    }
    match policy {
        Some(path) => TrustPolicy::load(path),
        None if Path::new(HOST_POLICY).exists() => TrustPolicy::load(Path::new(HOST_POLICY)),
        None => Err(PolicyError::Missing),
    }
}
