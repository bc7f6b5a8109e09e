//! The rewrite from an OCI layer tar to the tar `tar2sqfs` reads: names normalised and
//! checked, OCI whiteouts turned into overlayfs ones, metadata and xattrs carried over.
//!
//! Opaque directories need care: the xattr belongs on the directory entry, but the
//! `.wh..wh..opq` marker arrives after it. Directory entries are therefore held back while
//! we are inside them (a stack as deep as the current path, so memory stays bounded by depth,
//! not by layer size) and written once the stream leaves them; `tar2sqfs` accepts a directory
//! entry after its children and applies its metadata. Only a marker that arrives after its
//! directory was already written (the stream left and re-entered it) is refused.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};

use base64::Engine as _;

use crate::ConvertError;
use crate::decode::Decoded;
use crate::paths::{check_symlink, hardlink_target, is_ancestor, join, normalize, split_parent};
use crate::tarwrite::{AppendError, Kind, Meta, TarWriter, Xattrs};

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Where a failure came from, so the caller can tell corrupt input, a broken source and a
/// dead `tar2sqfs` apart.
#[derive(Debug)]
pub(crate) enum Failure {
    Convert(ConvertError),
    Read(io::Error),
    Write(io::Error),
}

impl From<ConvertError> for Failure {
    fn from(e: ConvertError) -> Self {
        Self::Convert(e)
    }
}

struct PendingDir {
    path: Vec<u8>,
    meta: Meta,
    xattrs: Xattrs,
    opaque: bool,
}

struct Rewriter<W: Write> {
    out: TarWriter<W>,
    /// Held-back directory entries; each is an ancestor of the next.
    pending: Vec<PendingDir>,
    /// Directories already written, to catch late opaque markers and duplicate entries.
    written_dirs: HashSet<Vec<u8>>,
    /// Opaque markers seen before their directory entry (sorted: output stays deterministic).
    opaque_later: BTreeSet<Vec<u8>>,
    entries: u64,
}

/// Rewrites the whole layer into `out`, then checks the input really ended.
pub(crate) fn rewrite<W: Write>(decoded: Decoded<'_>, out: W) -> Result<(u64, W), Failure> {
    let trailing_zeros = decoded.trailing_zeros.clone();
    let mut archive = tar::Archive::new(decoded);
    let mut rw = Rewriter {
        out: TarWriter::new(out),
        pending: Vec::new(),
        written_dirs: HashSet::new(),
        opaque_later: BTreeSet::new(),
        entries: 0,
    };
    for entry in archive.entries().map_err(Failure::Read)? {
        let mut entry = entry.map_err(Failure::Read)?;
        rw.entries += 1;
        rw.entry(&mut entry)?;
    }
    // The tar crate also ends at EOF on an entry boundary; a real archive ends in a zero block.
    if trailing_zeros.get() < 512 {
        return Err(ConvertError::Corrupt(
            "tar stream ends without an end-of-archive marker (truncated?)".into(),
        )
        .into());
    }
    // Reading to the end validates the compression trailer (gzip CRC, zstd checksum).
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(Failure::Read)?;
    rw.finish()
}

