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
//! trusted root by [`verify_bundle`].
//!
//! See `docs/signatures.md` for the full description.

mod artifact;
mod bundle;
mod error;
mod keys;
mod payload;
mod pem;
mod verify;

pub use artifact::{
    Blob, CONFIG_MEDIA_TYPE, LayerDescriptor, LayerSpec, MANIFEST_MEDIA_TYPE, SignatureArtifact,
    parse_signature_manifest, signature_manifest, signature_manifest_annotated,
};
pub use bundle::{
    BundleError, BundleVerified, Matcher, Signed, Signer, embedded_trusted_root, verify_bundle,
};
pub use error::CosignError;
pub use keys::{
    KeyPairPem, SigningKey, TrustedKey, generate_key_pair, load_trusted_key, load_trusted_keys,
};
pub use payload::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE, signature_tag,
    simple_signing_payload, validate_digest,
};
pub use verify::{SignatureLayer, Verified, verify};
