//! Sigstore bundles (v0.1 to v0.3), verified offline against a trusted root: keyless (a
//! Fulcio certificate for an identity and issuer, its SCT, the Rekor entry's SET or inclusion
//! proof and signed checkpoint, RFC 3161 timestamps) or with a public key. The checks are
//! sigstore-verify's (see docs/decisions.md); this module adds what it leaves to callers:
//! identity and issuer given as regular expressions, and requiring every proof it reports.

use sha2::{Digest as _, Sha256};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::{Artifact, Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

/// Why a bundle did not verify, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The trusted root is not Sigstore's `trusted_root.json` format, or its material is
    /// unusable (duplicate logs, bad validity windows, unparsable keys).
    #[error("trusted root")]
    TrustedRoot(#[source] sigstore_verify::Error),
    /// The trusted root file is not valid JSON of the expected shape.
    #[error("trusted root")]
    TrustedRootFormat(#[source] sigstore_verify::trust_root::Error),
    /// The bundle is not a Sigstore bundle (JSON, media type, fields).
    #[error("bundle")]
    BundleFormat(#[source] sigstore_verify::types::Error),
    /// A public key that is not a PEM `PUBLIC KEY`.
    #[error("public key")]
    Key(#[source] sigstore_verify::types::Error),
    /// A `sha256:` digest that is not 64 hex digits.
    #[error("artifact digest {0:?}")]
    Digest(String),
    /// A regular expression for the identity or issuer that does not compile.
    #[error("regular expression {pattern:?}")]
    Pattern {
        pattern: String,
        #[source]
        source: regex_lite::Error,
    },
    /// The signature, certificate, transparency log or timestamp checks failed.
    #[error("bundle does not verify")]
    Verification(#[source] sigstore_verify::Error),
    /// The certificate's identity is not the one the policy accepts.
    #[error("certificate identity {found:?} does not match {wanted}")]
    Identity { found: String, wanted: String },
    /// The certificate's OIDC issuer is not the one the policy accepts.
    #[error("certificate issuer {found:?} does not match {wanted}")]
    Issuer { found: String, wanted: String },
    /// A key-signed bundle without a transparency log entry, where the policy requires one.
    #[error("bundle has no transparency log entry and the policy requires one")]
    NoLogEntry,
    /// A key-signed bundle with no log entry or timestamp that does not verify.
    #[error("bundle does not verify: {0}")]
    Unlogged(String),
    /// A DSSE statement that is not cosign's image signature.
    #[error("{0}")]
    Statement(String),
}

impl BundleError {
    /// True when the input (trusted root, key, pattern, digest) is at fault rather than the
    /// signature: the caller's exit code for invalid input.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            BundleError::TrustedRoot(_)
                | BundleError::TrustedRootFormat(_)
                | BundleError::Key(_)
                | BundleError::Digest(_)
                | BundleError::Pattern { .. }
        )
    }
}

/// A value the certificate must carry: exactly this text, or text matching a regular
/// expression (unanchored, as cosign's `--certificate-identity-regexp` matches).
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Regex(regex_lite::Regex),
}

impl Matcher {
    /// A matcher for `pattern` as a regular expression.
    pub fn regex(pattern: &str) -> Result<Matcher, BundleError> {
        regex_lite::Regex::new(pattern)
            .map(Matcher::Regex)
            .map_err(|source| BundleError::Pattern {
                pattern: pattern.to_string(),
                source,
            })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(r) => r.is_match(value),
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => format!("{s:?}"),
            Matcher::Regex(r) => format!("/{}/", r.as_str()),
        }
    }
}

/// Who must have signed.
#[derive(Debug, Clone)]
pub enum Signer {
    /// The holder of this public key (PEM). With `require_log`, the bundle must carry a
    /// transparency log entry; without, entries it carries are still verified.
    Key { pem: String, require_log: bool },
    /// A Fulcio certificate for this identity (SAN) from this OIDC issuer.
    Identity { identity: Matcher, issuer: Matcher },
}

/// What was signed: the bytes, or their SHA-256 digest.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    Bytes(&'a [u8]),
    /// 64 hex digits, without the `sha256:` prefix.
    Sha256(&'a str),
}

/// What a verified bundle proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleVerified {
    /// The certificate's identity and issuer (keyless only).
    pub identity: Option<String>,
    pub issuer: Option<String>,
    /// When the transparency log integrated the entry, RFC 3339.
    pub integrated_time: Option<String>,
    /// The bundle carried transparency log entries, and they verified.
    pub logged: bool,
}

/// A parsed `trusted_root.json`, to verify many bundles against.
pub struct SigstoreRoot(TrustedRoot);

impl std::fmt::Debug for SigstoreRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigstoreRoot")
    }
}

