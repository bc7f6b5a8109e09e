//! Image signatures beyond the key-signed `.sig` layout: cosign v3 bundles as `clb sign`
//! writes them, and a real keyless legacy `.sig` layer (containers/image's fixture, made by
//! cosign against Sigstore's public-good instance in 2023, copied into `tests/corpus/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clb_cosign::{
    BUNDLE_MEDIA_TYPE, BundleError, Descriptor, LegacyKeylessError, Matcher,
    SIMPLE_SIGNING_MEDIA_TYPE, SignatureLayer, Signed, Signer, SigningKey, SigstoreRoot,
    bundle_artifact, bundle_layer, bundle_referrers, generate_key_pair, referrers_index_with,
    sign_image_bundle, verify_bundle_with, verify_image_bundle, verify_legacy_keyless,
};

const DIGEST: &str = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";
const OTHER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sigstore")
}

fn public_good() -> SigstoreRoot {
    let json = std::fs::read_to_string(corpus().join("trusted-roots/public-good.json")).unwrap();
    SigstoreRoot::from_json(&json).unwrap()
}

fn key() -> SigningKey {
    let pair = generate_key_pair(b"pw").unwrap();
    SigningKey::from_encrypted_pem(pair.private_key_pem.as_bytes(), b"pw").unwrap()
}

fn key_signer(key: &SigningKey, require_log: bool) -> Signer {
    Signer::Key {
        pem: key.public_key_pem(),
        require_log,
    }
}

