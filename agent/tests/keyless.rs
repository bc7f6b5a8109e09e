//! Keyless signatures end to end, through the real binary and a real registry: a private
//! Sigstore instance (`tests/sigstore_instance.py`: a Fulcio-like CA, a CT log, a Rekor log,
//! written from Sigstore's formats) signs images as cosign does, a v0.3 bundle attached as a
//! referrer or a legacy `.sig` layer, and a trust policy naming an identity, an issuer and the
//! instance's `trusted_root.json` judges them. Every refusal is one line, exit 4 (exit 3 for an
//! unusable trusted root), with the state tree unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};

const IDENTITY: &str = "https://github.com/acme/os/.github/workflows/release.yml@refs/tags/v2";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Runs the private Sigstore instance script; returns its stdout.
fn run_instance(args: &[&str]) -> String {
    run_script("sigstore_instance.py", args)
}

/// A private Sigstore instance in the fixture's work directory.
struct Sigstore {
    dir: PathBuf,
    registry: String,
}

impl Sigstore {
    fn new(fx: &Fixture) -> Self {
        let dir = fx.work.path().join("sigstore");
        run_instance(&["init", dir.to_str().unwrap()]);
        Self {
            dir,
            registry: fx.reg.addr(),
        }
    }

    fn trusted_root(&self) -> String {
        self.dir.join("trusted_root.json").display().to_string()
    }

    /// A v0.3 bundle for `digest` (tampered as `tamper` says), attached to `os@digest` as
    /// cosign v3 attaches one.
    fn sign_bundle(&self, digest: &str, identity: &str, issuer: &str, tamper: Option<&str>) {
        let out = self.dir.join(format!("{}.bundle.json", &digest[7..19]));
        let mut args = vec![
            "sign-bundle",
            self.dir.to_str().unwrap(),
            "--digest",
            digest,
            "--identity",
            identity,
            "--issuer",
            issuer,
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(kind) = tamper {
            args.extend(["--tamper", kind]);
        }
        run_instance(&args);
        run_instance(&[
            "attach-bundle",
            "--bundle",
            out.to_str().unwrap(),
            "--registry",
            &self.registry,
            "--repo",
            "os",
            "--digest",
            digest,
        ]);
    }

    /// A legacy keyless `.sig` layer for `os@digest`.
    fn sign_legacy(&self, digest: &str, identity: &str, issuer: &str, tamper: Option<&str>) {
        let mut args = vec![
            "sign-legacy",
            self.dir.to_str().unwrap(),
            "--digest",
            digest,
            "--identity",
            identity,
            "--issuer",
            issuer,
            "--registry",
            &self.registry,
            "--repo",
            "os",
        ];
        if let Some(kind) = tamper {
            args.extend(["--tamper", kind]);
        }
        run_instance(&args);
    }
}

/// Writes a policy whose default entry accepts one keyless signer `ci`: `match_lines` are
/// its identity and issuer lines (YAML, without indentation).
fn keyless_policy(fx: &Fixture, name: &str, match_lines: &[String], root: &str) -> PathBuf {
    let mut text = "default:\n  signers:\n    - name: ci\n".to_string();
    for line in match_lines {
        text.push_str(&format!("      {line}\n"));
    }
    text.push_str(&format!("      trusted-root: {root}\n"));
    let path = fx.work.path().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn exact(identity: &str, issuer: &str) -> Vec<String> {
    vec![
        format!("identity: '{identity}'"),
        format!("issuer: '{issuer}'"),
    ]
}

/// `clb --json --state-dir STATE upgrade -d IMAGE --policy POLICY`.
fn upgrade(fx: &Fixture, state: &Path, repo_tag: &str, policy: &Path) -> std::process::Output {
    fx.upgrade_image(
        state,
        &fx.image(repo_tag),
        &["--policy", policy.to_str().unwrap()],
    )
}

/// Pushes a small image of its own (its own digest) as `os:NAME`; returns the digest.
fn own_image(fx: &Fixture, name: &str) -> String {
    let dir = tree(
        &fx.work.path().join(format!("img-{name}")),
        &[("etc/clb-case", name.as_bytes())],
    );
    fx.push(&[&dir], &format!("os:{name}"), &[]);
    skopeo_digest(&fx.reg, &format!("os:{name}"))
}

/// The keyless signer a slot recorded, checked field by field.
fn assert_keyless_signer(status: &serde_json::Value, slot: &str, format: &str, identity: &str) {
    let s = &status["slots"][slot];
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["verified_with"], "ci", "{s}");
    let signers = s["signers"].as_array().unwrap();
    assert_eq!(signers.len(), 1, "{s}");
    let signer = &signers[0];
    assert_eq!(signer["name"], "ci", "{s}");
    assert_eq!(signer["kind"], "keyless", "{s}");
    assert_eq!(signer["format"], format, "{s}");
    assert_eq!(signer["identity"], identity, "{s}");
    assert_eq!(signer["issuer"], ISSUER, "{s}");
    assert_eq!(signer["logged"], true, "{s}");
    assert!(signer["key_fingerprint"].is_null(), "{s}");
}

#[test]
fn keyless_bundles_verify_through_the_policy() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, _r) = staged();
    let sigstore = Sigstore::new(&fx);
    let root = sigstore.trusted_root();
    let v2 = skopeo_digest(&fx.reg, "os:v2");
    sigstore.sign_bundle(&v2, IDENTITY, ISSUER, None);

    let policy = keyless_policy(&fx, "exact", &exact(IDENTITY, ISSUER), &root);
    assert_ok(&upgrade(&fx, &state, "os:v2", &policy));
    let status = fx.status(&state);
    assert_keyless_signer(&status, "b", "bundle", IDENTITY);
    assert_eq!(status["slots"]["b"]["policy_scope"], "default");

    // The same bundle for a signer given by a regular expression (unanchored at the end).
    let regexp = keyless_policy(
        &fx,
        "regexp",
        &[
            r"identity-regexp: '^https://github\.com/acme/os/'".to_string(),
            format!("issuer: '{ISSUER}'"),
        ],
        &root,
    );
    let fresh = fx.new_state_dir("regexp");
    assert_ok(&upgrade(&fx, &fresh, "os:v2", &regexp));
    assert_keyless_signer(&fx.status(&fresh), "a", "bundle", IDENTITY);
}

