//! Typed errors. The agent maps them to exit codes: verification failures
//! (the image is not trusted) vs invalid input (the operator's keys or
//! arguments are wrong), see [`CosignError::is_verification_failure`].

use thiserror::Error;

/// Everything that can go wrong while signing or verifying. Messages are one
/// line so they can be shown as-is in `clb` output and the journal.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CosignError {
    /// The signature manifest has no simple-signing layer at all.
    #[error(
        "image is not signed: no cosign signature layer (application/vnd.dev.cosign.simplesigning.v1+json) found"
    )]
    Unsigned,

    /// Signature layers exist but none verifies under any trusted key.
    #[error(
        "no signature verifies under the {} trusted key(s) (sha256 fingerprints: {})",
        tried.len(),
        tried.join(", ")
    )]
    NoKeyMatched {
        /// Fingerprints of the keys that were tried.
        tried: Vec<String>,
    },

    /// A correctly signed payload names another manifest digest: a valid
    /// signature replayed onto a different image.
    #[error("signed payload is for manifest {found}, not for {expected}")]
    DigestMismatch { expected: String, found: String },

    /// The signature verifies but the signed payload is not a cosign
    /// simple-signing document.
    #[error("malformed signed payload: {0}")]
    MalformedPayload(String),

    /// The signature annotation is missing or not base64.
    #[error("bad signature encoding: {0}")]
    BadSignatureEncoding(String),

    /// A key file cannot be used: unreadable PEM, unsupported key type,
    /// wrong password.
    #[error("bad key: {0}")]
    BadKey(String),

    /// `verify` was called with an empty key list.
    #[error("no trusted public keys configured")]
    NoTrustedKeys,

    /// A manifest digest is not of the form `sha256:<64 hex>`.
    #[error(
        "invalid manifest digest {0:?}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>"
    )]
    InvalidDigest(String),

    /// A signature manifest (JSON) cannot be parsed or built.
    #[error("invalid signature manifest: {0}")]
    InvalidManifest(String),

    /// The crypto backend failed while generating a key or signing.
    #[error("signing failed: {0}")]
    Signing(String),
}

impl CosignError {
    /// True when the image must be rejected as untrusted ("verification
    /// failed"); false when the input (keys, digest, arguments) is at fault
    /// ("invalid input") or an internal error occurred.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            CosignError::Unsigned
                | CosignError::NoKeyMatched { .. }
                | CosignError::DigestMismatch { .. }
                | CosignError::MalformedPayload(_)
                | CosignError::BadSignatureEncoding(_)
                | CosignError::InvalidManifest(_)
        )
    }
}
