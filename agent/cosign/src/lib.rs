//! clb-cosign: offline cosign (sigstore) key-based signing and verification.
//!
//! Pure functions, no network: the agent's registry module fetches and pushes
//! manifests and blobs and hands the bytes to this crate. The formats
//! produced and accepted here are exactly cosign's "classic" attached
//! signature format, so images signed with `cosign sign --key` verify with
//! `clb`, and images signed with `clb sign` verify with `cosign verify --key`:
//!
//! * the signed message is the "simple signing" payload
//!   ([`simple_signing_payload`]),
//! * signatures live at tag `sha256-<hex>.sig` ([`signature_tag`]) as an OCI
//!   image manifest whose layers are payload blobs, each carrying its base64
//!   DER ECDSA signature in the `dev.cosignproject.cosign/signature`
//!   annotation ([`signature_manifest`], [`parse_signature_manifest`]),
//! * keys are ECDSA P-256; private keys in cosign's encrypted format
//!   (scrypt + NaCl secretbox), public keys as SPKI PEM ([`generate_key_pair`],
//!   [`SigningKey`], [`load_trusted_key`]).
//!
//! Sigstore bundles (cosign v3's format, keyless or with a key) are verified offline against a
//! trusted root by [`verify_bundle`]; [`verify_image_bundle`] adds the image statement's rules,
//! [`sign_image_bundle`] and [`bundle_artifact`] write cosign v3's format, and
//! [`verify_legacy_keyless`] checks keyless signatures in the legacy `.sig` layout.
//!
//! See `docs/signatures.md` for the full description.

mod artifact;
mod bundle;
mod error;
mod image_bundle;
mod keys;
mod legacy_keyless;
mod payload;
mod pem;
mod unlogged;
mod verify;

pub use artifact::{
    Blob, CONFIG_MEDIA_TYPE, LayerDescriptor, LayerSpec, MANIFEST_MEDIA_TYPE, SignatureArtifact,
    parse_signature_manifest, signature_manifest, signature_manifest_annotated,
};
pub use bundle::{
    BundleError, BundleVerified, Matcher, Signed, Signer, SigstoreRoot, embedded_trusted_root,
    verify_bundle, verify_bundle_with,
};
pub use error::CosignError;
pub use image_bundle::{
    BUNDLE_MEDIA_TYPE, BundleArtifact, COSIGN_SIGN_PREDICATE, Descriptor, EMPTY_MEDIA_TYPE,
    MAX_BUNDLE_SIZE, bundle_artifact, bundle_layer, bundle_referrers, is_bundle_media_type,
    referrers_index_with, referrers_tag, sign_image_bundle, untyped_referrers, verify_image_bundle,
};
pub use keys::{
    KeyPairPem, SigningKey, TrustedKey, generate_key_pair, load_trusted_key, load_trusted_keys,
};
pub use legacy_keyless::{LegacyKeylessError, is_keyless, legacy_bundle, verify_legacy_keyless};
pub use payload::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE, signature_tag,
    simple_signing_payload, validate_digest,
};
pub use verify::{SignatureLayer, Verified, check_signed_payload, verify};