impl<W: Write> Rewriter<W> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Failure> {
        let raw = entry.path_bytes().into_owned();
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            tracing::warn!("ignoring global PAX header in layer");
            return Ok(());
        }
        let path = normalize(&raw).map_err(|r| ConvertError::hostile(&raw, r))?;
        self.leave_dirs(&path)?;

        let (xattrs, pax_mtime) = pax_records(entry, &raw)?;
        let header = entry.header();
        let meta = Meta {
            mode: header.mode().map_err(Failure::Read)? & 0o7777,
            uid: header.uid().map_err(Failure::Read)?,
            gid: header.gid().map_err(Failure::Read)?,
            mtime: match pax_mtime {
                Some(t) => t,
                None => i64::try_from(header.mtime().map_err(Failure::Read)?).unwrap_or(i64::MAX),
            },
        };

        let (parent, base) = split_parent(&path);
        if base == OPAQUE_MARKER {
            return self.mark_opaque(parent, &raw);
        }
        if base.starts_with(b".wh..wh.") {
            // aufs bookkeeping (.wh..wh.plnk and friends) has no overlayfs meaning.
            tracing::debug!(path = %String::from_utf8_lossy(&raw), "skipping aufs metadata");
            return Ok(());
        }
        if let Some(name) = base.strip_prefix(b".wh.") {
            if name.is_empty() {
                return Err(ConvertError::hostile(&raw, "whiteout without a name").into());
            }
            // overlayfs whiteout: a 0/0 character device with the hidden name.
            let meta = Meta { mode: 0, ..meta };
            return self.write(&join(parent, name), Kind::Char(0, 0), &meta, &[], None);
        }

        if ty.is_dir() {
            return self.dir(path, meta, xattrs);
        }
        if path.is_empty() {
            return Err(ConvertError::hostile(&raw, "non-directory at the layer root").into());
        }
        match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                self.write(&path, Kind::File { size }, &meta, &xattrs, Some(entry))
            }
            tar::EntryType::Link => {
                let target = link_name(entry, &raw)?;
                let target =
                    hardlink_target(&target).map_err(|r| ConvertError::hostile(&raw, r))?;
                self.write(&path, Kind::HardLink(&target), &meta, &xattrs, None)
            }
            tar::EntryType::Symlink => {
                let target = link_name(entry, &raw)?;
                check_symlink(&path, &target).map_err(|r| ConvertError::hostile(&raw, r))?;
                self.write(&path, Kind::Symlink(&target), &meta, &xattrs, None)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let h = entry.header();
                let major = h.device_major().map_err(Failure::Read)?.unwrap_or(0);
                let minor = h.device_minor().map_err(Failure::Read)?.unwrap_or(0);
                let kind = if ty == tar::EntryType::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                };
                self.write(&path, kind, &meta, &xattrs, None)
            }
            tar::EntryType::Fifo => self.write(&path, Kind::Fifo, &meta, &xattrs, None),
            other => Err(ConvertError::hostile(
                &raw,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )
            .into()),
        }
    }

    fn mark_opaque(&mut self, dir: &[u8], raw: &[u8]) -> Result<(), Failure> {
        if let Some(p) = self.pending.iter_mut().find(|p| p.path == dir) {
            p.opaque = true;
        } else if self.written_dirs.contains(dir) {
            return Err(ConvertError::unsupported(
                raw,
                "opaque marker arrives after its directory's contents were left",
            )
            .into());
        } else {
            self.opaque_later.insert(dir.to_vec());
        }
        Ok(())
    }

    fn dir(&mut self, path: Vec<u8>, meta: Meta, xattrs: Xattrs) -> Result<(), Failure> {
        if let Some(top) = self.pending.last_mut()
            && top.path == path
        {
            // A repeated entry: the later one wins, as when tar extracts.
            top.meta = meta;
            top.xattrs = xattrs;
            return Ok(());
        }
        if self.written_dirs.contains(&path) {
            tracing::warn!(path = %String::from_utf8_lossy(&path), "duplicate directory entry ignored");
            return Ok(());
        }
        let opaque = self.opaque_later.remove(&path);
        self.pending.push(PendingDir {
            path,
            meta,
            xattrs,
            opaque,
        });
        Ok(())
    }

    /// Writes out held-back directories the stream has left.
    fn leave_dirs(&mut self, path: &[u8]) -> Result<(), Failure> {
        while let Some(top) = self.pending.last() {
            if top.path == path || is_ancestor(&top.path, path) {
                break;
            }
            self.pop_dir()?;
        }
        Ok(())
    }

    fn pop_dir(&mut self) -> Result<(), Failure> {
        let Some(mut dir) = self.pending.pop() else {
            return Ok(());
        };
        if dir.opaque {
            dir.xattrs.retain(|(k, _)| k != OPAQUE_XATTR);
            dir.xattrs.push((OPAQUE_XATTR.to_vec(), b"y".to_vec()));
            dir.xattrs.sort();
        }
        let name: &[u8] = if dir.path.is_empty() {
            b"./"
        } else {
            &dir.path
        };
        self.write(name, Kind::Dir, &dir.meta, &dir.xattrs, None)?;
        self.written_dirs.insert(dir.path);
        Ok(())
    }

    fn write(
        &mut self,
        path: &[u8],
        kind: Kind<'_>,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<&mut dyn Read>,
    ) -> Result<(), Failure> {
        self.out
            .append(path, kind, meta, xattrs, data)
            .map_err(|e| match e {
                AppendError::Read(e) => Failure::Read(e),
                AppendError::Write(e) => Failure::Write(e),
                AppendError::Short { expected, got } => {
                    Failure::Convert(ConvertError::Corrupt(format!(
                        "{}: data truncated ({got} of {expected} bytes)",
                        String::from_utf8_lossy(path)
                    )))
                }
            })
    }

    fn finish(mut self) -> Result<(u64, W), Failure> {
        while !self.pending.is_empty() {
            self.pop_dir()?;
        }
        // Markers for directories the layer never listed: write the directory ourselves.
        for dir in std::mem::take(&mut self.opaque_later) {
            let name: &[u8] = if dir.is_empty() { b"./" } else { &dir };
            let meta = Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            };
            let xattrs = [(OPAQUE_XATTR.to_vec(), b"y".to_vec())];
            self.write(name, Kind::Dir, &meta, &xattrs, None)?;
        }
        self.out.finish().map_err(Failure::Write)?;
        Ok((self.entries, self.out.into_inner()))
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &[u8]) -> Result<Vec<u8>, Failure> {
    match entry.link_name_bytes() {
        Some(t) => Ok(t.into_owned()),
        None => Err(ConvertError::hostile(raw, "link without a target").into()),
    }
}

