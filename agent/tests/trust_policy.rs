//! Signatures as cosign v3 attaches them and the trust policy that judges them, through the
//! real binary and a real registry: bundles found through the referrers tag fallback
//! (distribution 2.8 has no referrers API) and through the API (a proxy that serves it, written
//! from the distribution spec), bundles written by clb and by an independent signer
//! (`tests/cosign_signer.py`, from cosign's format), policies per scope with thresholds, and
//! every refusal: one line, its exit code, the state tree unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;

use clb_testsupport::ReferrersProxy;

fn slot(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["slots"][name].clone()
}

/// A second signer, independent of clb: its key pair, and a way to sign images with it.
struct PySigner {
    key: String,
    public: String,
}

impl PySigner {
    fn new(fx: &Fixture, name: &str) -> Self {
        let prefix = fx.work.path().join(name);
        run_signer(&["keygen", prefix.to_str().unwrap()]);
        Self {
            key: prefix.with_extension("key").display().to_string(),
            public: prefix.with_extension("pub").display().to_string(),
        }
    }

    /// `sign-bundle` for `repo@digest` at `registry`, with extra flags.
    fn sign(&self, registry: &str, repo: &str, digest: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "sign-bundle",
            "--key",
            &self.key,
            "--registry",
            registry,
            "--repo",
            repo,
            "--digest",
            digest,
        ];
        args.extend_from_slice(extra);
        run_signer(&args)
    }
}

#[test]
fn bundles_verify_through_the_fallback_tag_and_the_referrers_api() {
    require_tool(clb_testsupport::PYTHON);
    // `staged()` signs v1 with `clb sign` (a bundle, by default) and stages it with --key:
    // the fallback path end to end.
    let (fx, state, r) = staged();
    let status = fx.status(&state);
    let a = slot(&status, "a");
    assert_eq!(a["verified"], true);
    assert_eq!(a["policy_scope"], "default");
    assert_eq!(a["signers"][0]["format"], "bundle");
    assert_eq!(a["signers"][0]["kind"], "key");
    assert_eq!(a["signers"][0]["logged"], false);
    assert_eq!(
        a["signers"][0]["key_fingerprint"].as_str().unwrap().len(),
        64
    );

    // clb's bundle, checked field by field and cryptographically by the independent code.
    let v1 = skopeo_digest(&fx.reg, "os:v1");
    run_signer(&[
        "check-bundle",
        "--pub",
        fx.pubkey.to_str().unwrap(),
        "--registry",
        &fx.reg.addr(),
        "--repo",
        "os",
        "--digest",
        &v1,
    ]);

    // The independent signer's bundle verifies with clb.
    let py = PySigner::new(&fx, "py");
    let v2 = skopeo_digest(&fx.reg, "os:v2");
    py.sign(&fx.reg.addr(), "os", &v2, &[]);
    let fresh = fx.new_state_dir("py");
    assert_ok(&fx.upgrade_image(&fresh, &fx.image("os:v2"), &["--key", &py.public]));
    // A `--key` file holding two keys (rotation): either may have signed; the second did.
    let both = fx.work.path().join("both.pub");
    let pems = [fx.pubkey.to_str().unwrap(), py.public.as_str()]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(&both, pems).unwrap();
    let fresh = fx.new_state_dir("two-keys");
    assert_ok(&fx.upgrade_image(
        &fresh,
        &fx.image("os:v2"),
        &["--key", both.to_str().unwrap()],
    ));
    let signer = &slot(&fx.status(&fresh), "a")["signers"][0];
    assert_eq!(signer["name"], format!("{}#2", both.display()), "{signer}");

    // cosign 3.0.0 to 3.0.6 typed the fallback index entry as the empty config.
    fx.push(&[&r.base, &r.tops[0]], "os:v3", &["--format", "squashfs"]);
    let v3 = skopeo_digest(&fx.reg, "os:v3");
    py.sign(&fx.reg.addr(), "os", &v3, &["--legacy-index-artifact-type"]);
    let fresh = fx.new_state_dir("cosign30");
    assert_ok(&fx.upgrade_image(&fresh, &fx.image("os:v3"), &["--key", &py.public]));

    // A registry with the referrers API: the signer stores no fallback tag (the proxy hides
    // any), so only the API finds the bundle.
    let proxy = ReferrersProxy::start(&fx.reg);
    fx.push(&[&r.base, &r.tops[1]], "os:v4", &["--format", "squashfs"]);
    let v4 = skopeo_digest(&fx.reg, "os:v4");
    py.sign(&proxy.addr(), "os", &v4, &[]);
    let fresh = fx.new_state_dir("api");
    let out = fx.upgrade_image(&fresh, &proxy.image_ref("os:v4"), &["--key", &py.public]);
    assert_ok(&out);
    let asked: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("GET /v2/os/referrers/"))
        .collect();
    assert!(
        asked
            .iter()
            .any(|l| l.contains(&v4) && l.contains("artifactType=")),
        "the referrers API was not asked, filtered, for {v4}: {asked:?}"
    );
    assert_eq!(
        slot(&fx.status(&fresh), "a")["signers"][0]["format"],
        "bundle"
    );

    // A referrer listed by the API whose manifest is missing: a one-line reason, exit 4.
    fx.push(&[&r.base], "os:v5", &[]);
    let v5 = skopeo_digest(&fx.reg, "os:v5");
    let missing = format!("sha256:{}", "e".repeat(64));
    proxy.add_referrer(
        "os",
        &v5,
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": missing,
            "size": 500,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        }),
    );
    let before = hash_tree(&state);
    let out = fx.upgrade_image(&state, &proxy.image_ref("os:v5"), &["--key", &py.public]);
    assert_fails(&out, 4, &format!("referrer {missing}"));
    assert_eq!(hash_tree(&state), before);
}

