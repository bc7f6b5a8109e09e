//! Bringing an image's layers into the store: only the ones it lacks are downloaded, several
//! at once; tar layers are converted to SquashFS in one streaming pass, native SquashFS
//! layers are stored as downloaded. A layer shared by two slots is fetched and written once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clb_ondisk::LayerRecord;
use clb_ondisk::layout::digest_file_name;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;

use crate::error::{ClbError, Result};
use crate::growing::{FinishOnDrop, GrowingFile, Watermark};
use crate::progress::Progress;
use crate::registry::{Registry, ResolvedImage};
use crate::store::StateStore;

/// Our media type for layers that already are SquashFS images.
pub const SQUASHFS_LAYER_MEDIA_TYPE: &str = "application/vnd.clb.layer.v1.squashfs";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Tar,
    Squashfs,
}

pub fn layer_kind(media_type: &str) -> Result<LayerKind> {
    match media_type {
        SQUASHFS_LAYER_MEDIA_TYPE => Ok(LayerKind::Squashfs),
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(LayerKind::Tar),
        other => Err(ClbError::Invalid(format!(
            "unsupported layer media type {other}"
        ))),
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PullStats {
    pub layers: usize,
    pub layers_downloaded: usize,
    pub bytes_downloaded: u64,
    pub bytes_reused: u64,
}

/// Layers downloaded at once unless `--jobs` says otherwise (the daemon always uses it).
pub const DEFAULT_JOBS: usize = 3;

pub struct PullOptions {
    pub jobs: usize,
    pub convert: clb_convert::ConvertOptions,
}

/// Blob bytes that must be fetched, and a conservative estimate of the store space they need
/// (the download plus its SquashFS form, which is about the size of the compressed tar).
pub fn space_needed(store: &StateStore, image: &ResolvedImage) -> (u64, u64) {
    let mut missing = BTreeMap::new();
    for desc in &image.manifest.layers {
        if store.cached_conversion(&desc.digest).is_none() && !store.has_layer(&desc.digest) {
            missing.insert(desc.digest.clone(), u64::try_from(desc.size).unwrap_or(0));
        }
    }
    let download: u64 = missing.values().sum();
    (download, download.saturating_mul(2) + (1 << 20))
}

/// Makes every layer of `image` present in the store; returns the records bottom to top.
pub async fn pull_layers(
    store: &StateStore,
    registry: &Registry,
    image: &ResolvedImage,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<(Vec<LayerRecord>, PullStats)> {
    let mut stats = PullStats {
        layers: image.manifest.layers.len(),
        ..Default::default()
    };
    for desc in &image.manifest.layers {
        layer_kind(&desc.media_type)?;
    }
    // Each distinct blob once, even if the manifest lists it twice.
    // Bottom layer first, so that progress reads like the stack.
    let mut unique: Vec<OciDescriptor> = Vec::new();
    for desc in &image.manifest.layers {
        if !unique.iter().any(|d| d.digest == desc.digest) {
            unique.push(desc.clone());
        }
    }
    let conversions = Arc::new(Conversions::new(opts));
    let results: Result<Vec<(String, LayerRecord, bool)>> = futures_util::stream::iter(unique)
        .map(|desc| {
            let conversions = conversions.clone();
            async move {
                let (record, downloaded) =
                    ensure_layer(store, registry, image, &desc, &conversions, progress).await?;
                Ok::<_, ClbError>((desc.digest.clone(), record, downloaded))
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await;
    let results = results?;
    let by_source: BTreeMap<String, (LayerRecord, bool)> = results
        .into_iter()
        .map(|(d, r, downloaded)| (d, (r, downloaded)))
        .collect();
    let mut records = Vec::new();
    for (i, desc) in image.manifest.layers.iter().enumerate() {
        let Some((record, downloaded)) = by_source.get(&desc.digest) else {
            return Err(ClbError::State(format!(
                "layer {} went missing",
                desc.digest
            )));
        };
        let size = u64::try_from(desc.size).unwrap_or(0);
        let first_use = image.manifest.layers[..i]
            .iter()
            .all(|d| d.digest != desc.digest);
        if *downloaded && first_use {
            stats.layers_downloaded += 1;
            stats.bytes_downloaded += size;
        } else {
            stats.bytes_reused += size;
        }
        records.push(record.clone());
    }
    Ok((records, stats))
}

/// How tar layers are converted, and how many conversions run at once: no more than the
/// machine has CPUs (downloads beyond that wait on disk for a converter, which then reads
/// them at disk speed), so that converters do not crowd each other or the host's memory.
struct Conversions {
    opts: clb_convert::ConvertOptions,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Conversions {
    fn new(opts: &PullOptions) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            opts: opts.convert.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(cpus.min(opts.jobs).max(1))),
        }
    }

    /// Waits for a conversion slot; the slot is free again when the permit drops.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClbError::State("conversion slots closed".into()))
    }
}

/// Stores a downloaded native SquashFS layer as it is. Blocking: fsync'd renames.
fn store_squashfs_layer(store: &StateStore, desc: &OciDescriptor, partial: &Path) -> Result<()> {
    check_squashfs_magic(partial)?;
    store.install_layer(partial, &desc.digest).map(drop)
}

/// Where a tar layer's SquashFS form is written before it is installed.
fn conversion_output(store: &StateStore, desc: &OciDescriptor) -> PathBuf {
    store
        .layout()
        .tmp_dir()
        .join(format!("{}.squashfs.tmp", digest_file_name(&desc.digest)))
}

/// Installs a finished conversion of a verified download, or cleans up after a failed one,
/// and returns the converted layer's digest. Blocking: fsync'd renames.
fn finish_conversion(
    store: &StateStore,
    desc: &OciDescriptor,
    partial: &Path,
    out: &Path,
    converted: Result<String>,
) -> Result<String> {
    let converted = converted.map_err(|e| match e {
        ClbError::Convert(clb_convert::ConvertError::Expands(limit)) => ClbError::LayerExpands {
            layer: desc.digest.clone(),
            limit,
            free: limit / MAX_EXPANSION_OVER_FREE,
            path: store.root().to_path_buf(),
        },
        other => other,
    });
    let digest = match converted {
        Ok(d) => d,
        Err(e) => {
            // Bad content is not worth resuming, nor is a layer that decompresses past the
            // free space; after a full disk the download is kept so a later run can convert
            // it without fetching it again.
            let expands = matches!(&e, ClbError::LayerExpands { .. });
            if expands || e.exit_code() == crate::error::exit::INVALID_INPUT {
                let _ = std::fs::remove_file(partial);
            }
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    store.install_layer(out, &digest)?;
    store.record_conversion(&desc.digest, &digest)?;
    let _ = std::fs::remove_file(partial);
    Ok(digest)
}

/// Returns the layer record and whether it had to be downloaded.
async fn ensure_layer(
    store: &StateStore,
    registry: &Registry,
    image: &ResolvedImage,
    desc: &OciDescriptor,
    conversions: &Arc<Conversions>,
    progress: &Progress,
) -> Result<(LayerRecord, bool)> {
    let kind = layer_kind(&desc.media_type)?;
    let short = short_digest(&desc.digest);
    let cached = match kind {
        LayerKind::Squashfs => store.has_layer(&desc.digest).then(|| desc.digest.clone()),
        LayerKind::Tar => store.cached_conversion(&desc.digest),
    };
    if let Some(digest) = cached {
        tracing::info!(layer = %short, "already in the store");
        return Ok((record(store, desc, &digest)?, false));
    }
    let size = u64::try_from(desc.size).unwrap_or(0);
    let bar = progress.layer(&short, size);
    let partial = store
        .layout()
        .tmp_dir()
        .join(format!("{}.partial", digest_file_name(&desc.digest)));
    let digest = match kind {
        LayerKind::Squashfs => {
            registry
                .download_blob(&image.reference, desc, &partial, &|n| bar.set(n))
                .await?;
            bar.message("checking");
            let (owned_store, owned_desc) = (store.clone(), desc.clone());
            crate::blocking(move || {
                store_squashfs_layer(&owned_store, &owned_desc, &partial)?;
                Ok(owned_desc.digest)
            })
            .await?
        }
        LayerKind::Tar => {
            convert_while_downloading(store, registry, image, desc, conversions, &partial, &bar)
                .await?
        }
    };
    bar.finish("stored");
    Ok((record(store, desc, &digest)?, true))
}

/// Downloads a tar layer and converts it to SquashFS in the same pass: the converter reads
/// the partial file as the download writes it (a resumed download first converts the bytes a
/// previous run left, at disk speed). Nothing is installed unless the download completed with
/// its digest; a download that had to start over from byte 0 is converted again afterwards.
async fn convert_while_downloading(
    store: &StateStore,
    registry: &Registry,
    image: &ResolvedImage,
    desc: &OciDescriptor,
    conversions: &Arc<Conversions>,
    partial: &Path,
    bar: &crate::progress::LayerProgress,
) -> Result<String> {
    let out = conversion_output(store, desc);
    // The converter opens the file before the downloader does; create it so both see one
    // file (the downloader opens it without truncating and resumes from its length).
    let owned_partial = partial.to_path_buf();
    crate::blocking(move || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&owned_partial)
            .map(drop)
            .map_err(ClbError::io(format!(
                "creating {}",
                owned_partial.display()
            )))
    })
    .await?;
    let mark = Watermark::new();
    let finish_on_drop = FinishOnDrop(mark.clone());
    bar.message("downloading and converting");
    let converter = {
        let (input, out, conversions, mark, store) = (
            partial.to_path_buf(),
            out.clone(),
            conversions.clone(),
            mark.clone(),
            store.clone(),
        );
        tokio::spawn(async move {
            let slot = conversions.slot().await?;
            crate::blocking(move || {
                let _slot = slot;
                let file = GrowingFile::open(&input, mark)
                    .map_err(ClbError::io(format!("opening {}", input.display())))?;
                convert_reader(&store, file, &out, &conversions.opts)
            })
            .await
        })
    };
    let downloaded = registry
        .download_blob(&image.reference, desc, partial, &|n| {
            mark.advance(n);
            bar.set(n);
        })
        .await;
    mark.finish(downloaded.is_ok());
    drop(finish_on_drop);
    bar.message("converting to SquashFS");
    let converted = converter.await.map_err(ClbError::from).and_then(|r| r);
    // The converter reads to the end of the file, which it only sees once the download is
    // complete: a restarted download always failed it, and the finished file is converted
    // again (in a slot of its own).
    let restarted = mark.restarted();
    let slot = match (&downloaded, restarted) {
        (Ok(()), true) => Some(conversions.slot().await?),
        _ => None,
    };
    let (store, desc, partial, conversions) = (
        store.clone(),
        desc.clone(),
        partial.to_path_buf(),
        conversions.clone(),
    );
    crate::blocking(move || {
        if let Err(e) = downloaded {
            // The conversion may have finished before the download failed its digest check.
            let _ = std::fs::remove_file(&out);
            return Err(e);
        }
        let converted = match slot {
            Some(_slot) => {
                tracing::info!(layer = %short_digest(&desc.digest), "download started over; converting the finished file");
                convert_file(&store, &partial, &out, &conversions.opts)
            }
            None => converted,
        };
        finish_conversion(&store, &desc, &partial, &out, converted)
    })
    .await
}

fn convert_file(
    store: &StateStore,
    input: &Path,
    out: &Path,
    opts: &clb_convert::ConvertOptions,
) -> Result<String> {
    let file =
        std::fs::File::open(input).map_err(ClbError::io(format!("opening {}", input.display())))?;
    convert_reader(store, file, out, opts)
}

/// How many times the store's free space a layer may decompress to. Its SquashFS form is what
/// gets stored, and OS content compresses at most about 4:1 with zstd: a layer past this
/// cannot fit, unless it is a decompression bomb (zeros, repeats), which it most likely is.
const MAX_EXPANSION_OVER_FREE: u64 = 8;

/// Converts a tar layer to SquashFS at `out` and returns the image's digest. The layer may
/// not decompress to more than [`MAX_EXPANSION_OVER_FREE`] times the store's free space when
/// the conversion starts: a decompression bomb is stopped while it converts (exit 8) instead
/// of spending CPU on terabytes of zeros.
fn convert_reader(
    store: &StateStore,
    input: impl std::io::Read,
    out: &Path,
    opts: &clb_convert::ConvertOptions,
) -> Result<String> {
    let opts = clb_convert::ConvertOptions {
        max_tar_bytes: Some(
            store
                .available_bytes()?
                .saturating_mul(MAX_EXPANSION_OVER_FREE),
        ),
        ..opts.clone()
    };
    let stats = clb_convert::tar_layer_to_squashfs(input, out, &opts).map_err(ClbError::from)?;
    Ok(stats.output_digest)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let file =
        std::fs::File::open(path).map_err(ClbError::io(format!("opening {}", path.display())))?;
    clb_convert::sha256_of(&file)
        .map(|(_, digest)| digest)
        .map_err(ClbError::io(format!("reading {}", path.display())))
}

/// A native layer must be a SquashFS 4.0 image that fits in the file: its superblock is read
/// and checked here, at staging, rather than met by the kernel at boot (docs/formats.md).
fn check_squashfs_magic(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut superblock = [0u8; 96];
    let read = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.read_exact(&mut superblock).map(|()| len)
    });
    let why = match read {
        Ok(len) => squashfs_superblock_problem(&superblock, len),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some("shorter than a superblock")
        }
        Err(e) => return Err(ClbError::io(format!("reading {}", path.display()))(e)),
    };
    match why {
        None => Ok(()),
        Some(why) => {
            let _ = std::fs::remove_file(path);
            Err(ClbError::Invalid(format!(
                "layer declared as SquashFS is not a SquashFS 4.0 image: {why}"
            )))
        }
    }
}

