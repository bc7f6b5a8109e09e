//! A policy entry applied to the signatures found for an image: which signers verified it,
//! and whether they are enough. No network: the registry code gathers [`Found`].

use clb_command::one_line_deduplicated;
use clb_cosign::{
    BundleError, CosignError, LegacyKeylessError, SignatureLayer, Signer, verify_image_bundle,
    verify_legacy_keyless,
};
use clb_ondisk::{Verification, VerifiedSigner};

use super::policy::{Entry, Requirement, SignerKind, TrustedSigner};

/// The signatures found for one manifest digest.
#[derive(Debug, Default)]
pub struct Found {
    pub digest: String,
    /// The `.sig` layers and where they came from.
    pub legacy: Vec<(String, SignatureLayer)>,
    /// Bundles (JSON) found as referrers, with their artifact manifest's location.
    pub bundles: Vec<(String, String)>,
    /// Why listed signatures could not be read (a referrer whose blob is missing, ...).
    pub unreadable: Vec<String>,
}

impl Found {
    fn is_empty(&self) -> bool {
        self.legacy.is_empty() && self.bundles.is_empty()
    }
}

/// What the policy decided.
#[derive(Debug)]
pub enum Decision {
    Verified(Verification),
    /// Accepted unchecked (`insecure-accept-anything`, `--no-verify`).
    Unchecked,
}

/// Why an image is refused: one line, naming the policy entry.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the policy entry {scope} rejects every image")]
    Rejected { scope: String },
    #[error("policy entry {scope}: no signature found for {digests}{unreadable}")]
    Unsigned {
        scope: String,
        digests: String,
        unreadable: String,
    },
    #[error(
        "policy entry {scope}: {verified} of {threshold} required signers verified {digest}: {reasons}"
    )]
    NotEnough {
        scope: String,
        verified: usize,
        threshold: usize,
        digest: String,
        reasons: String,
    },
}

/// Applies `entry` to the signatures found for each candidate digest (the reference's own,
/// then the platform manifest's); the first candidate that satisfies it wins.
pub fn evaluate(entry: &Entry, candidates: &[Found]) -> Result<Decision, Refusal> {
    let (signers, threshold) = match &entry.requirement {
        Requirement::Reject => {
            return Err(Refusal::Rejected {
                scope: entry.scope.clone(),
            });
        }
        Requirement::AcceptAnything => return Ok(Decision::Unchecked),
        Requirement::Signed { signers, threshold } => (signers, *threshold),
    };
    let mut best: Option<Refusal> = None;
    for found in candidates.iter().filter(|f| !f.is_empty()) {
        let mut verified = Vec::new();
        // Signers that failed alike are named together: one reason, said once.
        let mut reasons: Vec<(String, Vec<&str>)> = Vec::new();
        for signer in signers {
            match verify_signer(signer, found) {
                Ok(record) => verified.push(record),
                Err(reason) => match reasons.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, names)) => names.push(&signer.name),
                    None => reasons.push((reason, vec![&signer.name])),
                },
            }
        }
        // A policy's threshold is at least 1 (checked when it loads), so `verified` has a
        // first signer here.
        if let Some(first) = verified.first().filter(|_| verified.len() >= threshold) {
            return Ok(Decision::Verified(Verification {
                key: first.name.clone(),
                key_fingerprint: first.key_fingerprint.clone().unwrap_or_default(),
                policy_scope: Some(entry.scope.clone()),
                signers: verified,
            }));
        }
        let reasons = reasons
            .into_iter()
            .map(|(reason, names)| format!("{}: {reason}", names.join(", ")))
            .chain(found.unreadable.iter().cloned())
            .collect::<Vec<_>>();
        if best.is_none() {
            best = Some(Refusal::NotEnough {
                scope: entry.scope.clone(),
                verified: verified.len(),
                threshold,
                digest: found.digest.clone(),
                reasons: reasons.join("; "),
            });
        }
    }
    Err(best.unwrap_or_else(|| Refusal::Unsigned {
        scope: entry.scope.clone(),
        digests: candidates
            .iter()
            .map(|f| f.digest.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        unreadable: candidates
            .iter()
            .flat_map(|f| &f.unreadable)
            .map(|u| format!(" ({u})"))
            .collect(),
    }))
}

