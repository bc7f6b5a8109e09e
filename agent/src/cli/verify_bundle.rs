//! `clb verify-bundle`: arguments to a [`BundleRequest`].

use anyhow::{Context, Result};

use super::args::VerifyBundleArgs;
use clb::bundles::{BundleRequest, SignerSpec, verify};

pub(super) fn run(a: &VerifyBundleArgs) -> Result<clb_cosign::BundleVerified> {
    let signer = match (
        &a.key,
        &a.certificate_identity,
        &a.certificate_identity_regexp,
    ) {
        (Some(key), _, _) => SignerSpec::Key(key.clone()),
        (None, identity, regexp) => {
            let (identity, identity_is_regex) = match (identity, regexp) {
                (Some(i), _) => (i.clone(), false),
                (None, Some(r)) => (r.clone(), true),
                // clap's "signer" group requires one of the three.
                (None, None) => anyhow::bail!("--key or --certificate-identity is needed"),
            };
            let (issuer, issuer_is_regex) = match (
                &a.certificate_oidc_issuer,
                &a.certificate_oidc_issuer_regexp,
            ) {
                (Some(i), _) => (i.clone(), false),
                (None, Some(r)) => (r.clone(), true),
                (None, None) => anyhow::bail!("--certificate-oidc-issuer is needed"),
            };
            SignerSpec::Identity {
                identity,
                identity_is_regex,
                issuer,
                issuer_is_regex,
            }
        }
    };
    let req = BundleRequest {
        bundle: a.bundle.clone(),
        trusted_root: a.trusted_root.clone(),
        staging: a.staging,
        signer,
        file_or_digest: a.file_or_digest.clone(),
    };
    verify(&req).with_context(|| format!("verifying {}", a.file_or_digest))
}
