//! clb-convert: OCI/Docker tar layers and plain directories into SquashFS layers.
//!
//! The layer is decoded and rewritten in Rust in a single streaming pass (never unpacked to
//! disk) and piped into `tar2sqfs` from squashfs-tools-ng, which keeps xattrs and hard links.
//! See docs/conversion.md for the rules applied to each entry.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod decode;
mod error;
mod fromdir;
pub mod gunzip;
mod paths;
mod pax;
mod rewrite;
mod tar2sqfs;
mod tarread;
mod tarwrite;

use std::cell::Cell;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::rc::Rc;

pub use error::ConvertError;
pub use fromdir::{TarStats, tar_from_dir};

use error::Failure;
use tar2sqfs::Tar2Sqfs;

/// SquashFS block compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compressor {
    #[default]
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

impl Compressor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compressor {
    type Err = ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Self::Zstd),
            "gzip" => Ok(Self::Gzip),
            "xz" => Ok(Self::Xz),
            "lz4" => Ok(Self::Lz4),
            other => Err(ConvertError::InvalidOptions(format!(
                "unknown compressor {other:?} (zstd, gzip, xz, lz4)"
            ))),
        }
    }
}

impl std::fmt::Display for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    pub compressor: Compressor,
    /// Compressor level; `None` keeps tar2sqfs's default (zstd 15, gzip 9, xz 6). For lz4
    /// any non-zero level selects its high-compression mode.
    pub level: Option<u32>,
    /// Compressor threads for tar2sqfs (0 is taken as 1).
    pub jobs: usize,
    /// Refuse a layer whose decompressed tar stream grows past this many bytes
    /// ([`ConvertError::Expands`]): a few MB of gzip can inflate to terabytes, and each byte
    /// costs CPU even when the image stays small. `None`: no bound.
    pub max_tar_bytes: Option<u64>,
}

impl ConvertOptions {
    /// What a host uses to convert the layers it pulls (`clb upgrade`): chosen by measurement
    /// on real OS content (docs/performance.md, "Host codec"), where every CPU-second spent
    /// is the host's and is spent at every upgrade.
    pub fn host() -> Self {
        Self {
            compressor: Compressor::Zstd,
            level: Some(HOST_ZSTD_LEVEL),
            jobs: 2,
            max_tar_bytes: None,
        }
    }

    /// What a publisher uses once per release (`clb push --format squashfs`, `clb convert`):
    /// tar2sqfs's zstd default, level 15, smaller layers for every host that pulls them.
    pub fn publisher() -> Self {
        Self {
            compressor: Compressor::Zstd,
            level: None,
            jobs: 2,
            max_tar_bytes: None,
        }
    }
}

/// The zstd level of [`ConvertOptions::host`].
pub const HOST_ZSTD_LEVEL: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Tar entries read from the layer (PAX, global PAX and long-name headers not counted).
    pub entries: u64,
    /// Bytes read from `input`, as stored (compressed).
    pub input_bytes: u64,
    /// Decompressed tar bytes read from the layer.
    pub tar_bytes: u64,
    /// Size of the SquashFS image written.
    pub output_bytes: u64,
    /// `sha256:<hex>` of the SquashFS image written: its name in a content-addressed store.
    pub output_digest: String,
}

