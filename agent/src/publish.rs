//! Publishing without a Docker daemon: images from plain directories, cosign signatures,
//! conversion of container images into native SquashFS layer sets; and slot mounts.

use std::io::Write;
use std::path::{Path, PathBuf};

use clb_ondisk::SlotName;
use sha2::{Digest, Sha256};

use crate::error::{ClbError, Result};
use crate::pull::{LayerKind, SQUASHFS_LAYER_MEDIA_TYPE, layer_kind};
use crate::registry::{OCI_MANIFEST, Platform, Registry};
use crate::signatures;
use crate::store::StateStore;
use crate::upgrade::now_rfc3339;

pub const TAR_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    TarGzip,
    Squashfs,
}

/// A layer blob built in a temp directory, ready to push.
struct BuiltLayer {
    path: PathBuf,
    digest: String,
    size: u64,
    diff_id: String,
    media_type: &'static str,
}

/// Password for cosign keys, as cosign reads it.
fn key_password() -> Vec<u8> {
    std::env::var("COSIGN_PASSWORD")
        .unwrap_or_default()
        .into_bytes()
}

pub fn keygen(prefix: &Path, force: bool) -> Result<(PathBuf, PathBuf)> {
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            return Err(ClbError::Invalid(format!(
                "{} exists (use --force to overwrite)",
                p.display()
            )));
        }
    }
    let pair =
        clb_cosign::generate_key_pair(&key_password()).map_err(|source| ClbError::Signing {
            context: "generating a key pair".into(),
            source,
        })?;
    write_private(&key_path, pair.private_key_pem.as_bytes())?;
    clb_ondisk::atomic::write_atomic(&pub_path, pair.public_key_pem.as_bytes())
        .map_err(ClbError::io(format!("writing {}", pub_path.display())))?;
    Ok((key_path, pub_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(ClbError::io(format!("writing {}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(ClbError::io(format!("writing {}", path.display())))
}

/// Signs the digest `image` resolves to; appends to an existing signature manifest as
/// cosign does. Returns the signed digest.
/// The layout `clb sign` writes a signature in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// cosign v3's: a Sigstore bundle attached as a referrer of the image.
    Bundle,
    /// cosign's legacy `sha256-<hex>.sig` tag.
    Sig,
}

pub async fn sign(
    registry: &Registry,
    image: &str,
    key: &Path,
    signature_repository: Option<&str>,
    format: SignatureFormat,
) -> Result<String> {
    let pem = std::fs::read(key).map_err(ClbError::io(format!("reading {}", key.display())))?;
    let signer = clb_cosign::SigningKey::from_encrypted_pem(&pem, &key_password())
        .or_else(|_| clb_cosign::SigningKey::from_pem(&pem))
        .map_err(|source| ClbError::Key {
            path: key.display().to_string(),
            source,
        })?;
    let reference = Registry::parse_reference(image)?;
    let (raw, digest) = registry.pull_manifest_raw(&reference).await?;
    let docker_reference = format!("{}/{}", reference.registry(), reference.repository());
    if format == SignatureFormat::Bundle {
        let repository = signatures::signature_repository(&reference, signature_repository)?;
        attach_bundle(registry, &repository, &signer, &raw, &digest).await?;
        return Ok(digest);
    }
    let payload = clb_cosign::simple_signing_payload(&docker_reference, &digest);
    let signature = signer.sign(&payload).map_err(|source| ClbError::Signing {
        context: format!("signing {digest}"),
        source,
    })?;
    let sig_ref = signatures::signature_reference(&reference, signature_repository, &digest)?;
    // Append to what is there, keeping every existing layer and annotation as cosign does.
    let mut layers = Vec::new();
    if let Some((raw, _)) = registry.pull_manifest_optional(&sig_ref).await? {
        let existing = clb_cosign::parse_signature_manifest(&raw).map_err(|source| {
            ClbError::SignatureData {
                location: sig_ref.to_string(),
                source,
            }
        })?;
        for desc in existing {
            let payload = registry.pull_blob_bytes(&sig_ref, &desc.digest).await?;
            layers.push(clb_cosign::LayerSpec {
                payload,
                annotations: desc.annotations,
            });
        }
    }
    layers.push(clb_cosign::LayerSpec {
        payload,
        annotations: [(clb_cosign::SIGNATURE_ANNOTATION.to_string(), signature)].into(),
    });
    let artifact =
        clb_cosign::signature_manifest_annotated(&layers).map_err(|source| ClbError::Signing {
            context: format!("building the signature manifest {sig_ref}"),
            source,
        })?;
    for blob in artifact.blobs() {
        registry
            .push_blob(&sig_ref, blob.data.clone(), &blob.digest)
            .await?;
    }
    registry
        .push_manifest(
            &sig_ref,
            artifact.manifest.clone(),
            clb_cosign::MANIFEST_MEDIA_TYPE,
        )
        .await?;
    Ok(digest)
}

/// Signs `digest` as cosign v3 does and attaches the bundle to it in `repository`: the
/// artifact manifest by digest, then the referrers fallback index (`sha256-<hex>` tag) with
/// it added, which registries with the referrers API ignore and the others need.
async fn attach_bundle(
    registry: &Registry,
    repository: &oci_client::Reference,
    signer: &clb_cosign::SigningKey,
    subject_manifest: &[u8],
    digest: &str,
) -> Result<()> {
    let signing = |context: String| move |source| ClbError::Signing { context, source };
    let bundle = clb_cosign::sign_image_bundle(signer, digest)
        .map_err(signing(format!("signing {digest}")))?;
    let media_type = serde_json::from_slice::<serde_json::Value>(subject_manifest)
        .ok()
        .and_then(|m| m["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let subject = clb_cosign::Descriptor {
        media_type,
        digest: digest.to_string(),
        size: subject_manifest.len() as u64,
        artifact_type: None,
        annotations: Default::default(),
    };
    // cosign writes whole seconds (Go's time.RFC3339).
    let now = now_rfc3339();
    let created = match now.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => now,
    };
    let artifact = clb_cosign::bundle_artifact(bundle, subject, &created)
        .map_err(signing("building the bundle manifest".into()))?;
    let manifest_ref = repository.clone_with_digest(artifact.descriptor.digest.clone());
    for blob in [&artifact.config, &artifact.bundle] {
        registry
            .push_blob(&manifest_ref, blob.data.clone(), &blob.digest)
            .await?;
    }
    registry
        .push_manifest(&manifest_ref, artifact.manifest.clone(), OCI_MANIFEST)
        .await?;
    let tag = clb_cosign::referrers_tag(digest).map_err(signing(format!("tagging {digest}")))?;
    let index_ref = signatures::tagged(repository, tag);
    let existing = registry.pull_manifest_optional(&index_ref).await?;
    let index = clb_cosign::referrers_index_with(
        existing.as_ref().map(|(raw, _)| raw.as_slice()),
        &artifact.descriptor,
    )
    .map_err(signing(format!("updating {index_ref}")))?;
    registry
        .push_manifest(&index_ref, index, crate::registry::OCI_INDEX)
        .await?;
    Ok(())
}

/// Publishes `dirs` (bottom first) as one image, one layer per directory.
pub async fn push_dirs(
    registry: &Registry,
    dirs: &[PathBuf],
    image: &str,
    format: LayerFormat,
) -> Result<String> {
    let reference = Registry::parse_reference(image)?;
    for d in dirs {
        if !d.is_dir() {
            return Err(ClbError::Invalid(format!(
                "{} is not a directory",
                d.display()
            )));
        }
    }
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let mut built = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let (dir, out) = (dir.clone(), work.path().join(format!("layer{i}")));
        let layer = crate::blocking(move || build_layer(&dir, &out, format)).await?;
        tracing::info!(dir = %dirs[i].display(), digest = %layer.digest, size = layer.size, "layer built");
        built.push(layer);
    }
    push_image(registry, &reference, &built).await
}

fn build_layer(dir: &Path, out: &Path, format: LayerFormat) -> Result<BuiltLayer> {
    match format {
        LayerFormat::TarGzip => {
            let file = std::fs::File::create(out)
                .map_err(ClbError::io(format!("creating {}", out.display())))?;
            // Both digests as the bytes go by: the tar's (the diff ID) above the encoder,
            // the blob's below it, so the layer is never read back.
            let blob_hash = HashingWriter {
                inner: file,
                hasher: Sha256::new(),
            };
            let gz = flate2::write::GzEncoder::new(blob_hash, flate2::Compression::default());
            let mut tar_hash = HashingWriter {
                inner: gz,
                hasher: Sha256::new(),
            };
            clb_convert::tar_from_dir(dir, &mut tar_hash).map_err(ClbError::from)?;
            let diff_id = format!("sha256:{}", hex::encode(tar_hash.hasher.finalize()));
            let blob_hash = tar_hash
                .inner
                .finish()
                .and_then(|w| w.inner.sync_all().map(|()| w.hasher))
                .map_err(ClbError::io(format!("writing {}", out.display())))?;
            let digest = format!("sha256:{}", hex::encode(blob_hash.finalize()));
            finish_layer(out, digest, diff_id, TAR_GZIP_MEDIA_TYPE)
        }
        LayerFormat::Squashfs => {
            let stats =
                clb_convert::squashfs_from_dir(dir, out, &clb_convert::ConvertOptions::publisher())
                    .map_err(ClbError::from)?;
            squashfs_layer(out, stats.output_digest)
        }
    }
}

fn finish_layer(
    path: &Path,
    digest: String,
    diff_id: String,
    media_type: &'static str,
) -> Result<BuiltLayer> {
    let size = std::fs::metadata(path)
        .map_err(ClbError::io(format!("stat {}", path.display())))?
        .len();
    Ok(BuiltLayer {
        path: path.to_path_buf(),
        digest,
        size,
        diff_id,
        media_type,
    })
}

/// Uploads layers, an OCI config and the manifest; returns the manifest digest.
async fn push_image(
    registry: &Registry,
    reference: &oci_client::Reference,
    layers: &[BuiltLayer],
) -> Result<String> {
    for l in layers {
        registry
            .push_blob_file(reference, &l.path, &l.digest, l.size)
            .await?;
    }
    let host = Platform::host();
    let config = serde_json::json!({
        "created": now_rfc3339(),
        "architecture": host.architecture,
        "os": host.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "clb push"})).collect::<Vec<_>>(),
    });
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| ClbError::State(format!("config JSON: {e}")))?;
    let config_digest = crate::registry::sha256_digest(&config_bytes);
    let config_size = config_bytes.len();
    registry
        .push_blob(reference, config_bytes, &config_digest)
        .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.size
        })).collect::<Vec<_>>(),
    });
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| ClbError::State(format!("manifest JSON: {e}")))?;
    registry.push_manifest(reference, body, OCI_MANIFEST).await
}

