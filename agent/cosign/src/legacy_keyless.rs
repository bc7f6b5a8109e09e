//! Keyless signatures in cosign's legacy `.sig` layout: the layer carries the Fulcio
//! certificate, its chain and Rekor's signed entry timestamp in annotations. They are
//! rebuilt into the v0.1 Sigstore bundle they are equivalent to (certificate chain, SET,
//! message signature over the payload), so one verifier checks both layouts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::bundle::{
    BundleError, BundleVerified, Signed, Signer, SigstoreRoot, verify_bundle_with,
};
use crate::error::CosignError;
use crate::pem;
use crate::verify::{SignatureLayer, check_signed_payload};

pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
const BUNDLE_V01: &str = "application/vnd.dev.sigstore.bundle+json;version=0.1";

/// Why a legacy keyless layer did not verify.
#[derive(Debug, thiserror::Error)]
pub enum LegacyKeylessError {
    /// The annotations do not make a bundle (bad PEM, no Rekor bundle, bad JSON).
    #[error("keyless signature layer: {0}")]
    Malformed(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The signature verified but its payload is not for this image.
    #[error(transparent)]
    Payload(#[from] CosignError),
}

/// True when the layer carries a Fulcio certificate (a keyless signature).
pub fn is_keyless(layer: &SignatureLayer) -> bool {
    layer.annotations.contains_key(CERTIFICATE_ANNOTATION)
}

/// Verifies a keyless legacy layer for `manifest_digest`: the rebuilt bundle against the
/// root and `signer`, then (only once signed) the payload's digest.
pub fn verify_legacy_keyless(
    layer: &SignatureLayer,
    root: &SigstoreRoot,
    manifest_digest: &str,
    signer: &Signer,
) -> Result<BundleVerified, LegacyKeylessError> {
    let bundle = legacy_bundle(layer)?;
    let verified = verify_bundle_with(&bundle, root, Signed::Bytes(&layer.payload), signer)?;
    check_signed_payload(&layer.payload, manifest_digest)?;
    Ok(verified)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryBody {
    kind: String,
    api_version: String,
}

/// The v0.1 bundle equivalent to a legacy keyless layer.
pub fn legacy_bundle(layer: &SignatureLayer) -> Result<String, LegacyKeylessError> {
    let malformed = |what: String| LegacyKeylessError::Malformed(what);
    let annotation = |name: &str| {
        layer
            .annotations
            .get(name)
            .ok_or_else(|| malformed(format!("no {name} annotation")))
    };
    let leaf = pem::parse_all(annotation(CERTIFICATE_ANNOTATION)?.as_bytes())
        .map_err(|e| malformed(format!("certificate: {e}")))?;
    let chain = match layer.annotations.get(CHAIN_ANNOTATION) {
        Some(text) => {
            pem::parse_all(text.as_bytes()).map_err(|e| malformed(format!("chain: {e}")))?
        }
        None => Vec::new(),
    };
    // The chain ends with the root, which the trusted root provides; a v0.1 bundle's chain
    // may leave it out, and sigstore-verify wants it out.
    let intermediates = chain.len().saturating_sub(1);
    let certificates: Vec<_> = leaf
        .iter()
        .take(1)
        .chain(chain.iter().take(intermediates))
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| json!({"rawBytes": STANDARD.encode(&b.der)}))
        .collect();
    if certificates.is_empty() {
        return Err(malformed(
            "no certificate in the certificate annotation".into(),
        ));
    }
    let rekor: RekorBundle = serde_json::from_str(annotation(REKOR_BUNDLE_ANNOTATION)?)
        .map_err(|e| malformed(format!("Rekor bundle: {e}")))?;
    let body = STANDARD
        .decode(&rekor.payload.body)
        .map_err(|e| malformed(format!("Rekor entry body is not base64: {e}")))?;
    let entry: EntryBody =
        serde_json::from_slice(&body).map_err(|e| malformed(format!("Rekor entry body: {e}")))?;
    let log_id = hex::decode(&rekor.payload.log_id)
        .map_err(|e| malformed(format!("Rekor log id is not hex: {e}")))?;
    let bundle = json!({
        "mediaType": BUNDLE_V01,
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": certificates},
            "tlogEntries": [{
                "logIndex": rekor.payload.log_index.to_string(),
                "logId": {"keyId": STANDARD.encode(log_id)},
                "kindVersion": {"kind": entry.kind, "version": entry.api_version},
                "integratedTime": rekor.payload.integrated_time.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
                "canonicalizedBody": rekor.payload.body,
            }],
        },
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": STANDARD.encode(Sha256::digest(&layer.payload)),
            },
            "signature": layer.signature_b64.trim(),
        },
    });
    serde_json::to_string(&bundle).map_err(|e| malformed(e.to_string()))
}
