//! Key handling, signing and verification, without external tools.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clb_cosign::*;
use common::*;

fn keypair(label: &str) -> (SigningKey, TrustedKey) {
    let kp = generate_key_pair(b"pw").unwrap();
    let sk = SigningKey::from_encrypted_pem(kp.private_key_pem.as_bytes(), b"pw").unwrap();
    let tk = load_trusted_key(kp.public_key_pem.as_bytes(), label).unwrap();
    (sk, tk)
}

#[test]
fn keygen_sign_verify_roundtrip() {
    let kp = generate_key_pair(b"correct horse").unwrap();
    assert!(
        kp.private_key_pem
            .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    );
    assert!(
        kp.public_key_pem
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert!(!kp.private_key_pem.contains('\r') && !kp.public_key_pem.contains('\r'));
    // The encrypted body is cosign's JSON: scrypt + nacl/secretbox.
    let body: String = kp
        .private_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["kdf"]["name"], "scrypt");
    assert_eq!(v["cipher"]["name"], "nacl/secretbox");
    assert!(v["ciphertext"].is_string());

    let sk =
        SigningKey::from_encrypted_pem(kp.private_key_pem.as_bytes(), b"correct horse").unwrap();
    assert_eq!(sk.public_key_pem(), kp.public_key_pem);
    assert_eq!(sk.fingerprint(), kp.fingerprint);
    let tk = load_trusted_key(kp.public_key_pem.as_bytes(), "/etc/clb/keys/release.pub").unwrap();
    assert_eq!(tk.fingerprint, kp.fingerprint);
    assert_eq!(tk.fingerprint.len(), 64);

    let payload = simple_signing_payload(REPO, DIGEST);
    let sig = sk.sign(&payload).unwrap();
    let v = verify(&[layer(&payload, &sig)], DIGEST, &[tk]).unwrap();
    assert_eq!(v.key_source, "/etc/clb/keys/release.pub");
    assert_eq!(v.key_fingerprint, kp.fingerprint);
    assert_eq!(v.docker_reference, REPO);
    assert_eq!(v.manifest_digest, DIGEST);
}

#[test]
fn wrong_password_is_bad_key() {
    let kp = generate_key_pair(b"right").unwrap();
    let err = SigningKey::from_encrypted_pem(kp.private_key_pem.as_bytes(), b"wrong").unwrap_err();
    assert!(matches!(err, CosignError::BadKey(_)), "{err:?}");
    assert!(!err.is_verification_failure());
    assert!(err.to_string().contains("wrong password"), "{err}");
    // Garbage and public keys are not private keys.
    assert!(matches!(
        SigningKey::from_encrypted_pem(b"junk", b""),
        Err(CosignError::BadKey(_))
    ));
    assert!(matches!(
        SigningKey::from_encrypted_pem(kp.public_key_pem.as_bytes(), b""),
        Err(CosignError::BadKey(_))
    ));
    assert!(matches!(
        load_trusted_key(b"junk", "x"),
        Err(CosignError::BadKey(_))
    ));
    assert!(matches!(
        load_trusted_key(kp.private_key_pem.as_bytes(), "x"),
        Err(CosignError::BadKey(_))
    ));
}

#[test]
fn empty_password_keys_work() {
    let kp = generate_key_pair(b"").unwrap();
    let sk = SigningKey::from_pem(kp.private_key_pem.as_bytes()).unwrap();
    assert_eq!(sk.fingerprint(), kp.fingerprint);
}

