//! Finding cosign signatures in a registry and checking them before anything is staged.
//! The cryptography and the payload rules live in `clb-cosign`; this module only fetches.

use std::path::PathBuf;

use clb_cosign::{SignatureLayer, TrustedKey};
use oci_client::Reference;

use crate::error::{ClbError, Result};
use crate::registry::{Registry, ResolvedImage};

/// What was verified, recorded in the slot manifest.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    pub digest: String,
    pub key_source: String,
    pub key_fingerprint: String,
}

pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<TrustedKey>> {
    paths
        .iter()
        .map(|p| {
            let pem = std::fs::read(p)
                .map_err(ClbError::io(format!("reading public key {}", p.display())))?;
            clb_cosign::load_trusted_keys(&pem, &p.display().to_string()).map_err(|source| {
                ClbError::Key {
                    path: p.display().to_string(),
                    source,
                }
            })
        })
        .collect::<Result<Vec<Vec<TrustedKey>>>>()
        .map(|keys| keys.into_iter().flatten().collect())
}

/// Where signatures of `image` live: the image's own repository or `--signature-repository`.
pub fn signature_reference(
    image: &Reference,
    signature_repository: Option<&str>,
    digest: &str,
) -> Result<Reference> {
    let tag = clb_cosign::signature_tag(digest).map_err(|source| ClbError::Signature {
        location: digest.to_string(),
        source,
    })?;
    match signature_repository {
        Some(repo) => Registry::parse_reference(&format!("{repo}:{tag}")),
        None => Ok(Reference::with_tag(
            image.registry().to_string(),
            image.repository().to_string(),
            tag,
        )),
    }
}

/// Verifies the image against `keys`. The signature may name the digest the reference points
/// at (an index for multi-arch images: its content, checked by digest, names the platform
/// manifest) or the platform manifest itself.
pub async fn verify_image(
    registry: &Registry,
    image: &ResolvedImage,
    keys: &[TrustedKey],
    signature_repository: Option<&str>,
) -> Result<VerifiedImage> {
    if keys.is_empty() {
        return Err(ClbError::Invalid(
            "verification needs at least one --key (or pass --no-verify)".to_string(),
        ));
    }
    let mut candidates = vec![image.top_digest.clone()];
    if image.manifest_digest != image.top_digest {
        candidates.push(image.manifest_digest.clone());
    }
    let mut last_error = None;
    for digest in &candidates {
        let sig_ref = signature_reference(&image.reference, signature_repository, digest)?;
        let Some((raw, _)) = registry.pull_manifest_optional(&sig_ref).await? else {
            last_error = Some(ClbError::Verification(format!(
                "no signature for {digest} (looked for {sig_ref})"
            )));
            continue;
        };
        let layers = fetch_signature_layers(registry, &sig_ref, &raw).await?;
        match clb_cosign::verify(&layers, digest, keys) {
            Ok(v) => {
                return Ok(VerifiedImage {
                    digest: digest.clone(),
                    key_source: v.key_source,
                    key_fingerprint: v.key_fingerprint,
                });
            }
            Err(source) if source.is_verification_failure() => {
                last_error = Some(ClbError::Signature {
                    location: sig_ref.to_string(),
                    source,
                })
            }
            Err(source) => {
                return Err(ClbError::SignatureData {
                    location: sig_ref.to_string(),
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ClbError::Verification("no signature found".to_string())))
}

/// The signature layers of a signature manifest with their payloads (each checked against
/// its descriptor by clb-cosign). Layers of other media types are ignored.
pub async fn fetch_signature_layers(
    registry: &Registry,
    sig_ref: &Reference,
    raw: &[u8],
) -> Result<Vec<SignatureLayer>> {
    let signature_error = |source| ClbError::Signature {
        location: sig_ref.to_string(),
        source,
    };
    let descriptors = clb_cosign::parse_signature_manifest(raw).map_err(signature_error)?;
    let mut layers = Vec::new();
    for desc in descriptors {
        // Payloads are a few hundred bytes; anything large is not a cosign payload.
        if desc.media_type != clb_cosign::SIMPLE_SIGNING_MEDIA_TYPE || desc.size > 1 << 20 {
            continue;
        }
        let payload = registry.pull_blob_bytes(sig_ref, &desc.digest).await?;
        layers.push(desc.with_payload(payload).map_err(signature_error)?);
    }
    Ok(layers)
}
