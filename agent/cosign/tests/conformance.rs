//! The sigstore-conformance `bundle-verify` cases (copied byte for byte from
//! sigstore/sigstore-conformance into `tests/corpus/sigstore/`, with the public-good trusted
//! root), run through [`clb_cosign::verify_bundle`] as the suite runs a client: every case
//! twice, with the artifact's bytes and with its `sha256:` digest; a case whose name ends in
//! `_fail` must be rejected, every other must verify. The test prints each failure's reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use clb_cosign::{Matcher, Signed, Signer, verify_bundle};
use sha2::{Digest, Sha256};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sigstore")
}

fn optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn every_conformance_case_verifies_or_fails_as_expected() {
    let cases_dir = corpus().join("conformance/bundle-verify");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 70, "the suite has 70 cases");
    let public_good =
        std::fs::read_to_string(corpus().join("trusted-roots/public-good.json")).unwrap();
    let default_artifact = std::fs::read(cases_dir.join("a.txt")).unwrap();
    let mut wrong = Vec::new();
    let mut table = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let must_fail = name.ends_with("fail");
        let bundle = std::fs::read_to_string(case.join("bundle.sigstore.json")).unwrap();
        let root = optional(&case.join("trusted_root.json")).unwrap_or_else(|| public_good.clone());
        let artifact =
            std::fs::read(case.join("artifact")).unwrap_or_else(|_| default_artifact.clone());
        let digest = hex::encode(Sha256::digest(&artifact));
        let signer = match optional(&case.join("key.pub")) {
            Some(pem) => Signer::Key {
                pem,
                require_log: true,
            },
            None => Signer::Identity {
                identity: Matcher::Exact(
                    optional(&case.join("identity"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|| DEFAULT_IDENTITY.to_string()),
                ),
                issuer: Matcher::Exact(
                    optional(&case.join("issuer"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|| DEFAULT_ISSUER.to_string()),
                ),
            },
        };
        for (how, signed) in [
            ("bytes", Signed::Bytes(&artifact)),
            ("digest", Signed::Sha256(&digest)),
        ] {
            let result = verify_bundle(&bundle, &root, signed, &signer);
            let reason = match &result {
                Ok(_) => "verified".to_string(),
                Err(e) => clb_command::one_line(e),
            };
            table.push(format!(
                "{:<4} {name} ({how}): {reason}",
                if must_fail { "fail" } else { "ok" }
            ));
            if result.is_ok() == must_fail {
                wrong.push(format!("{name} ({how}): {reason}"));
            }
        }
    }
    for line in &table {
        println!("{line}");
    }
    assert!(
        wrong.is_empty(),
        "cases with the wrong outcome:\n{}",
        wrong.join("\n")
    );
}

/// A real cosign v3 keyless signature of an image (Kubewarden's controller v1.34.0, signed in
/// its GitHub Actions release), as cosign attaches it: verifies for the image's manifest
/// digest and its release workflow identity, and for nothing else.
#[test]
fn a_genuine_cosign_v3_image_bundle_verifies_for_its_manifest_digest() {
    let bundle = std::fs::read_to_string(corpus().join("cosign-v3/bundle_v03.json")).unwrap();
    let root = std::fs::read_to_string(corpus().join("trusted-roots/public-good.json")).unwrap();
    let digest = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    let signer = |identity: &str| Signer::Identity {
        identity: Matcher::Exact(identity.to_string()),
        issuer: Matcher::Exact(DEFAULT_ISSUER.to_string()),
    };
    let release = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    let verified = verify_bundle(&bundle, &root, Signed::Sha256(digest), &signer(release)).unwrap();
    assert_eq!(verified.identity.as_deref(), Some(release));
    assert_eq!(
        verified.integrated_time.as_deref(),
        Some("2026-04-09T07:23:29Z")
    );
    // The same bundle for another image, or from another workflow, does not verify.
    let other = "0".repeat(64);
    assert!(verify_bundle(&bundle, &root, Signed::Sha256(&other), &signer(release)).is_err());
    let regex = Signer::Identity {
        identity: Matcher::regex("^https://github.com/kubewarden/kubewarden-controller/").unwrap(),
        issuer: Matcher::Exact(DEFAULT_ISSUER.to_string()),
    };
    assert!(verify_bundle(&bundle, &root, Signed::Sha256(digest), &regex).is_ok());
    let wrong = signer(
        "https://github.com/kubewarden/kubewarden-controller/.github/workflows/ci.yml@refs/heads/main",
    );
    let err = verify_bundle(&bundle, &root, Signed::Sha256(digest), &wrong).unwrap_err();
    assert!(!err.is_invalid_input(), "{err:?}");
}