impl SigstoreRoot {
    pub fn from_json(json: &str) -> Result<Self, BundleError> {
        let root = TrustedRoot::from_json(json).map_err(BundleError::TrustedRootFormat)?;
        // Rejects a root whose material is unusable now rather than at the first bundle.
        Verifier::new(&root).map_err(BundleError::TrustedRoot)?;
        Ok(Self(root))
    }
}

/// Verifies `bundle_json` for `signed` against `trusted_root_json`: the signature, and every
/// proof the bundle must carry (certificate chain at signing time, SCT and transparency log
/// for keyless; the transparency log and timestamps for a key).
pub fn verify_bundle(
    bundle_json: &str,
    trusted_root_json: &str,
    signed: Signed,
    signer: &Signer,
) -> Result<BundleVerified, BundleError> {
    verify_bundle_with(
        bundle_json,
        &SigstoreRoot::from_json(trusted_root_json)?,
        signed,
        signer,
    )
}

/// [`verify_bundle`] against an already parsed root.
pub fn verify_bundle_with(
    bundle_json: &str,
    root: &SigstoreRoot,
    signed: Signed,
    signer: &Signer,
) -> Result<BundleVerified, BundleError> {
    let verifier = Verifier::new(&root.0).map_err(BundleError::TrustedRoot)?;
    let bundle = Bundle::from_json(bundle_json).map_err(BundleError::BundleFormat)?;
    let logged = !bundle.verification_material.tlog_entries.is_empty();
    let artifact = match signed {
        Signed::Bytes(b) => Artifact::from_blob(b),
        Signed::Sha256(hex) => Artifact::from_digest(
            Sha256Hash::from_hex(hex).map_err(|_| BundleError::Digest(hex.to_string()))?,
        ),
    };
    match signer {
        Signer::Key { pem, require_log } => {
            let key = DerPublicKey::from_pem(pem).map_err(BundleError::Key)?;
            if !require_log && crate::unlogged::has_no_time_evidence(&bundle) {
                let sha256 = match signed {
                    Signed::Bytes(b) => hex::encode(Sha256::digest(b)),
                    Signed::Sha256(hex) => hex.to_string(),
                };
                let trusted = crate::keys::load_trusted_key(pem.as_bytes(), "key")
                    .map_err(|e| BundleError::Unlogged(e.to_string()))?;
                crate::unlogged::verify_unlogged(&bundle, &trusted, &sha256)
                    .map_err(|why| BundleError::Unlogged(why.to_string()))?;
                return Ok(BundleVerified {
                    identity: None,
                    issuer: None,
                    integrated_time: None,
                    logged: false,
                });
            }
            let policy = match (logged, require_log) {
                (true, _) => PublicKeyVerificationPolicy::new(key),
                (false, true) => return Err(BundleError::NoLogEntry),
                // Nothing to check in a log: the signature (and any timestamp) still is.
                (false, false) => PublicKeyVerificationPolicy::new(key).skip_tlog_unsafe(),
            };
            let result = verifier
                .verify(artifact, &bundle, &policy)
                .map_err(BundleError::Verification)?;
            Ok(BundleVerified {
                identity: None,
                issuer: None,
                integrated_time: result.integrated_time().map(|t| t.to_string()),
                logged,
            })
        }
        Signer::Identity { identity, issuer } => {
            // Exact values go to sigstore-verify's own policy; patterns are checked here on
            // what it reports, after it verified everything else.
            let policy = match (identity, issuer) {
                (Matcher::Exact(id), Matcher::Exact(iss)) => {
                    VerificationPolicy::new(id.as_str(), iss.as_str())
                }
                _ => VerificationPolicy::any_identity(),
            };
            let result = verifier
                .verify(artifact, &bundle, &policy)
                .map_err(BundleError::Verification)?;
            let found_identity = result
                .identity()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default();
            let found_issuer = result.issuer().unwrap_or_default().to_string();
            if !identity.matches(&found_identity) {
                return Err(BundleError::Identity {
                    found: found_identity,
                    wanted: identity.describe(),
                });
            }
            if !issuer.matches(&found_issuer) {
                return Err(BundleError::Issuer {
                    found: found_issuer,
                    wanted: issuer.describe(),
                });
            }
            Ok(BundleVerified {
                identity: Some(found_identity),
                issuer: Some(found_issuer),
                integrated_time: result.integrated_time().map(|t| t.to_string()),
                logged,
            })
        }
    }
}

/// The Sigstore trusted root clb carries (production, or staging): the default when a host
/// has none of its own. It is as fresh as this build; hosts should keep their own.
pub fn embedded_trusted_root(staging: bool) -> &'static str {
    if staging {
        sigstore_verify::trust_root::SIGSTORE_STAGING_TRUSTED_ROOT
    } else {
        sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT
    }
}