#[test]
fn bad_bundles_are_refused_and_change_nothing() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, r) = staged();
    let before = hash_tree(&state);
    let py = PySigner::new(&fx, "py");
    let v1 = skopeo_digest(&fx.reg, "os:v1");
    fx.push(&[&r.base, &r.tops[0]], "os:v3", &["--format", "squashfs"]);
    let v3 = skopeo_digest(&fx.reg, "os:v3");

    // Validly signed, but its statement names another image.
    py.sign(
        &fx.reg.addr(),
        "os",
        &v3,
        &["--statement-digest-override", &v1],
    );
    let out = fx.upgrade_image(&state, &fx.image("os:v3"), &["--key", &py.public]);
    assert_fails(&out, 4, "verification failed");
    assert_eq!(hash_tree(&state), before, "a bundle for another digest");

    // Validly signed for this digest, but not an image signature (another predicate).
    py.sign(
        &fx.reg.addr(),
        "os",
        &v3,
        &["--predicate-type", "https://slsa.dev/provenance/v1"],
    );
    let out = fx.upgrade_image(&state, &fx.image("os:v3"), &["--key", &py.public]);
    assert_fails(&out, 4, "not an image signature");
    assert_eq!(hash_tree(&state), before, "another predicate");

    // Signed by another key only.
    let out = fx.upgrade_image(
        &state,
        &fx.image("os:v3"),
        &["--key", fx.pubkey.to_str().unwrap()],
    );
    assert_fails(&out, 4, "verification failed");
    assert_eq!(hash_tree(&state), before, "another key");

    // Unsigned.
    fx.push(&[&r.base], "os:v5", &[]);
    let out = fx.upgrade_image(&state, &fx.image("os:v5"), &["--key", &py.public]);
    assert_fails(&out, 4, "no signature found");
    assert_eq!(hash_tree(&state), before, "unsigned");
}

