//! A reproducible tar of a directory tree, for publishing images without Docker. Names are
//! sorted bytewise, the root itself is not emitted (tar2sqfs then gives the image root a sane
//! 0755 root:root), hard links become tar hard-link entries and xattrs travel as
//! `SCHILY.xattr.*` PAX records.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::rc::Rc;

use crate::paths::join;
use crate::tarwrite::{AppendError, Kind, Meta, TarWriter, Xattrs};
use crate::{ConvertError, Counting};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Entries written (the root directory is not one).
    pub entries: u64,
    /// Bytes of tar written.
    pub bytes: u64,
}

struct Walker<W: Write> {
    tar: TarWriter<BufWriter<Counting<W>>>,
    /// First path seen for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

/// Writes a reproducible tar of the tree under `dir` to `out` (see the module docs).
pub fn tar_from_dir(dir: &Path, out: impl Write) -> Result<TarStats, ConvertError> {
    let md = fs::symlink_metadata(dir).map_err(|e| ConvertError::io(ctx(dir), e))?;
    if !md.is_dir() {
        return Err(ConvertError::io(
            ctx(dir),
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let count = Rc::new(Cell::new(0));
    let mut w = Walker {
        tar: TarWriter::new(BufWriter::with_capacity(
            256 * 1024,
            Counting {
                inner: out,
                count: count.clone(),
            },
        )),
        links: HashMap::new(),
        entries: 0,
    };
    w.walk(dir, b"")?;
    w.tar
        .finish()
        .map_err(|e| ConvertError::io("writing archive", e))?;
    Ok(TarStats {
        entries: w.entries,
        bytes: count.get(),
    })
}

fn ctx(p: &Path) -> String {
    p.display().to_string()
}

impl<W: Write> Walker<W> {
    fn walk(&mut self, abs: &Path, rel: &[u8]) -> Result<(), ConvertError> {
        let mut names = fs::read_dir(abs)
            .and_then(|it| {
                it.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| ConvertError::io(ctx(abs), e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            self.entry(&abs.join(&name), &join(rel, name.as_bytes()))?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &[u8]) -> Result<(), ConvertError> {
        let md = fs::symlink_metadata(abs).map_err(|e| ConvertError::io(ctx(abs), e))?;
        let ft = md.file_type();
        let meta = Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid().into(),
            gid: md.gid().into(),
            mtime: md.mtime(),
        };
        if ft.is_socket() {
            tracing::warn!(path = %abs.display(), "sockets cannot be archived; skipped");
            return Ok(());
        }
        if !ft.is_dir() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                self.entries += 1;
                return self.append(abs, rel, Kind::HardLink(&first), &meta, &[], None);
            }
            self.links.insert(key, rel.to_vec());
        }
        let xattrs = read_xattrs(abs)?;
        self.entries += 1;
        if ft.is_dir() {
            self.append(abs, rel, Kind::Dir, &meta, &xattrs, None)?;
            return self.walk(abs, rel);
        }
        if ft.is_file() {
            let mut file = fs::File::open(abs).map_err(|e| ConvertError::io(ctx(abs), e))?;
            let kind = Kind::File { size: md.len() };
            return self.append(abs, rel, kind, &meta, &xattrs, Some(&mut file));
        }
        if ft.is_symlink() {
            let target = fs::read_link(abs).map_err(|e| ConvertError::io(ctx(abs), e))?;
            let target = target.into_os_string().into_vec();
            return self.append(abs, rel, Kind::Symlink(&target), &meta, &xattrs, None);
        }
        let rdev = md.rdev();
        let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        let kind = if ft.is_char_device() {
            Kind::Char(major, minor)
        } else if ft.is_block_device() {
            Kind::Block(major, minor)
        } else {
            Kind::Fifo
        };
        self.append(abs, rel, kind, &meta, &xattrs, None)
    }

    fn append(
        &mut self,
        abs: &Path,
        rel: &[u8],
        kind: Kind<'_>,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<&mut dyn io::Read>,
    ) -> Result<(), ConvertError> {
        self.tar
            .append(rel, kind, meta, xattrs, data)
            .map_err(|e| match e {
                AppendError::Read(e) => ConvertError::io(ctx(abs), e),
                AppendError::Short { expected, got } => ConvertError::io(
                    ctx(abs),
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while archiving ({got} of {expected} bytes)"),
                    ),
                ),
                AppendError::Write(e) => ConvertError::io("writing archive", e),
                // Only the converter's writer has a limit; this one writes any size.
                AppendError::PaxTooLarge(size) => {
                    ConvertError::unsupported(rel, format!("PAX header of {size} bytes"))
                }
            })
    }
}

/// All xattrs of `path` itself (not a symlink's target), sorted by name.
fn read_xattrs(path: &Path) -> Result<Xattrs, ConvertError> {
    let err = |e: rustix::io::Errno| ConvertError::io(format!("xattrs of {}", ctx(path)), e.into());
    let unsupported =
        |e: rustix::io::Errno| e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP;
    // The list can change between the size query and the read; retry on ERANGE.
    let mut list = Vec::new();
    for _ in 0..8 {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(e) if unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        list.resize(size, 0);
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(err(e)),
        }
    }
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.contains(&b'=') {
            tracing::warn!(path = %path.display(), "xattr name with '=' cannot be archived; skipped");
            continue;
        }
        let cname = OsString::from_vec(name.to_vec());
        let mut value = Vec::new();
        let mut got = false;
        for _ in 0..8 {
            let size = match rustix::fs::lgetxattr_query(path, cname.as_os_str()) {
                Ok(n) => n,
                // Removed since we listed it: nothing to archive.
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => return Err(err(e)),
            };
            value.resize(size, 0);
            match rustix::fs::lgetxattr(path, cname.as_os_str(), &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    got = true;
                    break;
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => return Err(err(e)),
            }
        }
        if got {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}