/// Keys written by cosign / sigstore-rs themselves (fixtures from the
/// sigstore crate): both PEM labels, and the unencrypted PKCS#8 form.
#[test]
fn loads_cosign_written_key_files() {
    for (file, pw) in [
        ("cosign_generated_encrypted_empty_private.key", &b""[..]),
        ("ecdsa_encrypted_private.key", &b"123"[..]),
        ("ecdsa_private.key", &b""[..]),
    ] {
        let sk = SigningKey::from_encrypted_pem(&data(file), pw)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let tk = sk.trusted_key(file).unwrap();
        let payload = simple_signing_payload(REPO, DIGEST);
        let sig = sk.sign(&payload).unwrap();
        verify(&[layer(&payload, &sig)], DIGEST, &[tk]).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let err =
        SigningKey::from_encrypted_pem(&data("ecdsa_encrypted_private.key"), b"124").unwrap_err();
    assert!(matches!(err, CosignError::BadKey(_)), "{err:?}");
}

/// A genuine artifact made by `cosign sign --key` (v3.0.4): our verifier
/// accepts it, and our artifact builder reproduces cosign's manifest and
/// config bytes exactly.
#[test]
fn genuine_cosign_artifact() {
    let subject = "sha256:f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268";
    let manifest = data("cosign-v3.0.4.sig-manifest.json");
    let payload = data("cosign-v3.0.4.payload.json");
    let key = load_trusted_key(&data("cosign-v3.0.4.pub"), "cosign.pub").unwrap();
    assert_eq!(
        key.fingerprint,
        "dc2bcfdb0402cd0845f59232655c3ab2a53d55849d4665579efe45c6cc753478"
    );

    // Our payload builder produces cosign's exact bytes.
    assert_eq!(
        simple_signing_payload("localhost:15381/tobby/fixture", subject),
        payload
    );

    let descs = parse_signature_manifest(&manifest).unwrap();
    assert_eq!(descs.len(), 1);
    let layers: Vec<SignatureLayer> = descs
        .iter()
        .map(|d| d.with_payload(payload.clone()).unwrap())
        .collect();
    let v = verify(&layers, subject, std::slice::from_ref(&key)).unwrap();
    assert_eq!(v.docker_reference, "localhost:15381/tobby/fixture");
    assert_eq!(v.key_source, "cosign.pub");

    // Same signature, other digest: rejected.
    let err = verify(&layers, DIGEST, std::slice::from_ref(&key)).unwrap_err();
    assert_eq!(
        err,
        CosignError::DigestMismatch {
            expected: DIGEST.into(),
            found: subject.into()
        }
    );

    // Rebuilding the artifact from payload + signature gives cosign's bytes.
    let art =
        signature_manifest(&[(payload.clone(), descs[0].signature_b64().to_string())]).unwrap();
    assert_eq!(
        String::from_utf8(art.manifest.clone()).unwrap(),
        String::from_utf8(manifest).unwrap()
    );
    assert_eq!(
        art.config.digest,
        "sha256:2122b6ad0794d3fdae43a4b477cf1d95d4a38d3c5f10631e199676039b876e37"
    );

    // A payload blob that does not match its descriptor is refused.
    let mut tampered = payload.clone();
    tampered[10] ^= 1;
    assert!(matches!(
        descs[0].with_payload(tampered),
        Err(CosignError::InvalidManifest(_))
    ));
}

#[test]
fn wrong_key_is_no_key_matched() {
    let (sk, _) = keypair("a");
    let (_, other) = keypair("b");
    let payload = simple_signing_payload(REPO, DIGEST);
    let sig = sk.sign(&payload).unwrap();
    let err = verify(
        &[layer(&payload, &sig)],
        DIGEST,
        std::slice::from_ref(&other),
    )
    .unwrap_err();
    assert_eq!(
        err,
        CosignError::NoKeyMatched {
            tried: vec![other.fingerprint.clone()]
        }
    );
    assert!(err.is_verification_failure());
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn corrupted_signature_rejected() {
    let (sk, tk) = keypair("a");
    let payload = simple_signing_payload(REPO, DIGEST);
    let sig = sk.sign(&payload).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut der = b64.decode(&sig).unwrap();
    // Flip a byte in the middle of r or s (past the DER headers).
    let i = der.len() - 5;
    der[i] ^= 0x01;
    let bad = b64.encode(&der);
    let err = verify(&[layer(&payload, &bad)], DIGEST, std::slice::from_ref(&tk)).unwrap_err();
    assert!(matches!(err, CosignError::NoKeyMatched { .. }), "{err:?}");

    // Tampered payload with the original signature: also rejected.
    let mut p2 = payload.clone();
    let n = p2.len() - 20;
    p2[n] ^= 0x01;
    let err = verify(&[layer(&p2, &sig)], DIGEST, std::slice::from_ref(&tk)).unwrap_err();
    assert!(matches!(err, CosignError::NoKeyMatched { .. }), "{err:?}");

    // Not base64 at all.
    let err = verify(
        &[layer(&payload, "!!not base64!!")],
        DIGEST,
        std::slice::from_ref(&tk),
    )
    .unwrap_err();
    assert!(
        matches!(err, CosignError::BadSignatureEncoding(_)),
        "{err:?}"
    );
    // Missing annotation.
    let err = verify(&[layer(&payload, "")], DIGEST, std::slice::from_ref(&tk)).unwrap_err();
    assert!(
        matches!(err, CosignError::BadSignatureEncoding(_)),
        "{err:?}"
    );
}

#[test]
fn payload_for_another_digest_is_digest_mismatch() {
    let (sk, tk) = keypair("a");
    let payload = simple_signing_payload(REPO, OTHER_DIGEST);
    let sig = sk.sign(&payload).unwrap();
    let err = verify(&[layer(&payload, &sig)], DIGEST, &[tk]).unwrap_err();
    assert_eq!(
        err,
        CosignError::DigestMismatch {
            expected: DIGEST.into(),
            found: OTHER_DIGEST.into()
        }
    );
    assert!(err.to_string().contains(OTHER_DIGEST));
}

#[test]
fn unsigned() {
    let (_, tk) = keypair("a");
    let err = verify(&[], DIGEST, std::slice::from_ref(&tk)).unwrap_err();
    assert_eq!(err, CosignError::Unsigned);
    assert!(err.is_verification_failure());
    // Layers of other media types do not count as signatures.
    let mut l = layer(b"{}", "MEUC");
    l.media_type = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    assert_eq!(
        verify(&[l], DIGEST, &[tk]).unwrap_err(),
        CosignError::Unsigned
    );
    assert_eq!(
        verify(&[], DIGEST, &[]).unwrap_err(),
        CosignError::NoTrustedKeys
    );
}

#[test]
fn media_type_is_enforced_even_with_valid_signature() {
    let (sk, tk) = keypair("a");
    let payload = simple_signing_payload(REPO, DIGEST);
    let mut l = layer(&payload, &sk.sign(&payload).unwrap());
    l.media_type = "application/json".into();
    assert_eq!(
        verify(&[l], DIGEST, &[tk]).unwrap_err(),
        CosignError::Unsigned
    );
}

#[test]
fn malformed_signed_payload() {
    let (sk, tk) = keypair("a");
    for payload in [
        &b"not json"[..],
        br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"something else"},"optional":null}"#,
        br#"{"critical":{"image":{}}}"#,
    ] {
        let sig = sk.sign(payload).unwrap();
        let err = verify(&[layer(payload, &sig)], DIGEST, std::slice::from_ref(&tk)).unwrap_err();
        assert!(matches!(err, CosignError::MalformedPayload(_)), "{err:?}");
    }
}