/// Converts a container image into native SquashFS layers (or one merged layer) and pushes it.
pub async fn convert_image(
    registry: &Registry,
    source: &str,
    destination: &str,
    merged: bool,
) -> Result<String> {
    let src = Registry::parse_reference(source)?;
    let dst = Registry::parse_reference(destination)?;
    let image = registry.resolve(&src).await?;
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let mut squashfs = Vec::new();
    for (i, desc) in image.manifest.layers.iter().enumerate() {
        let kind = layer_kind(&desc.media_type)?;
        let blob = work.path().join(format!("blob{i}"));
        registry.download_blob(&src, desc, &blob, &|_| {}).await?;
        let out = work.path().join(format!("layer{i}.squashfs"));
        let digest = match kind {
            LayerKind::Squashfs => {
                std::fs::rename(&blob, &out)
                    .map_err(ClbError::io(format!("moving {}", blob.display())))?;
                // download_blob checked it against the manifest.
                desc.digest.clone()
            }
            LayerKind::Tar => {
                let (b, o) = (blob.clone(), out.clone());
                let stats = crate::blocking(move || {
                    let f = std::fs::File::open(&b)
                        .map_err(ClbError::io(format!("opening {}", b.display())))?;
                    clb_convert::tar_layer_to_squashfs(
                        f,
                        &o,
                        &clb_convert::ConvertOptions::publisher(),
                    )
                    .map_err(ClbError::from)
                })
                .await?;
                stats.output_digest
            }
        };
        squashfs.push((out, digest));
    }
    let layers = if merged {
        let mnt = work.path().join("merged");
        std::fs::create_dir(&mnt).map_err(ClbError::io("creating merge mount point"))?;
        let out = work.path().join("merged.squashfs");
        let paths: Vec<PathBuf> = squashfs.iter().map(|(p, _)| p.clone()).collect();
        let (m, o) = (mnt.clone(), out.clone());
        let stats = crate::blocking(move || -> Result<clb_convert::ConvertStats> {
            let stack = clb_disk::mount_layer_stack(&paths, &m).map_err(ClbError::from)?;
            let result =
                clb_convert::squashfs_from_dir(&m, &o, &clb_convert::ConvertOptions::publisher())
                    .map_err(ClbError::from);
            stack.unmount().map_err(ClbError::from)?;
            result
        })
        .await?;
        vec![squashfs_layer(&out, stats.output_digest)?]
    } else {
        squashfs
            .into_iter()
            .map(|(p, digest)| squashfs_layer(&p, digest))
            .collect::<Result<Vec<_>>>()?
    };
    push_image(registry, &dst, &layers).await
}