/// What is wrong with a SquashFS superblock of an image of `len` bytes, if anything.
fn squashfs_superblock_problem(sb: &[u8; 96], len: u64) -> Option<&'static str> {
    let u16_at = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    let block_size = u32_at(12);
    if &sb[..4] != b"hsqs" {
        Some("no SquashFS magic")
    } else if (u16_at(28), u16_at(30)) != (4, 0) {
        Some("not format version 4.0")
    } else if !(4096..=1 << 20).contains(&block_size)
        || u32::from(u16_at(22)) >= 32
        || block_size != 1 << u16_at(22)
    {
        Some("impossible block size")
    } else if !(1..=6).contains(&u16_at(20)) {
        Some("unknown compressor")
    } else if u32_at(4) == 0 {
        Some("no inodes")
    } else if u64_at(40) < 96 || u64_at(40) > len {
        Some("its size field does not fit the file")
    } else {
        None
    }
}

fn record(store: &StateStore, desc: &OciDescriptor, digest: &str) -> Result<LayerRecord> {
    let path = store.layout().layer(digest);
    let size = std::fs::metadata(&path)
        .map_err(ClbError::io(format!("stat {}", path.display())))?
        .len();
    Ok(LayerRecord {
        digest: digest.to_string(),
        source_digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size,
    })
}

pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod superblock_tests {
    use super::squashfs_superblock_problem;

    fn sound() -> [u8; 96] {
        let mut sb = [0u8; 96];
        sb[..4].copy_from_slice(b"hsqs");
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[12..16].copy_from_slice(&131_072u32.to_le_bytes());
        sb[20..22].copy_from_slice(&1u16.to_le_bytes());
        sb[22..24].copy_from_slice(&17u16.to_le_bytes());
        sb[28..30].copy_from_slice(&4u16.to_le_bytes());
        sb[40..48].copy_from_slice(&4096u64.to_le_bytes());
        sb
    }

    #[test]
    fn a_sound_superblock_passes_and_each_broken_field_is_named() {
        assert_eq!(squashfs_superblock_problem(&sound(), 4096), None);
        assert_eq!(
            squashfs_superblock_problem(&sound(), 4095),
            Some("its size field does not fit the file")
        );
        let broken = |at: usize, bytes: &[u8]| {
            let mut sb = sound();
            sb[at..at + bytes.len()].copy_from_slice(bytes);
            squashfs_superblock_problem(&sb, 4096)
        };
        assert_eq!(broken(0, b"sqsh"), Some("no SquashFS magic"));
        assert_eq!(broken(28, &[3, 0]), Some("not format version 4.0"));
        assert_eq!(broken(22, &[16, 0]), Some("impossible block size"));
        assert_eq!(broken(22, &[200, 0]), Some("impossible block size"));
        assert_eq!(broken(20, &[9, 0]), Some("unknown compressor"));
        assert_eq!(broken(4, &[0, 0, 0, 0]), Some("no inodes"));
    }
}