#[test]
fn rotation_second_key_matches() {
    let (_, old) = keypair("/etc/clb/keys/old.pub");
    let (sk, new) = keypair("/etc/clb/keys/new.pub");
    let payload = simple_signing_payload(REPO, DIGEST);
    let sig = sk.sign(&payload).unwrap();
    let v = verify(&[layer(&payload, &sig)], DIGEST, &[old, new.clone()]).unwrap();
    assert_eq!(v.key_source, "/etc/clb/keys/new.pub");
    assert_eq!(v.key_fingerprint, new.fingerprint);
}

#[test]
fn several_layers_one_good() {
    let (stranger, _) = keypair("x");
    let (sk, tk) = keypair("trusted");
    let payload = simple_signing_payload(REPO, DIGEST);
    let layers = [
        layer(&payload, &stranger.sign(&payload).unwrap()),
        layer(&payload, &sk.sign(&payload).unwrap()),
    ];
    assert_eq!(
        verify(&layers, DIGEST, &[tk]).unwrap().key_source,
        "trusted"
    );
}

/// A signature for another image must be reported as such even when an
/// unrelated stranger's layer comes first.
#[test]
fn most_informative_error_wins() {
    let (stranger, _) = keypair("x");
    let (sk, tk) = keypair("trusted");
    let p = simple_signing_payload(REPO, DIGEST);
    let p_other = simple_signing_payload(REPO, OTHER_DIGEST);
    let layers = [
        layer(&p, &stranger.sign(&p).unwrap()),
        layer(&p_other, &sk.sign(&p_other).unwrap()),
        layer(&p, "***"),
    ];
    assert!(matches!(
        verify(&layers, DIGEST, &[tk]).unwrap_err(),
        CosignError::DigestMismatch { .. }
    ));
}