/// Xattrs (sorted by name) and a PAX mtime, if the entry has them.
fn pax_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
) -> Result<(Xattrs, Option<i64>), Failure> {
    let mut xattrs: Xattrs = Vec::new();
    let mut libarchive: Xattrs = Vec::new();
    let mut mtime = None;
    let Some(exts) = entry.pax_extensions().map_err(Failure::Read)? else {
        return Ok((xattrs, mtime));
    };
    for ext in exts {
        let ext = ext.map_err(Failure::Read)?;
        let key = ext.key_bytes();
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
        } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
            let value = base64_lenient()
                .decode(ext.value_bytes())
                .map_err(|e| ConvertError::Corrupt(format!("bad LIBARCHIVE.xattr value: {e}")))?;
            libarchive.push((percent_decode(name), value));
        } else if key == b"mtime" {
            mtime = parse_pax_time(ext.value_bytes());
        }
    }
    // The same xattr may come both ways; SCHILY (raw bytes) wins.
    for (name, value) in libarchive {
        if !xattrs.iter().any(|(n, _)| *n == name) {
            xattrs.push((name, value));
        }
    }
    xattrs.retain(|(name, _)| keep_xattr(name, raw));
    xattrs.sort();
    xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok((xattrs, mtime))
}

/// Drops xattrs that cannot be carried or must not be: names PAX cannot express, and overlayfs
/// control xattrs other than `opaque` (redirect, metacopy, origin... would let a layer steer
/// overlayfs lookups).
fn keep_xattr(name: &[u8], raw: &[u8]) -> bool {
    let why = if name.is_empty() || name.contains(&b'=') || name.contains(&0) {
        "name cannot be stored"
    } else if name.starts_with(b"trusted.overlay.") && name != OPAQUE_XATTR {
        "overlayfs control xattr"
    } else {
        return true;
    };
    tracing::warn!(
        path = %String::from_utf8_lossy(raw),
        xattr = %String::from_utf8_lossy(name),
        why,
        "dropping xattr"
    );
    false
}

fn base64_lenient() -> base64::engine::GeneralPurpose {
    // libarchive writes base64 without padding; accept it either way.
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// libarchive percent-encodes xattr names in PAX keys.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// PAX times are decimal seconds with an optional fraction; squashfs keeps whole seconds.
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let whole = s.split('.').next()?;
    let t: i64 = whole.parse().ok()?;
    // "-1.5" is 1.5 s before the epoch: round toward minus infinity like tar does.
    if t <= 0
        && s.starts_with('-')
        && s.contains('.')
        && s.split('.').nth(1)?.bytes().any(|b| b != b'0')
    {
        return Some(t - 1);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_time() {
        assert_eq!(parse_pax_time(b"1700000000.123"), Some(1_700_000_000));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-2));
        assert_eq!(parse_pax_time(b"-3"), Some(-3));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode(b"user.a%3Db"), b"user.a=b");
        assert_eq!(percent_decode(b"user.%zz"), b"user.%zz");
    }

    #[test]
    fn xattr_filter() {
        assert!(keep_xattr(b"security.capability", b"x"));
        assert!(keep_xattr(b"trusted.overlay.opaque", b"x"));
        assert!(!keep_xattr(b"trusted.overlay.redirect", b"x"));
        assert!(!keep_xattr(b"user.a=b", b"x"));
    }
}
