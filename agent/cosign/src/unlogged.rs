//! Key-signed DSSE bundles with no transparency log entry and no timestamp: what
//! `cosign sign --key --tlog-upload=false` writes for a host that signs offline. sigstore-verify
//! refuses every bundle without signing-time evidence, which a key does not need (it has no
//! validity window), so this checks what there is: the DSSE signature over its
//! pre-authentication encoding, and a statement subject naming the artifact's digest.

use serde::Deserialize;
use sigstore::crypto::Signature;
use sigstore_verify::types::Bundle;
use sigstore_verify::types::bundle::SignatureContent;

use crate::keys::TrustedKey;

#[derive(Deserialize)]
struct Statement {
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

/// True when the bundle carries neither a transparency log entry nor a timestamp.
pub(crate) fn has_no_time_evidence(bundle: &Bundle) -> bool {
    let material = &bundle.verification_material;
    material.tlog_entries.is_empty()
        && material
            .timestamp_verification_data
            .rfc3161_timestamps
            .is_empty()
}

/// Verifies an evidence-free DSSE bundle with `key` for the artifact whose SHA-256 is
/// `artifact_sha256` (hex); the error says why not.
pub(crate) fn verify_unlogged(
    bundle: &Bundle,
    key: &TrustedKey,
    artifact_sha256: &str,
) -> Result<(), &'static str> {
    let SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
        return Err("a message signature without a transparency log entry or timestamp");
    };
    key.key
        .verify_signature(
            Signature::Raw(envelope.signature.sig.as_bytes()),
            &envelope.pae(),
        )
        .map_err(|_| "the DSSE signature does not verify with the key")?;
    // Parsed only once signed: nothing unsigned is interpreted.
    let statement: Statement = serde_json::from_slice(envelope.payload.as_bytes())
        .map_err(|_| "the DSSE payload is not a statement")?;
    let wanted = artifact_sha256.to_ascii_lowercase();
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256") == Some(&wanted))
    {
        return Err("the statement's subject is another artifact");
    }
    Ok(())
}
