//! The signature artifact as cosign pushes it to `sha256-<hex>.sig`.
//!
//! cosign builds it with go-containerregistry: `empty.Image` with the OCI
//! manifest media type, then `mutate.Append` of one layer per signature. That
//! gives a config blob listing every payload digest in `rootfs.diff_ids` and
//! one zero-timestamp `history` entry per layer, and a compact manifest whose
//! field order is Go's struct order. We reproduce those bytes exactly, so an
//! artifact we build for a given payload and signature is byte-identical to
//! cosign's (checked against a captured cosign artifact in the tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::CosignError;
use crate::payload::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};

/// Media type of the signature manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the signature manifest's config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// A blob to push, with its `sha256:` digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(data: Vec<u8>) -> Self {
        Self {
            digest: sha256_digest(&data),
            data,
        }
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Everything to push for a signature: blobs first (config and payloads),
/// then `manifest` with media type [`MANIFEST_MEDIA_TYPE`] to the tag from
/// [`crate::signature_tag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureArtifact {
    /// The image config blob.
    pub config: Blob,
    /// One payload blob per layer, in layer order (may repeat a digest if
    /// two signers signed identical payloads; pushing twice is harmless).
    pub payloads: Vec<Blob>,
    /// The OCI image manifest JSON bytes.
    pub manifest: Vec<u8>,
    /// `sha256:` digest of `manifest`.
    pub manifest_digest: String,
}

impl SignatureArtifact {
    /// All blobs to upload before the manifest (config, then payloads).
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.payloads.iter())
    }
}

/// One layer to put in a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Payload blob bytes.
    pub payload: Vec<u8>,
    /// Layer annotations; must contain `dev.cosignproject.cosign/signature`.
    /// Other annotations (e.g. a keyless signer's `dev.sigstore.cosign/bundle`
    /// and `dev.sigstore.cosign/certificate`) are carried over unchanged.
    pub annotations: BTreeMap<String, String>,
}

/// Builds the signature artifact for `(payload, signature_b64)` layers,
/// exactly as cosign pushes it (with `--tlog-upload=false`, i.e. no Rekor
/// bundle annotation).
///
/// Several signers: cosign appends a layer to the existing `.sig` manifest.
/// Do the same by fetching the existing manifest, parsing it with
/// [`parse_signature_manifest`], fetching its payload blobs, and calling
/// [`signature_manifest_annotated`] with the existing layers (annotations
/// kept) followed by the new one. The config is regenerated from the layer
/// list, which yields the same bytes cosign's `mutate.Append` produces.
pub fn signature_manifest(layers: &[(Vec<u8>, String)]) -> Result<SignatureArtifact, CosignError> {
    let specs: Vec<LayerSpec> = layers
        .iter()
        .map(|(payload, sig)| LayerSpec {
            payload: payload.clone(),
            annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), sig.clone())]),
        })
        .collect();
    signature_manifest_annotated(&specs)
}

/// Like [`signature_manifest`], with full control over each layer's
/// annotations (used to append to an existing signature manifest).
pub fn signature_manifest_annotated(
    layers: &[LayerSpec],
) -> Result<SignatureArtifact, CosignError> {
    if layers.is_empty() {
        return Err(CosignError::InvalidManifest(
            "a signature manifest needs at least one layer".into(),
        ));
    }
    for (i, l) in layers.iter().enumerate() {
        if l.annotations
            .get(SIGNATURE_ANNOTATION)
            .is_none_or(|s| s.is_empty())
        {
            return Err(CosignError::InvalidManifest(format!(
                "layer {i} has no {SIGNATURE_ANNOTATION} annotation"
            )));
        }
    }
    let payloads: Vec<Blob> = layers
        .iter()
        .map(|l| Blob::new(l.payload.clone()))
        .collect();
    let config = Blob::new(config_json(payloads.iter().map(|b| b.digest.as_str()))?);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_string(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_string(),
            size: config.data.len() as u64,
            digest: config.digest.clone(),
            annotations: None,
        },
        layers: layers
            .iter()
            .zip(&payloads)
            .map(|(l, b)| Descriptor {
                media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
                size: b.data.len() as u64,
                digest: b.digest.clone(),
                annotations: Some(l.annotations.clone()),
            })
            .collect(),
    };
    let manifest = go_json(&manifest)?;
    Ok(SignatureArtifact {
        manifest_digest: sha256_digest(&manifest),
        config,
        payloads,
        manifest,
    })
}

