//! cosign v3's image signatures: a Sigstore bundle whose DSSE statement names the image's
//! manifest digest, pushed as an OCI artifact manifest whose `subject` is the image, found
//! through the OCI referrers API or its `sha256-<hex>` index tag fallback.
//!
//! Pure functions: the agent's registry code fetches and pushes the bytes built and read here.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sigstore_verify::types::pae;

use crate::artifact::Blob;
use crate::bundle::{
    BundleError, BundleVerified, Signed, Signer, SigstoreRoot, verify_bundle_with,
};
use crate::error::CosignError;
use crate::keys::SigningKey;
use crate::payload::validate_digest;

/// The bundle media type cosign v3 writes (also the artifact type of its manifest).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Every Sigstore bundle media type starts so (v0.1 and v0.2 spell the version differently).
const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The OCI empty descriptor's media type, and its `{}` blob.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_BLOB: &[u8] = b"{}";
/// The predicate of cosign's image signature statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A bundle is a few kilobytes; anything far larger is not one.
pub const MAX_BUNDLE_SIZE: u64 = 1 << 20;

/// True for a Sigstore bundle media type or artifact type of any version.
pub fn is_bundle_media_type(media_type: &str) -> bool {
    media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX)
}

/// An OCI content descriptor, as manifests and indexes list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The bundle layer of an artifact manifest listed as a referrer of `subject_digest`: the
/// manifest must name that subject and carry exactly one bundle layer of sane size.
pub fn bundle_layer(manifest_json: &[u8], subject_digest: &str) -> Result<Descriptor, CosignError> {
    let m: ArtifactManifest = serde_json::from_slice(manifest_json)
        .map_err(|e| CosignError::InvalidManifest(format!("not an OCI artifact manifest: {e}")))?;
    let subject = m.subject.as_ref().map(|s| s.digest.as_str());
    if subject != Some(subject_digest) {
        return Err(CosignError::InvalidManifest(format!(
            "bundle manifest's subject is {}, not {subject_digest}",
            subject.unwrap_or("missing")
        )));
    }
    let mut bundles = m
        .layers
        .into_iter()
        .filter(|l| is_bundle_media_type(&l.media_type));
    match (bundles.next(), bundles.next()) {
        (Some(layer), None) if layer.size <= MAX_BUNDLE_SIZE => Ok(layer),
        (Some(layer), None) => Err(CosignError::InvalidManifest(format!(
            "bundle layer of {} bytes (at most {MAX_BUNDLE_SIZE})",
            layer.size
        ))),
        (None, _) => Err(CosignError::InvalidManifest("no bundle layer".into())),
        (Some(_), Some(_)) => Err(CosignError::InvalidManifest("several bundle layers".into())),
    }
}

/// The bundle descriptors of a referrers index (the API's answer or the fallback tag's
/// index), whatever the server filtered.
pub fn bundle_referrers(index_json: &[u8]) -> Result<Vec<Descriptor>, CosignError> {
    referrers_where(index_json, is_bundle_media_type)
}

/// The fallback index entries cosign 3.0.0 to 3.0.6 wrote for bundles: typed as the empty
/// config (`application/vnd.oci.empty.v1+json`), not as bundles. Only their manifests tell.
pub fn untyped_referrers(index_json: &[u8]) -> Result<Vec<Descriptor>, CosignError> {
    referrers_where(index_json, |t| t == EMPTY_MEDIA_TYPE)
}

fn referrers_where(
    index_json: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Descriptor>, CosignError> {
    let index: Index = serde_json::from_slice(index_json)
        .map_err(|e| CosignError::InvalidManifest(format!("not an OCI image index: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref().is_some_and(&wanted))
        .collect())
}

/// Verifies an image's bundle for the manifest `digest` (`sha256:<hex>`) and, once it
/// verified, that a DSSE statement is cosign's image signature (a message signature over
/// the digest needs no statement).
pub fn verify_image_bundle(
    bundle_json: &str,
    root: &SigstoreRoot,
    digest: &str,
    signer: &Signer,
) -> Result<BundleVerified, BundleError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BundleError::Digest(digest.to_string()))?;
    let verified = verify_bundle_with(bundle_json, root, Signed::Sha256(hex), signer)?;
    check_statement(bundle_json)?;
    Ok(verified)
}

fn check_statement(bundle_json: &str) -> Result<(), BundleError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload_type: String,
        payload: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Content {
        dsse_envelope: Option<Envelope>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Statement {
        predicate_type: String,
    }
    let bad = |what: String| BundleError::Statement(what);
    let content: Content =
        serde_json::from_str(bundle_json).map_err(|e| bad(format!("bundle: {e}")))?;
    let Some(envelope) = content.dsse_envelope else {
        return Ok(());
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(bad(format!(
            "DSSE payload type {:?}, not an in-toto statement",
            envelope.payload_type
        )));
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|e| bad(format!("DSSE payload is not base64: {e}")))?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("DSSE payload is not an in-toto statement: {e}")))?;
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(bad(format!(
            "statement predicate {:?} is not an image signature ({COSIGN_SIGN_PREDICATE})",
            statement.predicate_type
        )));
    }
    Ok(())
}

