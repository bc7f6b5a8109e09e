//! Resumable blob downloads: bytes go straight to a partial file; after an interruption the
//! next attempt (or the next run of clb) continues with an HTTP Range request from where the
//! file ends. The digest covers the whole file: a whole-blob response is checked by
//! oci-client's stream, resumed bytes by our hash of the file (docs/decisions.md).

use std::io::{Seek, SeekFrom};
use std::path::Path;

use futures_util::StreamExt;
use oci_client::Reference;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{Registry, backoff, errors};
use crate::error::{ClbError, Result};

/// Called with the number of bytes of the blob present in the file so far (readable through
/// another descriptor); a smaller number than before means the file was started over.
pub type DownloadProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

impl Registry {
    /// Downloads `desc` into `partial` (resuming what is there), checks size and digest.
    /// On a digest mismatch the partial file is removed so that the next try starts clean;
    /// after any other failure it is kept to resume, unless it holds nothing.
    pub async fn download_blob(
        &self,
        reference: &Reference,
        desc: &OciDescriptor,
        partial: &Path,
        progress: DownloadProgress<'_>,
    ) -> Result<()> {
        let result = self
            .download_blob_into(reference, desc, partial, progress)
            .await;
        if result.is_err()
            && tokio::fs::metadata(partial)
                .await
                .is_ok_and(|m| m.len() == 0)
        {
            let _ = tokio::fs::remove_file(partial).await;
        }
        result
    }