#[test]
fn a_signed_image_bundle_verifies_for_its_digest_and_key_only() {
    let key = key();
    let root = public_good();
    let bundle = String::from_utf8(sign_image_bundle(&key, DIGEST).unwrap()).unwrap();
    let verified = verify_image_bundle(&bundle, &root, DIGEST, &key_signer(&key, false)).unwrap();
    assert!(!verified.logged);
    assert!(verified.identity.is_none());

    let err = verify_image_bundle(&bundle, &root, OTHER, &key_signer(&key, false)).unwrap_err();
    assert!(matches!(err, BundleError::Unlogged(_)), "{err:?}");
    let err =
        verify_image_bundle(&bundle, &root, DIGEST, &key_signer(&self::key(), false)).unwrap_err();
    assert!(matches!(err, BundleError::Unlogged(_)), "{err:?}");
    // No transparency log entry: refused where the policy requires one.
    let err = verify_image_bundle(&bundle, &root, DIGEST, &key_signer(&key, true)).unwrap_err();
    assert!(matches!(err, BundleError::NoLogEntry), "{err:?}");
    // A keyless signer does not accept a key's bundle.
    let keyless = Signer::Identity {
        identity: Matcher::regex(".*").unwrap(),
        issuer: Matcher::regex(".*").unwrap(),
    };
    assert!(verify_image_bundle(&bundle, &root, DIGEST, &keyless).is_err());

    // The statement is cosign's: in-toto v1, the sign predicate, the digest as subject.
    let doc: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(doc["mediaType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(
        doc["dsseEnvelope"]["payloadType"],
        "application/vnd.in-toto+json"
    );
    let statement: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(doc["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        statement["predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    assert_eq!(statement["subject"][0]["digest"]["sha256"], &DIGEST[7..]);
}

#[test]
fn the_bundle_artifact_names_its_subject_and_the_index_collects_signers() {
    let key = key();
    let subject = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: DIGEST.into(),
        size: 528,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let bundle = sign_image_bundle(&key, DIGEST).unwrap();
    let artifact =
        bundle_artifact(bundle.clone(), subject.clone(), "2026-12-01T00:00:00Z").unwrap();
    let layer = bundle_layer(&artifact.manifest, DIGEST).unwrap();
    assert_eq!(layer.digest, artifact.bundle.digest);
    assert_eq!(artifact.bundle.data, bundle);
    assert_eq!(artifact.config.data, b"{}");
    assert_eq!(
        artifact.config.digest,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    // Listed for another subject, the same manifest is refused.
    assert!(bundle_layer(&artifact.manifest, OTHER).is_err());

    let second = bundle_artifact(
        sign_image_bundle(&self::key(), DIGEST).unwrap(),
        subject,
        "2026-12-01T00:00:01Z",
    )
    .unwrap();
    let index = referrers_index_with(None, &artifact.descriptor).unwrap();
    let index = referrers_index_with(Some(&index), &second.descriptor).unwrap();
    let again = referrers_index_with(Some(&index), &second.descriptor).unwrap();
    assert_eq!(index, again, "adding the same bundle twice lists it once");
    let listed = bundle_referrers(&index).unwrap();
    assert_eq!(listed, vec![artifact.descriptor, second.descriptor]);
    // Descriptors of other artifact types are not bundles.
    let foreign = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3,"artifactType":"application/spdx+json"}]}"#;
    assert!(bundle_referrers(foreign).unwrap().is_empty());
}

/// The keyless fixture's signature layer.
fn fixture_layer() -> SignatureLayer {
    containers_image_layer("dir-img-cosign-fulcio-rekor-valid")
}

/// A containers/image fixture's signature layer: `\0sigstore-json\n` then
/// `{mimeType, payload, annotations}`.
fn containers_image_layer(dir: &str) -> SignatureLayer {
    let raw = std::fs::read(corpus().join(format!("containers-image/{dir}/signature-1"))).unwrap();
    let json = raw.strip_prefix(b"\0sigstore-json\n").unwrap();
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap();
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(doc["annotations"].clone()).unwrap();
    SignatureLayer {
        payload: STANDARD.decode(doc["payload"].as_str().unwrap()).unwrap(),
        signature_b64: annotations["dev.cosignproject.cosign/signature"].clone(),
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
        annotations,
    }
}

fn fixture_signer(email: &str) -> Signer {
    Signer::Identity {
        identity: Matcher::Exact(email.into()),
        issuer: Matcher::Exact("https://github.com/login/oauth".into()),
    }
}

#[test]
fn a_real_legacy_keyless_signature_verifies_offline() {
    let root = public_good();
    let layer = fixture_layer();
    assert!(clb_cosign::is_keyless(&layer));
    let verified =
        verify_legacy_keyless(&layer, &root, DIGEST, &fixture_signer("mitr@redhat.com")).unwrap();
    assert_eq!(verified.identity.as_deref(), Some("mitr@redhat.com"));
    assert!(verified.logged);
    let regex = Signer::Identity {
        identity: Matcher::regex("@redhat\\.com$").unwrap(),
        issuer: Matcher::regex("^https://github\\.com/").unwrap(),
    };
    verify_legacy_keyless(&layer, &root, DIGEST, &regex).unwrap();
}

#[test]
fn a_legacy_keyless_signature_is_refused_for_the_wrong_image_signer_or_proof() {
    let root = public_good();
    let signer = fixture_signer("mitr@redhat.com");
    let err = verify_legacy_keyless(&fixture_layer(), &root, OTHER, &signer).unwrap_err();
    assert!(matches!(err, LegacyKeylessError::Payload(_)), "{err}");

    let err = verify_legacy_keyless(&fixture_layer(), &root, DIGEST, &fixture_signer("x@y.z"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LegacyKeylessError::Bundle(BundleError::Verification(_) | BundleError::Identity { .. })
        ),
        "{err}"
    );

    let mut no_set = fixture_layer();
    no_set.annotations.remove("dev.sigstore.cosign/bundle");
    let err = verify_legacy_keyless(&no_set, &root, DIGEST, &signer).unwrap_err();
    assert!(matches!(err, LegacyKeylessError::Malformed(_)), "{err}");

    // A SET that no longer matches the entry.
    let mut tampered = fixture_layer();
    let rekor = tampered
        .annotations
        .get_mut("dev.sigstore.cosign/bundle")
        .unwrap();
    *rekor = rekor.replace("\"logIndex\":11605770", "\"logIndex\":11605771");
    let err = verify_legacy_keyless(&tampered, &root, DIGEST, &signer).unwrap_err();
    assert!(
        matches!(
            err,
            LegacyKeylessError::Bundle(BundleError::Verification(_))
        ),
        "{err}"
    );

    let mut garbage = fixture_layer();
    garbage.annotations.insert(
        "dev.sigstore.cosign/certificate".into(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
    );
    assert!(verify_legacy_keyless(&garbage, &root, DIGEST, &signer).is_err());

    // Signed by a key, the payload alone is not keyless.
    let mut keyed = fixture_layer();
    keyed.annotations.remove("dev.sigstore.cosign/certificate");
    assert!(!clb_cosign::is_keyless(&keyed));
}

#[test]
fn genuine_key_signatures_verify_for_key_signers() {
    // sigstore-go's key-signed v0.3 bundle: an RFC 3161 timestamp, no transparency log entry.
    let dir = corpus().join("key-bundle/sigstore-go-public-key-validity");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let bundle = read("public-key-validity.sigstore.json");
    let root = SigstoreRoot::from_json(&read("public-key-validity.trusted_root.json")).unwrap();
    let pem = read("public-key-validity.pem");
    let optional = Signer::Key {
        pem: pem.clone(),
        require_log: false,
    };
    let verified =
        verify_bundle_with(&bundle, &root, Signed::Bytes(b"test content"), &optional).unwrap();
    assert!(!verified.logged);
    assert!(
        verify_bundle_with(&bundle, &root, Signed::Bytes(b"test content!"), &optional).is_err()
    );
    let required = Signer::Key {
        pem,
        require_log: true,
    };
    let err =
        verify_bundle_with(&bundle, &root, Signed::Bytes(b"test content"), &required).unwrap_err();
    assert!(matches!(err, BundleError::NoLogEntry), "{err:?}");

    // containers/image's cosign key-signed image signature (legacy layout, Rekor SET).
    let layer = containers_image_layer("dir-img-cosign-key-rekor-valid");
    let pem = std::fs::read(corpus().join("containers-image/cosign2.pub")).unwrap();
    let key = clb_cosign::load_trusted_key(&pem, "cosign2.pub").unwrap();
    let verified = clb_cosign::verify(
        std::slice::from_ref(&layer),
        DIGEST,
        std::slice::from_ref(&key),
    )
    .unwrap();
    assert_eq!(verified.manifest_digest, DIGEST);
    assert!(clb_cosign::verify(&[layer], OTHER, &[key]).is_err());
}
