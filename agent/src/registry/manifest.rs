//! What a registry's manifest bytes mean: an index to pick the platform's image from, or an
//! image manifest whose layer digests are safe to name files and tags with. Pure functions
//! on untrusted bytes, so `fuzz/` drives them directly.

use oci_client::manifest::OciImageManifest;

use super::platform::Platform;
use super::{DOCKER_LIST, OCI_INDEX};
use crate::error::{ClbError, Result};

/// A parsed manifest.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An index: the digest of the image manifest for the platform asked for.
    Index(String),
    /// An image manifest, schema 2, every descriptor digest `sha256:<64 lowercase hex>`.
    Image(Box<OciImageManifest>),
}

/// Parses `raw`, a manifest of `reference` (named in errors), picking `platform` from an
/// index.
pub fn parse(raw: &[u8], reference: &str, platform: &Platform) -> Result<Manifest> {
    let doc: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ClbError::Invalid(format!("manifest of {reference} is not JSON: {e}")))?;
    let media_type = doc.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    if media_type == OCI_INDEX || media_type == DOCKER_LIST || doc.get("manifests").is_some() {
        let digest = platform.pick(&doc).ok_or_else(|| {
            ClbError::NotFound(format!("{reference} has no image for platform {platform}"))
        })?;
        check_sha256(&digest, reference, "the platform's manifest")?;
        return Ok(Manifest::Index(digest));
    }
    let manifest: OciImageManifest = serde_json::from_value(doc).map_err(|e| {
        ClbError::Invalid(format!("image manifest of {reference} is malformed: {e}"))
    })?;
    if manifest.schema_version != 2 {
        return Err(ClbError::Invalid(format!(
            "{reference}: unsupported manifest schema {}",
            manifest.schema_version
        )));
    }
    check_sha256(&manifest.config.digest, reference, "config")?;
    for (i, layer) in manifest.layers.iter().enumerate() {
        check_sha256(&layer.digest, reference, &format!("layer {i}"))?;
        if layer.size < 0 {
            return Err(ClbError::Invalid(format!(
                "{reference}: layer {i} has a negative size"
            )));
        }
    }
    Ok(Manifest::Image(Box::new(manifest)))
}

/// Layer digests become file names in the store and blob URLs: anything but the one
/// algorithm clb checks downloads with, in its canonical spelling, is refused up front.
fn check_sha256(digest: &str, reference: &str, what: &str) -> Result<()> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(ClbError::Invalid(format!(
            "{reference}: {what} digest {digest:?} is not sha256:<64 lowercase hex>"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn platform() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    fn image(layer_digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": 10}]
        }))
        .unwrap()
    }

    #[test]
    fn image_with_sound_digests_parses() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let Manifest::Image(m) = parse(&image(&digest), "r", &platform()).unwrap() else {
            panic!("not an image");
        };
        assert_eq!(m.layers[0].digest, digest);
    }

    #[test]
    fn a_layer_digest_that_could_name_another_file_is_refused() {
        for digest in [
            "sha256:../../../etc/passwd".to_string(),
            format!("sha256:{}", "B".repeat(64)),
            format!("sha512:{}", "b".repeat(128)),
            format!("sha256:{}", "b".repeat(63)),
        ] {
            let err = parse(&image(&digest), "r", &platform()).unwrap_err();
            assert!(matches!(err, ClbError::Invalid(_)), "{digest}: {err}");
            assert!(
                err.to_string().contains("not sha256:<64 lowercase hex>"),
                "{err}"
            );
        }
    }

    #[test]
    fn index_picks_the_platform_and_checks_its_digest() {
        let index = |digest: &str| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": digest, "size": 1,
                               "platform": {"os": "linux", "architecture": "amd64"}}]
            }))
            .unwrap()
        };
        let good = format!("sha256:{}", "c".repeat(64));
        assert!(
            matches!(parse(&index(&good), "r", &platform()).unwrap(), Manifest::Index(d) if d == good)
        );
        assert!(parse(&index("sha256:/x"), "r", &platform()).is_err());
        let other = Platform::parse("linux/arm64").unwrap();
        assert!(matches!(
            parse(&index(&good), "r", &other).unwrap_err(),
            ClbError::NotFound(_)
        ));
    }
}