    async fn download_blob_into(
        &self,
        reference: &Reference,
        desc: &OciDescriptor,
        partial: &Path,
        progress: DownloadProgress<'_>,
    ) -> Result<()> {
        let size = u64::try_from(desc.size)
            .map_err(|_| ClbError::Invalid(format!("blob {} has a negative size", desc.digest)))?;
        let io_err = |what: &str| ClbError::io(format!("{what} {}", partial.display()));
        let owned = partial.to_path_buf();
        let (file, prefix_hash, mut have) =
            tokio::task::spawn_blocking(move || open_partial(&owned, size))
                .await?
                .map_err(io_err("opening"))?;
        let mut file = tokio::fs::File::from_std(file);
        // Our hash of the bytes in the file, or `None` while a whole blob is arriving from
        // byte 0: oci-client's stream hashes such a response itself and fails at its end on a
        // mismatch, so hashing it here too was a second SHA-256 pass over every layer (about
        // 5 % of a converting upgrade's CPU). After a broken whole-blob attempt the hash of
        // the bytes kept is rebuilt from the file before resuming.
        let mut hasher = (have > 0).then_some(prefix_hash);
        // The last attempt was a whole blob from byte 0 and its stream ended cleanly, which
        // oci-client only does when the digest matched.
        let mut verified_by_stream = false;
        progress(have);
        let registry = reference.resolve_registry().to_string();
        let auth = self.auth(reference)?;
        let mut attempt = 0;
        while have < size {
            attempt += 1;
            let had = have;
            let (client, _) = self.client(&registry);
            client.store_auth_if_needed(&registry, &auth).await;
            verified_by_stream = false;
            if have > 0 && hasher.is_none() {
                hasher = Some(hash_prefix(&file, have).await.map_err(io_err("reading"))?);
            }
            let result = async {
                let response = if have == 0 {
                    BlobResponse::Full(client.pull_blob_stream(reference, desc).await?)
                } else {
                    client
                        .pull_blob_stream_partial(reference, desc, have, None)
                        .await?
                };
                let mut stream = match response {
                    BlobResponse::Partial(s) => s.stream,
                    BlobResponse::Full(s) => {
                        if have > 0 {
                            tracing::info!(digest = %desc.digest, "registry ignored the range request, starting over");
                            file.set_len(0).await?;
                            file.seek(SeekFrom::Start(0)).await?;
                            have = 0;
                            progress(0);
                        }
                        hasher = None;
                        s.stream
                    }
                };
                // Chunks are written in batches: each tokio file write is a hop to a worker
                // thread, and chunks are often a few KiB.
                let mut pending = Vec::with_capacity(WRITE_BATCH);
                let mut stall = StallGuard::new();
                let ended = loop {
                    let next = tokio::time::timeout_at(stall.deadline(), stream.next()).await;
                    if let Some(e) = stall.check(next.as_ref().map_or(0, |n| match n {
                        Some(Ok(c)) => c.len() as u64,
                        _ => 0,
                    })) {
                        break Err(oci_client::errors::OciDistributionError::IoError(e));
                    }
                    let Ok(next) = next else { continue };
                    let chunk = match next {
                        None => {
                            verified_by_stream = hasher.is_none();
                            break Ok(());
                        }
                        Some(Ok(c)) => c,
                        // oci-client's own digest check fails at the very end of a full
                        // response; ours below gives the better message.
                        Some(Err(_)) if have + pending.len() as u64 == size => break Ok(()),
                        Some(Err(e)) => {
                            break Err(oci_client::errors::OciDistributionError::IoError(e));
                        }
                    };
                    if have + (pending.len() + chunk.len()) as u64 > size {
                        break Err(oci_client::errors::OciDistributionError::SpecViolationError(
                            format!("blob {} is larger than its descriptor says ({size} bytes)", desc.digest),
                        ));
                    }
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= WRITE_BATCH {
                        write_batch(&mut file, &mut hasher, &mut pending, &mut have, progress)
                            .await?;
                    }
                };
                // What arrived before the stream ended is kept, for a resume.
                write_batch(&mut file, &mut hasher, &mut pending, &mut have, progress).await?;
                ended
            }
            .await;
            match result {
                Ok(()) if have < size => {
                    // A body that ends early without an error (its Content-Length was short) is
                    // a failed attempt too: a registry that keeps doing it is given up on.
                    tracing::warn!(digest = %desc.digest, have, size, attempt, "download ended early, resuming");
                    if attempt >= self.opts.attempts {
                        file.sync_all().await.map_err(io_err("syncing"))?;
                        return Err(ClbError::Unreachable(format!(
                            "blob {}: the registry's answers ended early {attempt} times ({have} of {size} bytes)",
                            desc.digest
                        )));
                    }
                }
                Ok(()) => {}
                Err(oci_client::errors::OciDistributionError::IoError(io))
                    if crate::error::is_no_space(&io) =>
                {
                    return Err(ClbError::io(format!("writing {}", partial.display()))(io));
                }
                Err(e) if errors::is_retryable(&e) || errors::is_transport_error(&e) => {
                    tracing::warn!(digest = %desc.digest, attempt, error = %e, "download interrupted");
                    if attempt >= self.opts.attempts {
                        file.sync_all().await.map_err(io_err("syncing"))?;
                        return Err(errors::map_oci_error(e, &format!("blob {}", desc.digest)));
                    }
                }
                Err(e) => {
                    if matches!(
                        e,
                        oci_client::errors::OciDistributionError::SpecViolationError(_)
                    ) {
                        drop(file);
                        let _ = std::fs::remove_file(partial);
                    }
                    return Err(errors::map_oci_error(e, &format!("blob {}", desc.digest)));
                }
            }
            // An attempt that brought bytes resumes at once (the connection broke, the server
            // did not refuse); one that brought none backs off.
            if have < size && have == had {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        // Written, not synced: a complete blob is either installed as a layer (synced then,
        // before its rename) or converted and deleted, so syncing it here wrote every tar
        // layer to disk once for nothing. A blob a power cut truncated or garbled fails its
        // digest on resume and is fetched again.
        file.flush().await.map_err(io_err("writing"))?;
        let hasher = match hasher {
            Some(hasher) => hasher,
            None if verified_by_stream => return Ok(()),
            // The whole-blob stream ended in an error after its last byte (most likely its
            // own digest check): our hash of the file decides, and names the digest.
            None => hash_prefix(&file, size).await.map_err(io_err("reading"))?,
        };
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            drop(file);
            let _ = std::fs::remove_file(partial);
            return Err(ClbError::DigestMismatch {
                what: format!("blob of {reference}"),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// A download that brings fewer than [`STALL_BYTES`] in [`STALL_WINDOW`] is cut and resumed
/// (it counts as an attempt): a per-read timeout never fires on a server that drips a byte a
/// second. With the default 5 attempts such a server is given up on in under 3 minutes.
pub const STALL_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
pub const STALL_BYTES: u64 = 16 << 10;

struct StallGuard {
    window_start: tokio::time::Instant,
    bytes: u64,
}

impl StallGuard {
    fn new() -> Self {
        Self {
            window_start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.window_start + STALL_WINDOW
    }

    /// Counts `arrived` bytes; at the end of a window, the error if it brought too few.
    fn check(&mut self, arrived: u64) -> Option<std::io::Error> {
        self.bytes += arrived;
        if tokio::time::Instant::now() < self.deadline() {
            return None;
        }
        if self.bytes < STALL_BYTES {
            return Some(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "stalled: {} bytes in {} s",
                    self.bytes,
                    STALL_WINDOW.as_secs()
                ),
            ));
        }
        *self = Self::new();
        None
    }
}

/// Bytes gathered before one write to the partial file.
const WRITE_BATCH: usize = 256 << 10;

/// Appends `pending` to the file and the hash, then announces the new length. The write is
/// awaited to completion (tokio hands it to a worker) so that `progress` only announces
/// bytes a reader of the file can see.
async fn write_batch(
    file: &mut tokio::fs::File,
    hasher: &mut Option<Sha256>,
    pending: &mut Vec<u8>,
    have: &mut u64,
    progress: DownloadProgress<'_>,
) -> std::io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    file.write_all(pending).await?;
    file.flush().await?;
    if let Some(hasher) = hasher {
        hasher.update(&pending[..]);
    }
    *have += pending.len() as u64;
    pending.clear();
    progress(*have);
    Ok(())
}

/// Opens (or creates) the partial file and hashes what it already holds.
fn open_partial(path: &Path, size: u64) -> std::io::Result<(std::fs::File, Sha256, u64)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut have = file.metadata()?.len();
    if have > size {
        file.set_len(0)?;
        have = 0;
    }
    let hasher = hash_file_prefix(&file, have)?;
    file.seek(SeekFrom::Start(have))?;
    if have > 0 {
        tracing::info!(path = %path.display(), have, "resuming partial download");
    }
    Ok((file, hasher, have))
}

/// [`hash_file_prefix`] off the async runtime, through a second descriptor.
async fn hash_prefix(file: &tokio::fs::File, len: u64) -> std::io::Result<Sha256> {
    let file = file.try_clone().await?.into_std().await;
    tokio::task::spawn_blocking(move || hash_file_prefix(&file, len))
        .await
        .map_err(std::io::Error::other)?
}

/// SHA-256 of the first `len` bytes of `file`. Positioned reads: a duplicated descriptor
/// shares the file offset the download writes at.
fn hash_file_prefix(file: &std::fs::File, len: u64) -> std::io::Result<Sha256> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let want = buf
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the partial download is shorter than what was written to it",
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher)
}

/// A file as a stream of chunks for chunked uploads.
pub fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, oci_client::errors::OciDistributionError>>
+ Send
+ 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 4 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e.into()), None)),
        }
    })
}
