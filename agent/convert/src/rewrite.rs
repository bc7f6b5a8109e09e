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

use crate::ConvertError;
use crate::decode::Decoded;
use crate::error::Failure;
use crate::paths::{check_symlink, hardlink_target, is_ancestor, join, normalize, split_parent};
use crate::tarread::{Entry, TarReader};
use crate::tarwrite::{AppendError, Kind, Meta, TarWriter, Xattrs};

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// tar2sqfs (squashfs-tools-ng 1.x, TAR_MAX_PAX_LEN) rejects a longer PAX header body.
const TAR2SQFS_MAX_PAX: usize = 65536;
/// The only xattr namespaces SquashFS can store.
const STORED_PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

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
    /// xattrs (and GNU tar ACL records) SquashFS cannot store.
    unstorable: Dropped,
    /// overlayfs control xattrs other than `opaque`.
    overlay_control: Dropped,
}

/// Rewrites the whole layer into `out`, then checks the input really ended.
pub(crate) fn rewrite<W: Write>(decoded: Decoded<'_>, out: W) -> Result<(u64, W), Failure> {
    let mut reader = TarReader::new(decoded);
    let mut rw = Rewriter::new(out);
    rw.run(&mut reader)?;
    // Reading to the end validates the compression trailer (gzip CRC, zstd checksum).
    io::copy(&mut reader.into_inner(), &mut io::sink()).map_err(Failure::Read)?;
    if let Some(what) = rw.unstorable.describe() {
        tracing::warn!(
            "dropping xattrs SquashFS cannot store (it keeps only user.*, trusted.* and \
             security.*; POSIX ACLs are lost, see docs/conversion.md): {what}"
        );
    }
    if let Some(what) = rw.overlay_control.describe() {
        tracing::warn!(
            "dropping overlayfs control xattrs (a layer must not steer overlayfs lookups): {what}"
        );
    }
    rw.finish()
}

impl<W: Write> Rewriter<W> {
    fn new(out: W) -> Self {
        Self {
            out: TarWriter::with_pax_limit(out, TAR2SQFS_MAX_PAX),
            pending: Vec::new(),
            written_dirs: HashSet::new(),
            opaque_later: BTreeSet::new(),
            entries: 0,
            unstorable: Dropped::default(),
            overlay_control: Dropped::default(),
        }
    }