/// A SquashFS layer's digest is also its diff ID: it is not compressed as a whole.
fn squashfs_layer(path: &Path, digest: String) -> Result<BuiltLayer> {
    finish_layer(path, digest.clone(), digest, SQUASHFS_LAYER_MEDIA_TYPE)
}

/// `clb mount`: the slot's layers, read-only, stacked as the initrd stacks them.
pub fn mount_slot(store: &StateStore, slot: Option<SlotName>, dir: &Path) -> Result<()> {
    let slot = match slot {
        Some(s) => s,
        None => store
            .read_bootstate()?
            .map(|s| s.active)
            .ok_or_else(|| ClbError::State("nothing installed".into()))?,
    };
    let manifest = store
        .read_slot(slot)?
        .ok_or_else(|| ClbError::State(format!("slot {slot} is empty")))?;
    let layers: Vec<PathBuf> = manifest
        .layer_digests()
        .map(|d| store.layout().layer(d))
        .collect();
    if let Some(missing) = layers.iter().find(|p| !p.is_file()) {
        return Err(ClbError::State(format!(
            "slot {slot} is incomplete: {} is missing",
            missing.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(ClbError::io(format!("creating {}", dir.display())))?;
    clb_disk::mount_layer_stack(&layers, dir)
        .and_then(|m| m.persist())
        .map_err(ClbError::from)?;
    Ok(())
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