#[test]
fn key_bundle_and_non_p256_rejected() {
    let a = generate_key_pair(b"").unwrap();
    let b = generate_key_pair(b"").unwrap();
    let bundle = format!("{}{}", a.public_key_pem, b.public_key_pem);
    let keys = load_trusted_keys(bundle.as_bytes(), "keys.pem").unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].source, "keys.pem#1");
    assert_eq!(keys[1].fingerprint, b.fingerprint);
    // An Ed25519 private key (sigstore fixture) is refused: P-256 only.
    let ed = b"-----BEGIN PRIVATE KEY-----\nMFECAQEwBQYDK2VwBCIEILZ7IMwQHwlrU+a5l0WnujhvsmQXrWsStjtbAj8n/EiJ\ngSEAXtg9yVbH8JADtC6sn4NBh1CSDWeCv0ABIj4TtoJj9ak=\n-----END PRIVATE KEY-----\n";
    assert!(matches!(
        SigningKey::from_pem(ed),
        Err(CosignError::BadKey(_))
    ));
}

#[test]
fn payload_bytes() {
    assert_eq!(
        String::from_utf8(simple_signing_payload("reg.example/os", DIGEST)).unwrap(),
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"reg.example/os"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
    );
}

#[test]
fn signature_tag_format() {
    assert_eq!(
        signature_tag(DIGEST).unwrap(),
        "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
    );
    assert!(matches!(
        signature_tag("sha256:xyz"),
        Err(CosignError::InvalidDigest(_))
    ));
    assert!(matches!(
        signature_tag("latest"),
        Err(CosignError::InvalidDigest(_))
    ));
    let (_, tk) = keypair("a");
    assert!(matches!(
        verify(&[], "sha256:ABC", &[tk]),
        Err(CosignError::InvalidDigest(_))
    ));
}

#[test]
fn signature_manifest_structure() {
    let (sk, tk) = keypair("a");
    let p1 = simple_signing_payload(REPO, DIGEST);
    let s1 = sk.sign(&p1).unwrap();
    let art = signature_manifest(&[(p1.clone(), s1.clone())]).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&art.manifest).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(m["config"]["digest"], art.config.digest.as_str());
    assert_eq!(m["config"]["size"], art.config.data.len());
    let l = &m["layers"][0];
    assert_eq!(l["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
    let pd = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&p1))
    );
    assert_eq!(l["digest"], pd.as_str());
    assert_eq!(l["size"], p1.len());
    assert_eq!(l["annotations"][SIGNATURE_ANNOTATION], s1.as_str());
    let cfg: serde_json::Value = serde_json::from_slice(&art.config.data).unwrap();
    assert_eq!(cfg["rootfs"]["type"], "layers");
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!([pd]));
    assert_eq!(art.payloads[0].data, p1);
    assert_eq!(art.blobs().count(), 2);
    let md = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&art.manifest))
    );
    assert_eq!(art.manifest_digest, md);

    // Append a second signer, keeping the first layer's annotations.
    let (sk2, tk2) = keypair("b");
    let s2 = sk2.sign(&p1).unwrap();
    let mut specs: Vec<LayerSpec> = parse_signature_manifest(&art.manifest)
        .unwrap()
        .into_iter()
        .map(|d| LayerSpec {
            payload: p1.clone(),
            annotations: d.annotations,
        })
        .collect();
    specs.push(LayerSpec {
        payload: p1.clone(),
        annotations: [(SIGNATURE_ANNOTATION.to_string(), s2.clone())].into(),
    });
    let art2 = signature_manifest_annotated(&specs).unwrap();
    let descs = parse_signature_manifest(&art2.manifest).unwrap();
    assert_eq!(descs.len(), 2);
    let cfg: serde_json::Value = serde_json::from_slice(&art2.config.data).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!([pd, pd]));
    assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
    let layers: Vec<_> = descs
        .iter()
        .map(|d| d.with_payload(p1.clone()).unwrap())
        .collect();
    assert_eq!(verify(&layers, DIGEST, &[tk]).unwrap().key_source, "a");
    assert_eq!(verify(&layers, DIGEST, &[tk2]).unwrap().key_source, "b");

    assert!(signature_manifest(&[]).is_err());
    assert!(signature_manifest(&[(p1, String::new())]).is_err());
}