/// The first signature of `found` that `signer` made, else why none.
fn verify_signer(signer: &TrustedSigner, found: &Found) -> Result<VerifiedSigner, String> {
    // The most telling failure is reported: a signature that verified but is not for this
    // image (rank 2) over one that did not verify (rank 1).
    let mut reason: Option<(u8, String)> = None;
    let mut note = |rank: u8, text: String| {
        if reason.as_ref().is_none_or(|(r, _)| rank > *r) {
            reason = Some((rank, text));
        }
    };
    let record = |format: &str, identity, issuer, fingerprint, logged| VerifiedSigner {
        name: signer.name.clone(),
        kind: match signer.kind {
            SignerKind::Key { .. } => "key",
            SignerKind::Keyless { .. } => "keyless",
        }
        .to_string(),
        format: format.to_string(),
        identity,
        issuer,
        key_fingerprint: fingerprint,
        logged,
    };
    let (bundle_signer, root) = match &signer.kind {
        SignerKind::Key {
            key,
            require_log,
            root,
        } => (
            Signer::Key {
                pem: key.public_key_pem(),
                require_log: *require_log,
            },
            root,
        ),
        SignerKind::Keyless {
            identity,
            issuer,
            root,
        } => (
            Signer::Identity {
                identity: identity.clone(),
                issuer: issuer.clone(),
            },
            root,
        ),
    };
    let fingerprint = match &signer.kind {
        SignerKind::Key { key, .. } => Some(key.fingerprint.clone()),
        SignerKind::Keyless { .. } => None,
    };
    for (location, json) in &found.bundles {
        match verify_image_bundle(json, root, &found.digest, &bundle_signer) {
            Ok(v) => {
                return Ok(record(
                    "bundle",
                    v.identity,
                    v.issuer,
                    fingerprint,
                    v.logged,
                ));
            }
            Err(e) => {
                let text = one_line_deduplicated(&e);
                tracing::debug!(%location, error = %text, "bundle rejected");
                note(
                    if matches!(e, BundleError::Statement(_)) {
                        2
                    } else {
                        1
                    },
                    text,
                );
            }
        }
    }
    for (location, layer) in &found.legacy {
        let result = match &signer.kind {
            SignerKind::Key { key, .. } if !clb_cosign::is_keyless(layer) => clb_cosign::verify(
                std::slice::from_ref(layer),
                &found.digest,
                std::slice::from_ref(key),
            )
            .map(|_| record("sig", None, None, fingerprint.clone(), false))
            .map_err(|e| {
                let signed = matches!(
                    e,
                    CosignError::DigestMismatch { .. } | CosignError::MalformedPayload(_)
                );
                (if signed { 2 } else { 1 }, one_line_deduplicated(&e))
            }),
            SignerKind::Keyless { .. } if clb_cosign::is_keyless(layer) => {
                verify_legacy_keyless(layer, root, &found.digest, &bundle_signer)
                    .map(|v| record("sig", v.identity, v.issuer, None, v.logged))
                    .map_err(|e| {
                        let signed = matches!(e, LegacyKeylessError::Payload(_));
                        (if signed { 2 } else { 1 }, one_line_deduplicated(&e))
                    })
            }
            _ => continue,
        };
        match result {
            Ok(r) => return Ok(r),
            Err((rank, text)) => {
                tracing::debug!(%location, error = %text, "signature layer rejected");
                note(rank, text);
            }
        }
    }
    Err(reason.map_or_else(
        || "no signature of this signer".to_string(),
        |(_, text)| text,
    ))
}