/// Signs the image manifest `digest` as `cosign sign --key` (v3, no transparency log)
/// does: a v0.3 bundle with the key's hint and a DSSE envelope of an in-toto statement
/// whose subject is the digest (unnamed, as cosign leaves it) and whose predicate is
/// [`COSIGN_SIGN_PREDICATE`]. Empty fields are left out, as cosign's protojson does.
pub fn sign_image_bundle(key: &SigningKey, digest: &str) -> Result<Vec<u8>, CosignError> {
    validate_digest(digest)?;
    let hex = &digest["sha256:".len()..];
    let statement = json!({
        "_type": STATEMENT_V1,
        "subject": [{"digest": {"sha256": hex}, "annotations": {}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    });
    let statement =
        serde_json::to_vec(&statement).map_err(|e| CosignError::Signing(e.to_string()))?;
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &statement))?;
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key.hint()},
        },
        "dsseEnvelope": {
            "payload": STANDARD.encode(&statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": signature}],
        },
    });
    serde_json::to_vec(&bundle).map_err(|e| CosignError::Signing(e.to_string()))
}

/// Everything to push for one bundle: the blobs, then `manifest` by digest, then the
/// fallback index (see [`referrers_index_with`]).
#[derive(Debug, Clone)]
pub struct BundleArtifact {
    pub config: Blob,
    pub bundle: Blob,
    pub manifest: Vec<u8>,
    /// The manifest's descriptor, as a referrers index lists it.
    pub descriptor: Descriptor,
}

/// The artifact manifest cosign v3 pushes for `bundle_json`, attached to `subject` (the
/// image manifest's descriptor), created at `created` (RFC 3339).
pub fn bundle_artifact(
    bundle_json: Vec<u8>,
    subject: Descriptor,
    created: &str,
) -> Result<BundleArtifact, CosignError> {
    let config = Blob::new(EMPTY_BLOB.to_vec());
    let bundle = Blob::new(bundle_json);
    let annotations = BTreeMap::from([
        (
            "dev.sigstore.bundle.content".to_string(),
            "dsse-envelope".to_string(),
        ),
        (
            "dev.sigstore.bundle.predicateType".to_string(),
            COSIGN_SIGN_PREDICATE.to_string(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            created.to_string(),
        ),
    ]);
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.to_string(),
        artifact_type: Some(BUNDLE_MEDIA_TYPE.to_string()),
        config: descriptor(EMPTY_MEDIA_TYPE, &config),
        layers: vec![descriptor(BUNDLE_MEDIA_TYPE, &bundle)],
        subject: Some(Descriptor {
            artifact_type: None,
            annotations: BTreeMap::new(),
            ..subject
        }),
        annotations: annotations.clone(),
    };
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| CosignError::InvalidManifest(e.to_string()))?;
    let descriptor = Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest: sha256_digest(&manifest),
        size: manifest.len() as u64,
        artifact_type: Some(BUNDLE_MEDIA_TYPE.to_string()),
        annotations,
    };
    Ok(BundleArtifact {
        config,
        bundle,
        manifest,
        descriptor,
    })
}

fn descriptor(media_type: &str, blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: blob.digest.clone(),
        size: blob.data.len() as u64,
        artifact_type: None,
        annotations: BTreeMap::new(),
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The referrers fallback index (tag `sha256-<hex>` of the subject) with `descriptor` added
/// to what `existing` lists (other signers' bundles are kept; the same one is not doubled).
pub fn referrers_index_with(
    existing: Option<&[u8]>,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, CosignError> {
    let mut manifests = match existing {
        Some(raw) => {
            serde_json::from_slice::<Index>(raw)
                .map_err(|e| {
                    CosignError::InvalidManifest(format!("referrers index is not an index: {e}"))
                })?
                .manifests
        }
        None => Vec::new(),
    };
    if !manifests.iter().any(|d| d.digest == descriptor.digest) {
        manifests.push(descriptor.clone());
    }
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: OCI_INDEX.to_string(),
        manifests,
    })
    .map_err(|e| CosignError::InvalidManifest(e.to_string()))
}

/// The fallback tag under which registries without the referrers API list `digest`'s
/// referrers.
pub fn referrers_tag(digest: &str) -> Result<String, CosignError> {
    validate_digest(digest)?;
    Ok(digest.replace(':', "-"))
}
