//! The simple-signing payload and the signature tag naming.

use crate::error::CosignError;

/// Media type of a cosign signature layer (the payload blob).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 DER signature over the payload blob.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign image signature payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// cosign's "simple signing" payload for a manifest digest, byte for byte as
/// cosign writes it (Go `encoding/json` of `payload.SimpleContainerImage`
/// with no annotations):
///
/// `{"critical":{"identity":{"docker-reference":"REPO"},"image":{"docker-manifest-digest":"sha256:..."},"type":"cosign container image signature"},"optional":null}`
///
/// `docker_reference` is what cosign puts there: the repository without tag
/// or digest (cosign uses go-containerregistry's `Context().Name()`, e.g.
/// `index.docker.io/library/busybox`, `127.0.0.1:5000/os`). Verification
/// does not compare it (neither does cosign); it is recorded for humans.
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    // Built by hand rather than via serde so that field order, compact
    // separators and `"optional":null` are pinned to what cosign emits; the
    // bytes are what gets signed, so they must be reproducible exactly.
    let mut out = String::with_capacity(200 + docker_reference.len());
    out.push_str(r#"{"critical":{"identity":{"docker-reference":"#);
    out.push_str(&go_json_string(docker_reference));
    out.push_str(r#"},"image":{"docker-manifest-digest":"#);
    out.push_str(&go_json_string(manifest_digest));
    out.push_str(r#"},"type":"#);
    out.push_str(&go_json_string(SIMPLE_SIGNING_TYPE));
    out.push_str(r#"},"optional":null}"#);
    out.into_bytes()
}

/// A JSON string literal encoded like Go's `encoding/json`: serde_json's
/// escaping plus Go's HTML-safe escapes (`<`, `>`, `&`) and U+2028/U+2029,
/// so a payload we build is identical to the one cosign builds even for
/// unusual references.
pub(crate) fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks that `digest` is `sha256:<64 lowercase hex>` or
/// `sha512:<128 lowercase hex>` (the OCI-registered algorithms), so that it
/// can be used safely in a tag name and compared byte for byte.
pub fn validate_digest(digest: &str) -> Result<(), CosignError> {
    let bad = || CosignError::InvalidDigest(digest.to_string());
    let (algo, hex) = digest.split_once(':').ok_or_else(bad)?;
    let want = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    Ok(())
}

/// The tag where cosign stores the signatures of a manifest digest:
/// `sha256:abc…` → `sha256-abc….sig` (cosign replaces `:` by `-` and appends
/// `.sig`).
pub fn signature_tag(manifest_digest: &str) -> Result<String, CosignError> {
    validate_digest(manifest_digest)?;
    Ok(format!("{}.sig", manifest_digest.replacen(':', "-", 1)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn go_escaping() {
        assert_eq!(
            go_json_string("a<b>&\"\\\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\\\n\u0001""#
        );
    }

    #[test]
    fn digest_validation() {
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(63))).is_err());
        assert!(validate_digest(&format!("md5:{}", "a".repeat(32))).is_err());
        assert!(validate_digest("sha256").is_err());
    }
}
