//! Key-based verification of cosign simple-signing signatures.

use serde::Deserialize;
use sigstore::crypto::Signature;

use crate::error::CosignError;
use crate::keys::TrustedKey;
use crate::payload::{SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE, validate_digest};

/// One signature layer as found in the signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob bytes, already digest-checked by the caller against
    /// the layer descriptor.
    pub payload: Vec<u8>,
    /// The `dev.cosignproject.cosign/signature` annotation (base64 DER).
    /// Empty if the layer had no such annotation.
    pub signature_b64: String,
    /// The layer descriptor's media type.
    pub media_type: String,
    /// All the layer's annotations (a keyless signer's certificate, chain and Rekor bundle).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What was verified, for the slot's "verified with" record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// [`TrustedKey::source`] of the key whose signature was accepted.
    pub key_source: String,
    /// [`TrustedKey::fingerprint`] of that key.
    pub key_fingerprint: String,
    /// `critical.identity.docker-reference` of the accepted payload
    /// (informational: not compared, as in cosign).
    pub docker_reference: String,
    /// The manifest digest the accepted payload names (== the one asked for).
    pub manifest_digest: String,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// How far one layer got; the most advanced failure over all layers is
/// reported, because it is the most informative one (a validly signed payload
/// for another digest says far more than "some other layer is not ours").
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    WrongMediaType,
    BadEncoding,
    NoKey,
    Malformed,
    Mismatch,
}

/// Accepts iff at least one layer
/// 1. has media type `application/vnd.dev.cosign.simplesigning.v1+json`,
/// 2. carries a signature over its payload bytes that verifies under one of
///    `keys` (several keys are allowed, for rotation),
/// 3. has a payload that parses as a simple-signing document of type
///    `cosign container image signature`, and
/// 4. names exactly `manifest_digest` in `critical.image.docker-manifest-digest`.
///
/// The payload is parsed only after its signature verified: nothing unsigned
/// is interpreted. Keys are tried in order; the first accepting key is
/// reported. Otherwise the error says why: [`CosignError::Unsigned`] (no
/// simple-signing layer), [`CosignError::DigestMismatch`] (a valid signature
/// for another image), [`CosignError::MalformedPayload`],
/// [`CosignError::NoKeyMatched`], or [`CosignError::BadSignatureEncoding`],
/// in that order of precedence.
pub fn verify(
    layers: &[SignatureLayer],
    manifest_digest: &str,
    keys: &[TrustedKey],
) -> Result<Verified, CosignError> {
    validate_digest(manifest_digest)?;
    if keys.is_empty() {
        return Err(CosignError::NoTrustedKeys);
    }
    let mut worst: Option<(Stage, CosignError)> = None;
    let mut note = |stage: Stage, err: CosignError| {
        if worst.as_ref().is_none_or(|(s, _)| stage > *s) {
            worst = Some((stage, err));
        }
    };
    for (i, layer) in layers.iter().enumerate() {
        match verify_layer(layer, manifest_digest, keys) {
            Ok(v) => {
                tracing::info!(
                    layer = i,
                    key = %v.key_source,
                    fingerprint = %v.key_fingerprint,
                    digest = manifest_digest,
                    "cosign signature verified"
                );
                return Ok(v);
            }
            Err((stage, err)) => {
                tracing::debug!(layer = i, error = %err, "signature layer rejected");
                note(stage, err);
            }
        }
    }
    Err(match worst {
        None | Some((Stage::WrongMediaType, _)) => CosignError::Unsigned,
        Some((_, err)) => err,
    })
}

fn verify_layer(
    layer: &SignatureLayer,
    manifest_digest: &str,
    keys: &[TrustedKey],
) -> Result<Verified, (Stage, CosignError)> {
    if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
        return Err((Stage::WrongMediaType, CosignError::Unsigned));
    }
    if layer.signature_b64.trim().is_empty() {
        return Err((
            Stage::BadEncoding,
            CosignError::BadSignatureEncoding(
                "layer has no dev.cosignproject.cosign/signature annotation".into(),
            ),
        ));
    }
    // Decode once up front so an undecodable annotation is reported as such
    // rather than as a key mismatch. Newlines are tolerated (some cosign
    // versions wrap the base64, and Go's decoder ignores them).
    let sig = Signature::Base64Encoded(layer.signature_b64.as_bytes());
    if let Err(e) = sig.decode_bytes() {
        return Err((
            Stage::BadEncoding,
            CosignError::BadSignatureEncoding(format!("signature annotation is not base64: {e}")),
        ));
    }
    let key = keys.iter().find(|k| {
        k.key
            .verify_signature(
                Signature::Base64Encoded(layer.signature_b64.as_bytes()),
                &layer.payload,
            )
            .is_ok()
    });
    let Some(key) = key else {
        return Err((
            Stage::NoKey,
            CosignError::NoKeyMatched {
                tried: keys.iter().map(|k| k.fingerprint.clone()).collect(),
            },
        ));
    };
    let docker_reference = check_payload(&layer.payload, manifest_digest)?;
    Ok(Verified {
        key_source: key.source.clone(),
        key_fingerprint: key.fingerprint.clone(),
        docker_reference,
        manifest_digest: manifest_digest.to_string(),
    })
}

/// Checks a payload whose signature verified: a simple-signing document naming exactly
/// `manifest_digest`. Returns its docker-reference.
fn check_payload(payload: &[u8], manifest_digest: &str) -> Result<String, (Stage, CosignError)> {
    let payload: Payload = serde_json::from_slice(payload).map_err(|e| {
        (
            Stage::Malformed,
            CosignError::MalformedPayload(format!("not a simple-signing document: {e}")),
        )
    })?;
    if payload.critical.type_name != SIMPLE_SIGNING_TYPE {
        return Err((
            Stage::Malformed,
            CosignError::MalformedPayload(format!(
                "critical.type is {:?}, expected {SIMPLE_SIGNING_TYPE:?}",
                payload.critical.type_name
            )),
        ));
    }
    let found = payload.critical.image.docker_manifest_digest;
    if found != manifest_digest {
        return Err((
            Stage::Mismatch,
            CosignError::DigestMismatch {
                expected: manifest_digest.to_string(),
                // Escaped so a hostile payload cannot break the one-line
                // message; a real digest is unchanged.
                found: found.escape_debug().to_string(),
            },
        ));
    }
    Ok(payload.critical.identity.docker_reference)
}

/// [`check_payload`] for callers outside this module: the payload of a signature that
/// verified by other means (a keyless legacy layer). Public so that `fuzz/` reaches the
/// payload parser without a valid signature in front of it.
pub fn check_signed_payload(payload: &[u8], manifest_digest: &str) -> Result<String, CosignError> {
    check_payload(payload, manifest_digest).map_err(|(_, e)| e)
}