/// The config blob go-containerregistry writes for cosign's signature image.
/// Field order follows Go's `v1.ConfigFile` struct; zero `created` times are
/// serialised (a struct is never "empty" for `omitempty`).
fn config_json<'a>(diff_ids: impl Iterator<Item = &'a str>) -> Result<Vec<u8>, CosignError> {
    #[derive(Serialize)]
    struct History {
        created: &'static str,
    }
    #[derive(Serialize)]
    struct RootFs<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        diff_ids: Vec<&'a str>,
    }
    #[derive(Serialize)]
    struct Empty {}
    #[derive(Serialize)]
    struct ConfigFile<'a> {
        architecture: &'static str,
        created: &'static str,
        history: Vec<History>,
        os: &'static str,
        rootfs: RootFs<'a>,
        config: Empty,
    }
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let diff_ids: Vec<&str> = diff_ids.collect();
    let cfg = ConfigFile {
        architecture: "",
        created: ZERO_TIME,
        history: diff_ids
            .iter()
            .map(|_| History { created: ZERO_TIME })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        config: Empty {},
    };
    go_json(&cfg)
}

/// Compact JSON with Go's HTML-safe escaping, so annotation values containing
/// `<`, `>` or `&` (certificates, bundles) serialise as cosign's do.
fn go_json<T: Serialize>(v: &T) -> Result<Vec<u8>, CosignError> {
    let s = serde_json::to_string(v).map_err(|e| CosignError::InvalidManifest(e.to_string()))?;
    // Inside serde_json output these characters can only occur within string
    // literals (they are not JSON syntax), so replacing them is safe.
    let s = s
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    Ok(s.into_bytes())
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Serialize, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    size: u64,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// A layer descriptor of a fetched signature manifest: what to fetch
/// (`digest`, `size`) and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

impl LayerDescriptor {
    /// The `dev.cosignproject.cosign/signature` annotation, or "" if absent.
    pub fn signature_b64(&self) -> &str {
        self.annotations
            .get(SIGNATURE_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Builds the [`crate::SignatureLayer`] for [`crate::verify`] once the
    /// payload blob has been fetched. Checks the blob against the
    /// descriptor's digest and size, so a registry cannot swap payloads.
    pub fn with_payload(&self, payload: Vec<u8>) -> Result<crate::SignatureLayer, CosignError> {
        let actual = sha256_digest(&payload);
        if actual != self.digest || payload.len() as u64 != self.size {
            return Err(CosignError::InvalidManifest(format!(
                "payload blob does not match its descriptor (want {} / {} bytes, got {actual} / {} bytes)",
                self.digest,
                self.size,
                payload.len()
            )));
        }
        Ok(crate::SignatureLayer {
            payload,
            signature_b64: self.signature_b64().to_string(),
            media_type: self.media_type.clone(),
            annotations: self.annotations.clone(),
        })
    }
}

/// Parses a fetched signature manifest and returns its layer descriptors.
/// The caller fetches each layer's blob and calls
/// [`LayerDescriptor::with_payload`], which checks it against the (sha256)
/// descriptor digest.
pub fn parse_signature_manifest(manifest_json: &[u8]) -> Result<Vec<LayerDescriptor>, CosignError> {
    let m: Manifest = serde_json::from_slice(manifest_json)
        .map_err(|e| CosignError::InvalidManifest(format!("not an OCI image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(CosignError::InvalidManifest(format!(
            "schemaVersion {} (want 2)",
            m.schema_version
        )));
    }
    Ok(m.layers
        .into_iter()
        .map(|d| LayerDescriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations.unwrap_or_default(),
        })
        .collect())
}