    fn run<R: Read>(&mut self, reader: &mut TarReader<R>) -> Result<(), Failure> {
        while let Some(entry) = reader.next()? {
            self.entries += 1;
            self.entry(entry, reader)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: Entry, reader: &mut TarReader<R>) -> Result<(), Failure> {
        let Entry {
            path: raw,
            link,
            ty,
            meta,
            size,
            dev,
            mut xattrs,
            acls,
        } = entry;
        let path = normalize(&raw).map_err(|r| ConvertError::hostile(&raw, r))?;
        self.leave_dirs(&path)?;
        self.filter_xattrs(&raw, &mut xattrs, &acls);

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
        let link = || link.ok_or_else(|| ConvertError::hostile(&raw, "link without a target"));
        match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut data = reader.data();
                self.write(&path, Kind::File { size }, &meta, &xattrs, Some(&mut data))
            }
            tar::EntryType::Link => {
                let target =
                    hardlink_target(&link()?).map_err(|r| ConvertError::hostile(&raw, r))?;
                self.write(&path, Kind::HardLink(&target), &meta, &xattrs, None)
            }
            tar::EntryType::Symlink => {
                let target = link()?;
                check_symlink(&path, &target).map_err(|r| ConvertError::hostile(&raw, r))?;
                self.write(&path, Kind::Symlink(&target), &meta, &xattrs, None)
            }
            tar::EntryType::Char => {
                self.write(&path, Kind::Char(dev.0, dev.1), &meta, &xattrs, None)
            }
            tar::EntryType::Block => {
                self.write(&path, Kind::Block(dev.0, dev.1), &meta, &xattrs, None)
            }
            tar::EntryType::Fifo => self.write(&path, Kind::Fifo, &meta, &xattrs, None),
            other => Err(ConvertError::hostile(
                &raw,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )
            .into()),
        }
    }

    /// Drops the xattrs that cannot or must not reach the image, remembering them for the
    /// layer's one warning per kind.
    fn filter_xattrs(&mut self, raw: &[u8], xattrs: &mut Xattrs, acls: &[Vec<u8>]) {
        let (mut unstorable, mut overlay) = (acls.to_vec(), Vec::new());
        xattrs.retain(|(name, _)| {
            if name.starts_with(b"trusted.overlay.") && name != OPAQUE_XATTR {
                overlay.push(name.clone());
            } else if !storable(name) {
                unstorable.push(name.clone());
            } else {
                return true;
            }
            false
        });
        self.unstorable.add(raw, &unstorable);
        self.overlay_control.add(raw, &overlay);
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
                AppendError::PaxTooLarge(size) => Failure::Convert(ConvertError::unsupported(
                    path,
                    format!(
                        "its xattrs and names need a PAX header of {size} bytes; tar2sqfs reads \
                         at most {TAR2SQFS_MAX_PAX}"
                    ),
                )),
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

/// Whether SquashFS (and the PAX stream to tar2sqfs) can carry an xattr of this name.
fn storable(name: &[u8]) -> bool {
    STORED_PREFIXES
        .iter()
        .any(|p| name.len() > p.len() && name.starts_with(p))
        && !name.contains(&b'=')
        && !name.contains(&0)
}

/// xattrs dropped from one layer, for a single warning: a tree full of ACLs would otherwise
/// log a line per file.
#[derive(Default)]
struct Dropped {
    /// Distinct names, the first `MAX_NAMES` of them.
    names: BTreeSet<Vec<u8>>,
    more_names: bool,
    /// The first `FIRST_PATHS` paths affected.
    paths: Vec<Vec<u8>>,
    count: u64,
}

impl Dropped {
    const FIRST_PATHS: usize = 5;
    const MAX_NAMES: usize = 16;

    fn add(&mut self, path: &[u8], names: &[Vec<u8>]) {
        if names.is_empty() {
            return;
        }
        self.count += 1;
        if self.paths.len() < Self::FIRST_PATHS {
            self.paths.push(path.to_vec());
        }
        for name in names {
            if self.names.len() < Self::MAX_NAMES {
                self.names.insert(name.to_vec());
            } else if !self.names.contains(name) {
                self.more_names = true;
            }
        }
    }

    /// "N paths (a, b, ...): name, name", or `None` when nothing was dropped.
    fn describe(&self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let lossy = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
        let mut paths: Vec<String> = self.paths.iter().map(lossy).collect();
        if self.count > self.paths.len() as u64 {
            paths.push("...".into());
        }
        let mut names: Vec<String> = self.names.iter().map(lossy).collect();
        if self.more_names {
            names.push("...".into());
        }
        let noun = if self.count == 1 { "path" } else { "paths" };
        Some(format!(
            "{} {noun} ({}): {}",
            self.count,
            paths.join(", "),
            names.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_names() {
        for name in [
            &b"security.capability"[..],
            b"trusted.overlay.opaque",
            b"user.x",
        ] {
            assert!(storable(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"system.posix_acl_access"[..],
            b"system.posix_acl_default",
            b"system.nfs4_acl",
            b"btrfs.compression",
            b"user.",
            b"user.a=b",
            b"user.a\0b",
            b"",
        ] {
            assert!(!storable(name), "{}", String::from_utf8_lossy(name));
        }
    }

    fn entry(path: &str, xattrs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        let meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let xattrs: Xattrs = xattrs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect();
        w.append(path.as_bytes(), Kind::Dir, &meta, &xattrs, None)
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        w.into_inner()
    }

    #[test]
    fn dropped_xattrs_make_one_summary_per_layer() {
        let acl = [("system.posix_acl_access", &b"\x02\0\0\0"[..])];
        let mut tar = Vec::new();
        for i in 0..7 {
            tar.extend(entry(&format!("d{i}"), &acl));
        }
        tar.extend(entry(
            "var/log/journal",
            &[
                ("system.posix_acl_default", b"\x02\0\0\0"),
                ("user.keep", b"\n"),
                ("trusted.overlay.redirect", b"/x"),
                ("security.capability", b"\x01\0\0\x02\x0a"),
            ],
        ));
        tar.extend_from_slice(&[0u8; 1024]);
        let mut rw = Rewriter::new(Vec::new());
        rw.run(&mut TarReader::new(&tar[..])).unwrap();
        assert_eq!(
            rw.unstorable.describe().unwrap(),
            "8 paths (d0, d1, d2, d3, d4, ...): system.posix_acl_access, system.posix_acl_default"
        );
        assert_eq!(
            rw.overlay_control.describe().unwrap(),
            "1 path (var/log/journal): trusted.overlay.redirect"
        );
        let (_, out) = rw.finish().unwrap();
        let mut reader = TarReader::new(&out[..]);
        let mut kept = Vec::new();
        while let Some(e) = reader.next().unwrap() {
            kept.extend(
                e.xattrs
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), v)),
            );
        }
        assert_eq!(
            kept,
            [
                (
                    "security.capability".to_string(),
                    b"\x01\0\0\x02\x0a".to_vec()
                ),
                ("user.keep".to_string(), b"\n".to_vec())
            ]
        );
        assert_eq!(Dropped::default().describe(), None);
    }
}
