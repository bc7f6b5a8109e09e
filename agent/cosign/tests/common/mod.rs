// Shared helpers for the integration tests (included with `mod common;`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::PathBuf;

pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const OTHER_DIGEST: &str =
    "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
pub const REPO: &str = "127.0.0.1:5000/clb/os";

pub fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read fixture {}: {e}", p.display()))
}

pub fn layer(payload: &[u8], sig: &str) -> clb_cosign::SignatureLayer {
    clb_cosign::SignatureLayer {
        payload: payload.to_vec(),
        signature_b64: sig.to_string(),
        media_type: clb_cosign::SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
        annotations: Default::default(),
    }
}
