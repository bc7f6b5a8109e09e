//! Finding cosign signatures in a registry, for the trust policy to judge before anything is
//! staged. The cryptography lives in `clb-cosign`, the rules in [`crate::trust`]; this module
//! only fetches.

use clb_cosign::SignatureLayer;
use oci_client::Reference;

use crate::error::{ClbError, Result};
use crate::registry::{Registry, ResolvedImage};
use crate::trust::{Decision, Found, Requirement, TrustPolicy, evaluate};

/// The repository holding `image`'s signatures, legacy and bundles alike: the image's own,
/// or `--signature-repository` (cosign's `COSIGN_REPOSITORY`).
pub fn signature_repository(
    image: &Reference,
    signature_repository: Option<&str>,
) -> Result<Reference> {
    match signature_repository {
        Some(repo) => Registry::parse_reference(repo),
        None => Ok(image.clone()),
    }
}

/// The legacy `.sig` tag of `digest` in the signature repository.
pub fn signature_reference(
    image: &Reference,
    signature_repository: Option<&str>,
    digest: &str,
) -> Result<Reference> {
    let tag = clb_cosign::signature_tag(digest).map_err(|source| ClbError::Signature {
        location: digest.to_string(),
        source,
    })?;
    Ok(tagged(
        &self::signature_repository(image, signature_repository)?,
        tag,
    ))
}

/// `tag` in the repository of `reference`.
pub fn tagged(reference: &Reference, tag: String) -> Reference {
    Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        tag,
    )
}

/// Applies the policy entry for the image's repository to the signatures found for it. A
/// signature may name the digest the reference points at (an index for multi-arch images:
/// its content, checked by digest, names the platform manifest) or the platform manifest.
/// Signatures are looked for in both layouts cosign writes: the legacy `.sig` tag, and
/// bundles attached as referrers (the OCI referrers API, else its tag fallback).
pub async fn verify_image(
    registry: &Registry,
    image: &ResolvedImage,
    policy: &TrustPolicy,
    signature_repository: Option<&str>,
) -> Result<Decision> {
    let reference = &image.reference;
    let entry = policy.entry_for(reference.registry(), reference.repository());
    if !matches!(entry.requirement, Requirement::Signed { .. }) {
        return Ok(evaluate(entry, &[])?);
    }
    let mut candidates = vec![image.top_digest.clone()];
    if image.manifest_digest != image.top_digest {
        candidates.push(image.manifest_digest.clone());
    }
    let mut found = Vec::new();
    for digest in candidates {
        let mut signatures = Found {
            digest: digest.clone(),
            ..Found::default()
        };
        let sig_ref = signature_reference(reference, signature_repository, &digest)?;
        if let Some((raw, _)) = registry.pull_manifest_optional(&sig_ref).await? {
            for layer in fetch_signature_layers(registry, &sig_ref, &raw).await? {
                signatures.legacy.push((sig_ref.to_string(), layer));
            }
        }
        let subject = self::signature_repository(reference, signature_repository)?
            .clone_with_digest(digest.clone());
        fetch_bundles(registry, &subject, &mut signatures).await?;
        found.push(signatures);
    }
    Ok(evaluate(entry, &found)?)
}

/// The bundles attached to `subject`. A listed referrer that cannot be read is noted, not
/// fatal: another signature may still satisfy the policy.
async fn fetch_bundles(registry: &Registry, subject: &Reference, found: &mut Found) -> Result<()> {
    let index = registry
        .referrers(subject, clb_cosign::BUNDLE_MEDIA_TYPE)
        .await?;
    let unusable = |source| ClbError::SignatureData {
        location: format!("referrers of {subject}"),
        source,
    };
    let mut listed = clb_cosign::bundle_referrers(&index).map_err(unusable)?;
    if listed.is_empty() {
        // oci-client's fallback keeps only entries typed as bundles; cosign 3.0.x typed its
        // fallback entries as the empty config.
        let tag = clb_cosign::referrers_tag(&found.digest).map_err(unusable)?;
        let index_ref = tagged(subject, tag);
        if let Some((raw, _)) = registry.pull_manifest_optional(&index_ref).await? {
            listed = clb_cosign::untyped_referrers(&raw).map_err(unusable)?;
        }
    }
    for descriptor in listed.into_iter().take(MAX_REFERRERS) {
        let manifest_ref = subject.clone_with_digest(descriptor.digest.clone());
        match fetch_bundle(registry, &manifest_ref, &found.digest).await {
            Ok(json) => found.bundles.push((manifest_ref.to_string(), json)),
            Err(e) => {
                let reason = clb_command::one_line_deduplicated(&e);
                tracing::warn!(referrer = %manifest_ref, error = %reason, "unreadable signature bundle");
                found
                    .unreadable
                    .push(format!("referrer {}: {reason}", descriptor.digest));
            }
        }
    }
    Ok(())
}

/// More bundles than any image carries: a bound on what a hostile index can make us fetch.
const MAX_REFERRERS: usize = 32;

async fn fetch_bundle(
    registry: &Registry,
    manifest_ref: &Reference,
    subject: &str,
) -> Result<String> {
    let (raw, _) = registry.pull_manifest_raw(manifest_ref).await?;
    let signature_data = |source| ClbError::SignatureData {
        location: manifest_ref.to_string(),
        source,
    };
    let layer = clb_cosign::bundle_layer(&raw, subject).map_err(signature_data)?;
    let blob = registry
        .pull_blob_bytes(manifest_ref, &layer.digest)
        .await?;
    String::from_utf8(blob).map_err(|_| {
        signature_data(clb_cosign::CosignError::InvalidManifest(
            "the bundle is not UTF-8 JSON".into(),
        ))
    })
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
