//! A small tar writer: ustar headers plus PAX records for whatever does not fit (long names,
//! large ids and sizes, negative times, xattrs). Written by hand because `tar::Builder` (0.4.46)
//! cannot emit PAX records, and xattrs travel only in PAX. Output is byte-for-byte
//! deterministic for the same input.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
const USTAR_ID_MAX: u64 = 0o7_777_777;
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;

/// Ownership, permission bits and modification time of one entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
}

pub(crate) use crate::pax::Xattrs;

pub(crate) enum Kind<'a> {
    File { size: u64 },
    Dir,
    Symlink(&'a [u8]),
    HardLink(&'a [u8]),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// Which side of a copy failed: the caller decides whether a read failure means corrupt input
/// or a broken disk, and whether a write failure is a dead `tar2sqfs`.
#[derive(Debug)]
pub(crate) enum AppendError {
    Read(io::Error),
    /// The data source ended before the size announced in the header.
    Short {
        expected: u64,
        got: u64,
    },
    Write(io::Error),
    /// The entry's PAX header would be larger than the reader downstream accepts.
    PaxTooLarge(usize),
}

pub(crate) struct TarWriter<W: Write> {
    out: W,
    max_pax: Option<usize>,
    /// File data passes through here; one buffer for the whole archive, made on first use.
    buf: Vec<u8>,
}

const COPY_BUF: usize = 64 * 1024;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            max_pax: None,
            buf: Vec::new(),
        }
    }

    /// A writer that refuses entries whose PAX header body exceeds `max` bytes.
    pub fn with_pax_limit(out: W, max: usize) -> Self {
        Self {
            out,
            max_pax: Some(max),
            buf: Vec::new(),
        }
    }

    /// Appends one entry. `data` must yield at least `size` bytes for a `File`; only that many
    /// are read.
    pub fn append(
        &mut self,
        path: &[u8],
        kind: Kind<'_>,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<&mut dyn Read>,
    ) -> Result<(), AppendError> {
        let mut pax: Vec<(&[u8], Vec<u8>)> = Vec::new();
        let mut header = tar::Header::new_ustar();
        let (ty, link, size) = match kind {
            Kind::File { size } => (tar::EntryType::Regular, None, size),
            Kind::Dir => (tar::EntryType::Directory, None, 0),
            Kind::Symlink(t) => (tar::EntryType::Symlink, Some(t), 0),
            Kind::HardLink(t) => (tar::EntryType::Link, Some(t), 0),
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                // Linux majors and minors fit in ustar's 7 octal digits, so these cannot fail.
                let _ = header.set_device_major(ma);
                let _ = header.set_device_minor(mi);
                let ty = if matches!(kind, Kind::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                (ty, None, 0)
            }
            Kind::Fifo => (tar::EntryType::Fifo, None, 0),
        };
        header.set_entry_type(ty);
        header.set_mode(meta.mode & 0o7777);

        let name_field = &mut header.as_old_mut().name;
        if path.len() <= name_field.len() {
            name_field[..path.len()].copy_from_slice(path);
        } else {
            let n = name_field.len();
            name_field.copy_from_slice(&path[..n]);
            pax.push((b"path", path.to_vec()));
        }
        if let Some(link) = link {
            let field = &mut header.as_old_mut().linkname;
            if link.len() <= field.len() {
                field[..link.len()].copy_from_slice(link);
            } else {
                let n = field.len();
                field.copy_from_slice(&link[..n]);
                pax.push((b"linkpath", link.to_vec()));
            }
        }
        if meta.uid <= USTAR_ID_MAX {
            header.set_uid(meta.uid);
        } else {
            header.set_uid(0);
            pax.push((b"uid", meta.uid.to_string().into_bytes()));
        }
        if meta.gid <= USTAR_ID_MAX {
            header.set_gid(meta.gid);
        } else {
            header.set_gid(0);
            pax.push((b"gid", meta.gid.to_string().into_bytes()));
        }
        match u64::try_from(meta.mtime) {
            Ok(t) if t <= USTAR_SIZE_MAX => header.set_mtime(t),
            _ => {
                header.set_mtime(0);
                pax.push((b"mtime", meta.mtime.to_string().into_bytes()));
            }
        }
        if size <= USTAR_SIZE_MAX {
            header.set_size(size);
        } else {
            header.set_size(0);
            pax.push((b"size", size.to_string().into_bytes()));
        }

        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(xattrs.len());
        for (name, _) in xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(name);
            keys.push(k);
        }
        for (k, (_, v)) in keys.iter().zip(xattrs) {
            pax.push((k, v.clone()));
        }

        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                crate::pax::record(&mut body, k, v);
            }
            if self.max_pax.is_some_and(|max| body.len() > max) {
                return Err(AppendError::PaxTooLarge(body.len()));
            }
            self.write_pax(&body).map_err(AppendError::Write)?;
        }
        header.set_cksum();
        self.out
            .write_all(header.as_bytes())
            .map_err(AppendError::Write)?;
        if size > 0 {
            let data = data.ok_or(AppendError::Short {
                expected: size,
                got: 0,
            })?;
            self.copy_data(data, size)?;
        }
        Ok(())
    }

    fn write_pax(&mut self, body: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(body.len() as u64);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(body)?;
        self.pad(body.len() as u64)
    }

    fn copy_data(&mut self, data: &mut dyn Read, size: u64) -> Result<(), AppendError> {
        let Self { out, buf, .. } = self;
        if buf.is_empty() {
            buf.resize(COPY_BUF, 0);
        }
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(AppendError::Short {
                        expected: size,
                        got: size - left,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(AppendError::Read(e)),
            };
            out.write_all(&buf[..n]).map_err(AppendError::Write)?;
            left -= n as u64;
        }
        self.pad(size).map_err(AppendError::Write)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_buffer_for_all_files() {
        let mut w = TarWriter::new(Vec::new());
        let meta = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        let files: [&[u8]; 3] = [&[b'a'; 70_000], b"bb", &[b'c'; 600]];
        let mut first = None;
        for (i, data) in files.iter().enumerate() {
            let mut src = *data;
            let kind = Kind::File {
                size: data.len() as u64,
            };
            w.append(format!("f{i}").as_bytes(), kind, &meta, &[], Some(&mut src))
                .map_err(|e| format!("{e:?}"))
                .unwrap();
            assert_eq!(*first.get_or_insert(w.buf.as_ptr()), w.buf.as_ptr());
            assert_eq!(w.buf.len(), COPY_BUF);
        }
        w.finish().unwrap();
        let bytes = w.into_inner();
        let mut ar = tar::Archive::new(&bytes[..]);
        for (e, want) in ar.entries().unwrap().zip(files) {
            let mut got = Vec::new();
            e.unwrap().read_to_end(&mut got).unwrap();
            assert!(got == want);
        }
    }

    #[test]
    fn pax_roundtrip_through_tar_crate() {
        let long = vec![b'n'; 300];
        let mut w = TarWriter::new(Vec::new());
        let meta = Meta {
            mode: 0o4755,
            uid: 5_000_000,
            gid: 7,
            mtime: -5,
        };
        let xattrs = vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2])];
        let mut data: &[u8] = b"hello";
        w.append(
            &long,
            Kind::File { size: 5 },
            &meta,
            &xattrs,
            Some(&mut data),
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        w.finish().unwrap();
        let bytes = w.into_inner();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), &long[..]);
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert!(pax.contains(&("mtime".into(), b"-5".to_vec())));
        assert!(pax.contains(&("SCHILY.xattr.security.capability".into(), vec![1, 0, 0, 2])));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(entries.next().is_none());
    }
}
