//! Key-signed DSSE bundles with no transparency log entry and no timestamp: what
//! `cosign sign --key --tlog-upload=false` writes for a host that signs offline. sigstore-verify
//! refuses every bundle without signing-time evidence, which a key does not need (it has no
//! validity window), so this checks what there is: the DSSE signature over its
//! pre-authentication encoding, and a statement subject naming the artifact's digest.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sigstore::crypto::Signature;

use crate::keys::load_trusted_key;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    dsse_envelope: Option<Envelope>,
    #[serde(default)]
    verification_material: Material,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Material {
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
    #[serde(default)]
    timestamp_verification_data: Option<Timestamps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Timestamps {
    #[serde(default)]
    rfc3161_timestamps: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

/// True when the bundle carries neither a transparency log entry nor a timestamp.
pub(crate) fn has_no_time_evidence(bundle_json: &str) -> bool {
    serde_json::from_str::<Bundle>(bundle_json).is_ok_and(|b| {
        b.verification_material.tlog_entries.is_empty()
            && b.verification_material
                .timestamp_verification_data
                .is_none_or(|t| t.rfc3161_timestamps.is_empty())
    })
}

/// Verifies an evidence-free DSSE bundle with the key `pem` for the artifact whose SHA-256
/// is `artifact_sha256` (hex); the error says why not.
pub(crate) fn verify_unlogged(
    bundle_json: &str,
    pem: &str,
    artifact_sha256: &str,
) -> Result<(), String> {
    let refuse = |why: &str| why.to_string();
    let bundle: Bundle =
        serde_json::from_str(bundle_json).map_err(|e| format!("not a bundle: {e}"))?;
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(refuse(
            "a message signature without a transparency log entry or timestamp",
        ));
    };
    let key = load_trusted_key(pem.as_bytes(), "key").map_err(|e| refuse(&e.to_string()))?;
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|_| refuse("DSSE payload is not base64"))?;
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        envelope.payload_type.len(),
        envelope.payload_type,
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    let signed_by_key = envelope.signatures.iter().any(|s| {
        key.key
            .verify_signature(Signature::Base64Encoded(s.sig.as_bytes()), &pae)
            .is_ok()
    });
    if !signed_by_key {
        return Err(refuse("the DSSE signature does not verify with the key"));
    }
    // Parsed only once signed: nothing unsigned is interpreted.
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|_| refuse("DSSE payload is not a statement"))?;
    let wanted = artifact_sha256.to_ascii_lowercase();
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256") == Some(&wanted))
    {
        return Err(refuse("the statement's subject is another artifact"));
    }
    Ok(())
}
