//! Interop with an independent implementation: tests/cosign_signer.py
//! (Python `cryptography`, written from the cosign format). If python3 or
//! `cryptography` is missing these tests FAIL: they never skip.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clb_cosign::*;
use common::*;

fn signer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/cosign_signer.py")
}

/// Runs the Python signer; returns (exit code, stdout). Panics if it cannot
/// run at all or reports a missing dependency (exit 3).
fn py(args: &[&str]) -> (i32, Vec<u8>) {
    // Debian's interpreter, where python3-cryptography is installed (a pyenv python3 may come
    // first on PATH without it).
    let out = Command::new("/usr/bin/python3")
        .arg(signer())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (required for interop tests): {e}"));
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != 3 && code != 2,
        "cosign_signer.py {args:?} failed to run (exit {code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, out.stdout)
}

fn py_ok(args: &[&str]) -> Vec<u8> {
    let (code, stdout) = py(args);
    assert_eq!(code, 0, "cosign_signer.py {args:?} exited {code}");
    stdout
}

fn keygen(dir: &Path, name: &str, format: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    py_ok(&["keygen", prefix.to_str().unwrap(), "--format", format]);
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

#[test]
fn payload_matches_python_byte_for_byte() {
    for (repo, digest) in [
        (REPO, DIGEST),
        ("index.docker.io/library/busybox", OTHER_DIGEST),
        ("odd<&>/repo", DIGEST),
    ] {
        let theirs = py_ok(&["payload", "--repo", repo, "--digest", digest]);
        assert_eq!(
            String::from_utf8(simple_signing_payload(repo, digest)).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }
}

#[test]
fn python_signature_verifies_with_ours() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["pkcs8", "sec1"] {
        let (key, pubk) = keygen(dir.path(), &format!("py-{format}"), format);
        let payload_file = dir.path().join("payload");
        let sig = py_ok(&[
            "sign-local",
            "--key",
            key.to_str().unwrap(),
            "--repo",
            REPO,
            "--digest",
            DIGEST,
            "--payload-out",
            payload_file.to_str().unwrap(),
        ]);
        let sig = String::from_utf8(sig).unwrap().trim().to_string();
        let payload = std::fs::read(&payload_file).unwrap();
        assert_eq!(payload, simple_signing_payload(REPO, DIGEST));

        let tk = load_trusted_key(&std::fs::read(&pubk).unwrap(), pubk.to_str().unwrap()).unwrap();
        let v = verify(&[layer(&payload, &sig)], DIGEST, std::slice::from_ref(&tk)).unwrap();
        assert_eq!(v.key_source, pubk.to_str().unwrap());

        // Our SigningKey loads the Python-written private key (PKCS#8 and
        // SEC1 "EC PRIVATE KEY") and derives the same public key.
        let sk = SigningKey::from_pem(&std::fs::read(&key).unwrap()).unwrap();
        assert_eq!(sk.fingerprint(), tk.fingerprint, "{format}");
    }
}

#[test]
fn python_payload_for_other_digest_is_digest_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (key, pubk) = keygen(dir.path(), "k", "pkcs8");
    let payload_file = dir.path().join("payload");
    let sig = py_ok(&[
        "sign-local",
        "--key",
        key.to_str().unwrap(),
        "--repo",
        REPO,
        "--digest",
        DIGEST,
        "--payload-digest-override",
        OTHER_DIGEST,
        "--payload-out",
        payload_file.to_str().unwrap(),
    ]);
    let sig = String::from_utf8(sig).unwrap().trim().to_string();
    let payload = std::fs::read(&payload_file).unwrap();
    let tk = load_trusted_key(&std::fs::read(&pubk).unwrap(), "k.pub").unwrap();
    assert_eq!(
        verify(&[layer(&payload, &sig)], DIGEST, &[tk]).unwrap_err(),
        CosignError::DigestMismatch {
            expected: DIGEST.into(),
            found: OTHER_DIGEST.into()
        }
    );
}

#[test]
fn our_signature_verifies_with_python() {
    let dir = tempfile::tempdir().unwrap();
    let kp = generate_key_pair(b"pw").unwrap();
    let pubk = dir.path().join("clb.pub");
    std::fs::write(&pubk, &kp.public_key_pem).unwrap();
    let sk = SigningKey::from_encrypted_pem(kp.private_key_pem.as_bytes(), b"pw").unwrap();
    let payload = simple_signing_payload(REPO, DIGEST);
    let payload_file = dir.path().join("payload");
    std::fs::write(&payload_file, &payload).unwrap();
    let sig = sk.sign(&payload).unwrap();

    let (code, _) = py(&[
        "verify",
        "--pub",
        pubk.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--sig",
        &sig,
    ]);
    assert_eq!(code, 0, "python rejected our signature");

    // The independent verifier must also reject a tampered payload, or this
    // test could not fail.
    let mut bad = payload.clone();
    bad[5] ^= 1;
    std::fs::write(&payload_file, &bad).unwrap();
    let (code, _) = py(&[
        "verify",
        "--pub",
        pubk.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--sig",
        &sig,
    ]);
    assert_eq!(code, 1, "python accepted a tampered payload");

    // ... and our signature under a different key.
    let (_, other_pub) = keygen(dir.path(), "other", "pkcs8");
    std::fs::write(&payload_file, &payload).unwrap();
    let (code, _) = py(&[
        "verify",
        "--pub",
        other_pub.to_str().unwrap(),
        "--payload",
        payload_file.to_str().unwrap(),
        "--sig",
        &sig,
    ]);
    assert_eq!(code, 1, "python accepted our signature under another key");
}
