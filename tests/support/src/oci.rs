//! Hand-written OCI image layouts (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::{require_tool, run_cmd, sha256_digest};

/// Media types commonly needed by tests.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Uncompressed tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// gzip-compressed tar layer.
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// zstd-compressed tar layer.
    pub const LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// One layer of an [`OciImageSpec`].
#[derive(Debug, Clone, Default)]
pub struct OciLayer {
    /// The blob exactly as stored (already compressed, if compressed).
    pub data: Vec<u8>,
    /// Layer media type, e.g. [`media_types::LAYER_TAR_GZIP`].
    pub media_type: String,
    /// `rootfs.diff_ids` entry for the default config. `None`: computed by decompressing with
    /// the `gzip`/`zstd` CLI for `+gzip`/`+zstd` media types, else the blob digest itself.
    pub diff_id: Option<String>,
    /// Annotations on the layer descriptor.
    pub annotations: BTreeMap<String, String>,
}

/// Everything [`write_oci_layout_spec`] writes.
#[derive(Debug, Clone)]
pub struct OciImageSpec {
    /// Layers, bottom to top.
    pub layers: Vec<OciLayer>,
    /// Config blob; `None` writes a minimal linux/amd64 image config with `rootfs.diff_ids`.
    pub config: Option<Vec<u8>>,
    /// Config media type ([`media_types::OCI_CONFIG`] by default).
    pub config_media_type: String,
    /// `org.opencontainers.image.ref.name` in `index.json` (`Some("latest")` by default), so
    /// the image is `oci:DIR:TAG` for skopeo.
    pub tag: Option<String>,
    /// Manifest-level annotations.
    pub annotations: BTreeMap<String, String>,
    /// Optional manifest `artifactType`.
    pub artifact_type: Option<String>,
}

impl Default for OciImageSpec {
    fn default() -> Self {
        OciImageSpec {
            layers: Vec::new(),
            config: None,
            config_media_type: media_types::OCI_CONFIG.to_string(),
            tag: Some("latest".to_string()),
            annotations: BTreeMap::new(),
            artifact_type: None,
        }
    }
}

/// Writes an OCI image layout into `dir` (created if needed; an existing `index.json` is
/// replaced) with one manifest whose layers are `layers` (already-compressed blobs, all of
/// `media_type`), a default config, and tag `latest`. Returns the manifest digest
/// (`sha256:…`).
///
/// skopeo reads it as `oci:DIR` or `oci:DIR:latest`. Panics with a message on I/O errors.
pub fn write_oci_layout(dir: &Path, layers: &[Vec<u8>], media_type: &str) -> String {
    let spec = OciImageSpec {
        layers: layers
            .iter()
            .map(|data| OciLayer {
                data: data.clone(),
                media_type: media_type.to_string(),
                ..OciLayer::default()
            })
            .collect(),
        ..OciImageSpec::default()
    };
    write_oci_layout_spec(dir, &spec)
}

/// Writes an OCI image layout for `spec` into `dir`; returns the manifest digest. See
/// [`write_oci_layout`].
pub fn write_oci_layout_spec(dir: &Path, spec: &OciImageSpec) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
    let put = |data: &[u8]| -> (String, usize) {
        let digest = sha256_digest(data);
        let p = blobs.join(digest.trim_start_matches("sha256:"));
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        (digest, data.len())
    };
    let descriptor =
        |media_type: &str, digest: &str, size: usize, ann: &BTreeMap<String, String>| {
            let mut d = json!({"mediaType": media_type, "digest": digest, "size": size});
            if !ann.is_empty() {
                d["annotations"] = json!(ann);
            }
            d
        };

    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &spec.layers {
        let (digest, size) = put(&l.data);
        layer_descs.push(descriptor(&l.media_type, &digest, size, &l.annotations));
        diff_ids.push(match &l.diff_id {
            Some(d) => d.clone(),
            None => default_diff_id(l, &digest),
        });
    }
    let config = match &spec.config {
        Some(c) => c.clone(),
        None => serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("serialize config"),
    };
    let (cdigest, csize) = put(&config);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": descriptor(&spec.config_media_type, &cdigest, csize, &BTreeMap::new()),
        "layers": layer_descs,
    });
    if let Some(at) = &spec.artifact_type {
        manifest["artifactType"] = json!(at);
    }
    if !spec.annotations.is_empty() {
        manifest["annotations"] = json!(spec.annotations);
    }
    let manifest = serde_json::to_vec(&manifest).expect("serialize manifest");
    let (mdigest, msize) = put(&manifest);
    let mut ann = BTreeMap::new();
    if let Some(tag) = &spec.tag {
        ann.insert("org.opencontainers.image.ref.name".to_string(), tag.clone());
    }
    let index: Value = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [descriptor(media_types::OCI_MANIFEST, &mdigest, msize, &ann)],
    });
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    };
    write(
        "index.json",
        &serde_json::to_vec(&index).expect("serialize index"),
    );
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    mdigest
}

fn default_diff_id(l: &OciLayer, digest: &str) -> String {
    let tool = if l.media_type.ends_with("+gzip") {
        "gzip"
    } else if l.media_type.ends_with("+zstd") {
        "zstd"
    } else {
        return digest.to_string();
    };
    require_tool(tool);
    let tmp = tempfile::NamedTempFile::new().expect("temp file for layer");
    fs::write(tmp.path(), &l.data).expect("write layer to temp file");
    let plain = run_cmd(Command::new(tool).arg("-dc").arg(tmp.path()))
        .unwrap_or_else(|e| panic!("decompress layer {digest} for its diff_id: {e}"));
    sha256_digest(&plain)
}

/// Returns a deterministic gzip-compressed tar of the contents of `dir` (entries relative to
/// `dir`, sorted by name, owner 0:0, mtime 0, numeric ids), made with the `tar` and `gzip`
/// CLIs. Useful as an OCI layer.
pub fn tar_gz_dir(dir: &Path) -> Vec<u8> {
    require_tool("tar");
    require_tool("gzip");
    let out = tempfile::NamedTempFile::new().expect("temp file for tar.gz");
    let script = "set -o pipefail; tar -C \"$1\" --sort=name --mtime=@0 --owner=0 --group=0 \
                  --numeric-owner --format=gnu -cf - . | gzip -n -6 > \"$2\"";
    run_cmd(
        Command::new("bash")
            .args(["-c", script, "tar_gz_dir"])
            .arg(dir)
            .arg(out.path()),
    )
    .unwrap_or_else(|e| panic!("tar_gz_dir {}: {e}", dir.display()));
    fs::read(out.path()).expect("read tar.gz")
}