#[test]
fn legacy_keyless_signatures_verify_through_the_policy() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, _r) = staged();
    let sigstore = Sigstore::new(&fx);
    let root = sigstore.trusted_root();
    // An email identity this time (the SAN is an rfc822Name, not a URI).
    let email = "release@acme.example";
    let policy = keyless_policy(&fx, "email", &exact(email, ISSUER), &root);

    // A tampered layer alone does not verify: its SET is broken, or the certificate had
    // expired when the entry was logged.
    let before = hash_tree(&state);
    for (tamper, needle) in [("set", "SET verification failed"), ("expired", "expired")] {
        let digest = own_image(&fx, tamper);
        sigstore.sign_legacy(&digest, email, ISSUER, Some(tamper));
        let out = upgrade(&fx, &state, &format!("os:{tamper}"), &policy);
        let line = assert_fails(&out, 4, needle);
        assert!(
            line.contains("policy entry default: 0 of 1 required signers"),
            "{line}"
        );
        assert_eq!(hash_tree(&state), before, "legacy layer tampered: {tamper}");
    }

    let v2 = skopeo_digest(&fx.reg, "os:v2");
    sigstore.sign_legacy(&v2, email, ISSUER, None);
    assert_ok(&upgrade(&fx, &state, "os:v2", &policy));
    assert_keyless_signer(&fx.status(&state), "b", "sig", email);
}

#[test]
fn bad_keyless_signatures_are_refused_and_change_nothing() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, _r) = staged();
    let sigstore = Sigstore::new(&fx);
    let root = sigstore.trusted_root();
    let before = hash_tree(&state);
    let refused = |repo_tag: &str, policy: &Path, needle: &str, what: &str| {
        let out = upgrade(&fx, &state, repo_tag, policy);
        let line = assert_fails(&out, 4, needle);
        assert_eq!(
            hash_tree(&state),
            before,
            "{what} changed the state: {line}"
        );
        line
    };

    // A good bundle, but not from the identity or issuer the policy names.
    let v2 = skopeo_digest(&fx.reg, "os:v2");
    sigstore.sign_bundle(&v2, IDENTITY, ISSUER, None);
    let other_identity = "https://github.com/acme/os/.github/workflows/evil.yml@refs/heads/x";
    let policy = keyless_policy(&fx, "identity", &exact(other_identity, ISSUER), &root);
    let line = refused("os:v2", &policy, "identity mismatch", "another identity");
    assert!(line.contains("evil.yml"), "{line}");
    let policy = keyless_policy(
        &fx,
        "issuer",
        &exact(IDENTITY, "https://accounts.example.com"),
        &root,
    );
    let line = refused("os:v2", &policy, "issuer mismatch", "another issuer");
    assert!(line.contains("accounts.example.com"), "{line}");

    // The right signer in the public-good root: the instance's CA and logs are not in it.
    let public_good = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cosign/tests/corpus/sigstore/trusted-roots/public-good.json"
    );
    let policy = keyless_policy(&fx, "public-good", &exact(IDENTITY, ISSUER), public_good);
    refused(
        "os:v2",
        &policy,
        "bundle does not verify",
        "the public-good root",
    );

    // Bundles that do not verify with the right root and signer, each alone on its image.
    let policy = keyless_policy(&fx, "right", &exact(IDENTITY, ISSUER), &root);
    let cases = [
        ("expired", "expired"),
        ("untrusted", "unknownissuer"),
        ("proof", "inclusion proof verification failed"),
        ("checkpoint", "no valid rekor signature found on checkpoint"),
        ("no-proof", "must have an inclusion proof"),
        ("set", "set verification failed"),
        ("checkpoint-root", "root hash does not match checkpoint"),
        ("sct", "invalid signed certificate timestamp"),
    ];
    for (tamper, needle) in cases {
        let digest = own_image(&fx, tamper);
        sigstore.sign_bundle(&digest, IDENTITY, ISSUER, Some(tamper));
        let line = refused(&format!("os:{tamper}"), &policy, needle, tamper);
        assert!(line.contains("0 of 1 required signers"), "{line}");
    }

    // A trusted root that does not parse (truncated) is invalid input, before any download.
    let text = std::fs::read_to_string(&root).unwrap();
    let truncated = fx.work.path().join("truncated-root.json");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let policy = keyless_policy(
        &fx,
        "truncated",
        &exact(IDENTITY, ISSUER),
        truncated.to_str().unwrap(),
    );
    let out = upgrade(&fx, &state, "os:v2", &policy);
    assert_fails(&out, 3, "trusted root");
    assert_eq!(hash_tree(&state), before, "a truncated trusted root");

    // And the right policy takes the good bundle: the refusals above were the bundles'.
    let policy = keyless_policy(&fx, "right", &exact(IDENTITY, ISSUER), &root);
    assert_ok(&upgrade(&fx, &state, "os:v2", &policy));
}