/// Converts one OCI/Docker image layer (tar; gzip, zstd or plain, detected by magic bytes)
/// read from `input` into a SquashFS image written at `out`.
///
/// Streams in one pass, reading `input` 1 MiB at a time (no need to buffer it). On success the
/// output is fsynced (the caller renames it into place); on any error no file is left at `out`.
pub fn tar_layer_to_squashfs(
    input: impl Read,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertStats, ConvertError> {
    tar2sqfs::args(opts)?;
    let opened = decode::open(input, opts.max_tar_bytes)?;
    let tar_bytes = opened.decoded.count.clone();
    let (child, stdin) = Tar2Sqfs::spawn(out, opts)?;
    let writer = BufWriter::with_capacity(256 * 1024, stdin);

    let entries = match rewrite::rewrite(opened.decoded, writer) {
        Ok((entries, writer)) => {
            // Closing stdin is what tells tar2sqfs the archive is complete.
            drop(writer);
            child.finish()?;
            entries
        }
        Err(Failure::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return Err(child.failed());
        }
        Err(failure) => {
            child.abort();
            return Err(failure_error(
                failure,
                &opened.read_side,
                "writing to tar2sqfs",
            ));
        }
    };

    let (output_bytes, output_digest) = seal_output(out).inspect_err(|_| tar2sqfs::remove(out))?;
    Ok(ConvertStats {
        entries,
        input_bytes: opened.input_bytes.get(),
        tar_bytes: tar_bytes.get(),
        output_bytes,
        output_digest,
    })
}

/// The rewriting pass of [`tar_layer_to_squashfs`] alone: decodes `input` and writes the
/// rewritten tar stream (whiteouts, hard links, paths and metadata as docs/conversion.md
/// says) to `out` instead of tar2sqfs. Returns the number of entries. This is every rule a
/// layer's bytes meet before the converter, which is why `fuzz/` drives it.
pub fn rewrite_layer(input: impl Read, out: impl Write) -> Result<u64, ConvertError> {
    let opened = decode::open(input, None)?;
    rewrite::rewrite(opened.decoded, out)
        .map(|(entries, _)| entries)
        .map_err(|f| failure_error(f, &opened.read_side, "writing the rewritten tar"))
}

/// A failed pass as the error a caller sees: a read failure is the bound on the decoded size
/// when that was passed, else the input's own I/O error when there was one, else the layer
/// is corrupt.
fn failure_error(failure: Failure, read_side: &decode::ReadSide, writing: &str) -> ConvertError {
    match failure {
        Failure::Convert(e) => e,
        Failure::Write(e) => ConvertError::io(writing, e),
        Failure::Read(e) => {
            if let Some(limit) = read_side.expanded.get() {
                return ConvertError::Expands(limit);
            }
            match read_side.input_err.take() {
                Some(source) => ConvertError::io("reading layer", source),
                None => ConvertError::Corrupt(e.to_string()),
            }
        }
    }
}

/// Makes the image durable before the caller renames it into place, and hashes it meanwhile:
/// the fsync waits for the disk and the hash for a CPU, so side by side the tail of the last
/// layer of an upgrade is the longer of the two instead of their sum (docs/performance.md).
fn seal_output(out: &Path) -> Result<(u64, String), ConvertError> {
    let file = std::fs::File::open(out)
        .map_err(|e| ConvertError::io(format!("opening {}", out.display()), e))?;
    let (synced, hashed) = std::thread::scope(|s| {
        let sync = s.spawn(|| file.sync_all());
        let hashed = sha256_of(&file);
        (sync.join(), hashed)
    });
    let synced = synced.unwrap_or_else(|_| Err(io::Error::other("the fsync thread panicked")));
    synced.map_err(|e| ConvertError::io(format!("syncing {}", out.display()), e))?;
    let (len, digest) =
        hashed.map_err(|e| ConvertError::io(format!("reading {}", out.display()), e))?;
    if len == 0 {
        return Err(ConvertError::Tool("produced an empty image".into()));
    }
    Ok((len, digest))
}

/// The length and `sha256:<hex>` digest of a file read from its current offset (its start,
/// when just opened): the name a layer store gives an image.
pub fn sha256_of(mut file: &std::fs::File) -> io::Result<(u64, String)> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    // Large reads: an image is hundreds of MiB, and 256 KiB is small beside the memory budget.
    let mut buf = vec![0; 256 << 10];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// A directory straight into a SquashFS layer: `tar_from_dir` piped into the same converter,
/// so a directory obeys exactly the rules a pulled layer does.
pub fn squashfs_from_dir(
    dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertStats, ConvertError> {
    tar2sqfs::args(opts)?;
    // CLOEXEC matters: a write end inherited by tar2sqfs would keep the pipe open forever.
    let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ConvertError::io("creating pipe", e.into()))?;
    let (rx, tx) = (std::fs::File::from(rx), std::fs::File::from(tx));
    std::thread::scope(|s| {
        let walker = s.spawn(move || {
            let mut tx = tx;
            let r = tar_from_dir(dir, &mut tx);
            // Drop closes the pipe so the converter sees the end (or a truncation).
            drop(tx);
            r
        });
        let converted = tar_layer_to_squashfs(rx, out, opts);
        let walked = walker
            .join()
            .unwrap_or_else(|_| Err(ConvertError::Tool("directory walker panicked".into())));
        match (walked, converted) {
            (Ok(_), converted) => converted,
            // The converter's error explains a walker that hit a closed pipe.
            (Err(e), Err(c)) if is_broken_pipe(&e) => Err(c),
            (Err(e), converted) => {
                if converted.is_ok() {
                    tar2sqfs::remove(out);
                }
                Err(e)
            }
        }
    })
}

fn is_broken_pipe(e: &ConvertError) -> bool {
    matches!(e, ConvertError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// Counts bytes passing through a writer.
pub(crate) struct Counting<W> {
    pub inner: W,
    pub count: Rc<Cell<u64>>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