#[test]
fn the_trust_policy_decides_per_scope() {
    require_tool(clb_testsupport::PYTHON);
    let (fx, state, r) = staged();
    let py = PySigner::new(&fx, "py");
    let addr = fx.reg.addr();
    let corpus_root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cosign/tests/corpus/sigstore/trusted-roots/public-good.json"
    );
    let policy = fx.work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "default:\n  type: reject\n\
             scopes:\n\
             \x20 {addr}/os:\n\
             \x20   threshold: 2\n\
             \x20   signers:\n\
             \x20     - name: release\n\
             \x20       key: {}\n\
             \x20     - name: qa\n\
             \x20       key: {}\n\
             \x20     - name: ci\n\
             \x20       identity-regexp: ^https://github\\.com/acme/\n\
             \x20       issuer: https://token.actions.githubusercontent.com\n\
             \x20       trusted-root: {corpus_root}\n\
             \x20 {addr}/open:\n\
             \x20   type: insecure-accept-anything\n",
            fx.pubkey.display(),
            py.public
        ),
    )
    .unwrap();
    let policy_arg = policy.to_str().unwrap();
    let before = hash_tree(&state);

    // os:v2 carries one of the two signatures the scope needs (in the legacy layout, so
    // that both layouts count).
    fx.sign_as("os:v2", "sig");
    let out = fx.upgrade_image(&state, &fx.image("os:v2"), &["--policy", policy_arg]);
    let line = assert_fails(
        &out,
        4,
        &format!("policy entry {addr}/os: 1 of 2 required signers"),
    );
    assert!(line.contains("qa:") && line.contains("ci:"), "{line}");
    assert_eq!(hash_tree(&state), before, "one signer of two");

    // The second signer signs a bundle: accepted.
    let v2 = skopeo_digest(&fx.reg, "os:v2");
    py.sign(&addr, "os", &v2, &[]);
    assert_ok(&fx.upgrade_image(&state, &fx.image("os:v2"), &["--policy", policy_arg]));
    let b = slot(&fx.status(&state), "b");
    assert_eq!(b["policy_scope"], format!("{addr}/os"));
    let names: Vec<&str> = b["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["release", "qa"]);
    assert_eq!(b["verified_with"], "release");
    // The text status names them too.
    let text = clb(&["--state-dir", state.to_str().unwrap(), "status"]);
    assert_ok(&text);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("verified: release, qa (policy {addr}/os)")),
        "{text}"
    );

    // The default entry rejects every other repository.
    fx.push(&[&r.base], "other:v1", &[]);
    fx.sign("other:v1");
    let before = hash_tree(&state);
    let out = fx.upgrade_image(&state, &fx.image("other:v1"), &["--policy", policy_arg]);
    assert_fails(&out, 4, "the policy entry default rejects every image");
    assert_eq!(hash_tree(&state), before, "rejected scope");

    // An insecure-accept-anything scope takes an unsigned image, recorded as unverified.
    fx.push(&[&r.base], "open:v1", &[]);
    let fresh = fx.new_state_dir("open");
    assert_ok(&fx.upgrade_image(&fresh, &fx.image("open:v1"), &["--policy", policy_arg]));
    let a = slot(&fx.status(&fresh), "a");
    assert_eq!(a["verified"], false);
    assert!(a["signers"].as_array().unwrap().is_empty());

    // A key whose bundles must be in a transparency log: clb's offline bundle has none.
    let logged = fx.work.path().join("logged.yaml");
    std::fs::write(
        &logged,
        format!(
            "default:\n  signers:\n    - key: {}\n      transparency-log: required\n",
            fx.pubkey.display()
        ),
    )
    .unwrap();
    let out = fx.upgrade_image(
        &state,
        &fx.image("os:v1"),
        &["--policy", logged.to_str().unwrap()],
    );
    assert_fails(&out, 4, "no transparency log entry");
    assert_eq!(hash_tree(&state), before, "proof required");
}

#[test]
fn unusable_policies_are_invalid_input_and_change_nothing() {
    let (fx, state, _r) = staged();
    let before = hash_tree(&state);
    let dir = fx.work.path();
    let key = fx.pubkey.display().to_string();
    std::fs::write(dir.join("bad-root.json"), "{\"mediaType\": 3}").unwrap();
    let two_keys = dir.join("two.pub");
    let pem = std::fs::read_to_string(&fx.pubkey).unwrap();
    std::fs::write(&two_keys, format!("{pem}{pem}")).unwrap();
    let cases: &[(&str, String, &str)] = &[
        ("syntax", "default: [\n".into(), "policy"),
        ("unknown key", format!("default:\n  signers:\n    - key: {key}\n  sigers: []\n"), "sigers"),
        ("threshold", format!("default:\n  threshold: 2\n  signers:\n    - key: {key}\n"), "threshold 2 with 1 signers"),
        ("no signers", "default:\n  type: signed\n".into(), "needs at least one signer"),
        ("regex", "default:\n  signers:\n    - identity-regexp: \"(\"\n      issuer: x\n".into(), "regular expression"),
        ("both", format!("default:\n  signers:\n    - key: {key}\n      identity: a\n      issuer: b\n"), "either `key` or a keyless identity"),
        ("missing key", "default:\n  signers:\n    - key: /nonexistent/k.pub\n".into(), "/nonexistent/k.pub"),
        ("bad root", "default:\n  signers:\n    - identity: a\n      issuer: b\n      trusted-root: bad-root.json\n".into(), "trusted root"),
        ("two keys", format!("default:\n  signers:\n    - key: {}\n", two_keys.display()), "holds several public keys"),
        ("reject with signers", format!("default:\n  type: reject\n  signers:\n    - key: {key}\n"), "type signed only"),
    ];
    for (what, text, needle) in cases {
        let path = dir.join(format!("{}.yaml", what.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let out = fx.upgrade_image(
            &state,
            &fx.image("os:v2"),
            &["--policy", path.to_str().unwrap()],
        );
        assert_fails(&out, 3, needle);
        assert_eq!(hash_tree(&state), before, "{what} changed the state");
    }
    // No policy at all (this machine has no /etc/clb/policy.yaml) and no --key.
    assert!(!Path::new("/etc/clb/policy.yaml").exists());
    let out = fx.upgrade_image(&state, &fx.image("os:v2"), &[]);
    assert_fails(&out, 3, "verification needs --key, --policy");
    assert_eq!(hash_tree(&state), before);
}
