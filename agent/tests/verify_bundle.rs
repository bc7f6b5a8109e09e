//! `clb verify-bundle`, the binary as the sigstore-conformance suite calls it: exit 0 when the
//! bundle verifies, 4 when it does not, 3 when an input (trusted root, key, pattern) is
//! unusable; the file or its `sha256:` digest; exact or regex identities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const A_TXT_SHA256: &str =
    "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";

fn cases() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("cosign/tests/corpus/sigstore/conformance/bundle-verify")
}

/// Runs `clb verify-bundle ARGS` in the cases directory: (exit code, stderr).
fn verify(args: &[&str]) -> (i32, String) {
    let root = cases().join("../../trusted-roots/public-good.json");
    let out = Command::new(env!("CARGO_BIN_EXE_clb"))
        .current_dir(cases())
        .arg("verify-bundle")
        .args(args)
        .args(["--trusted-root".as_ref(), root.as_os_str()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_follow_the_outcome() {
    let bundle = "happy-path-v0.3/bundle.sigstore.json";
    let exact = [
        "--bundle",
        bundle,
        "--certificate-identity",
        IDENTITY,
        "--certificate-oidc-issuer",
        ISSUER,
    ];
    for target in ["a.txt", A_TXT_SHA256] {
        let (code, err) = verify(&[&exact[..], &[target]].concat());
        assert_eq!(code, 0, "{target}: {err}");
    }
    let (code, err) = verify(&[
        "--bundle",
        bundle,
        "--certificate-identity-regexp",
        "sigstore-conformance/extremely-dangerous",
        "--certificate-oidc-issuer-regexp",
        "^https://token\\.actions\\.githubusercontent\\.com$",
        "a.txt",
    ]);
    assert_eq!(code, 0, "{err}");
    // Another identity, another file: the signature is fine, the policy or artifact is not.
    let (code, err) = verify(&[
        "--bundle",
        bundle,
        "--certificate-identity-regexp",
        "^https://github.com/someone-else/",
        "--certificate-oidc-issuer",
        ISSUER,
        "a.txt",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("does not match /^https://github.com/someone-else//"),
        "{err}"
    );
    let (code, err) = verify(&[&exact[..], &["README.md"]].concat());
    assert_eq!(code, 4, "{err}");
    // Unusable inputs: a regular expression that does not compile, a bundle that is no
    // bundle, a missing file; one line each.
    let (code, err) = verify(&[
        "--bundle",
        bundle,
        "--certificate-identity-regexp",
        "(",
        "--certificate-oidc-issuer",
        ISSUER,
        "a.txt",
    ]);
    assert_eq!(code, 3, "{err}");
    let (code, err) = verify(&[
        "--bundle",
        "missing.json",
        "--certificate-identity",
        IDENTITY,
        "--certificate-oidc-issuer",
        ISSUER,
        "a.txt",
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
