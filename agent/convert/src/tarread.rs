//! The tar reader behind the rewriter. Headers are decoded with the tar crate's `Header`, but
//! framing, PAX records (`pax.rs`), GNU long names and GNU sparse maps are handled here: the
//! crate's `Archive` applies PAX `size`, `uid`, `gid` and `path` through a newline-splitting
//! parser that silently skips what it cannot read, so a value holding 0x0a could make it frame
//! entries, or name them, differently from GNU tar, libarchive and tar2sqfs.

use std::io::{self, Read};

use crate::ConvertError;
use crate::error::Failure;
use crate::pax::{self, Pax};
use crate::tarwrite::{Meta, Xattrs};

const BLOCK: u64 = 512;
/// A sparse map longer than this is refused rather than held in memory (16 bytes a chunk).
const MAX_SPARSE_CHUNKS: usize = 1 << 20;
/// Holes a sparse entry may add to its stored data: every hole byte is streamed to tar2sqfs as
/// a zero, so without a bound a 512-byte header declaring a real size of 2^63 would make the
/// conversion run for ever. 1 GiB per entry covers sparse files found in OS layers (GNU tar is
/// the only writer; Docker and BuildKit never write sparse entries).
pub(crate) const MAX_SPARSE_HOLES: u64 = 1 << 30;

/// One archive member with its extension headers applied.
pub(crate) struct Entry {
    /// The name as given: PAX `path`, else GNU long name, else the header (with ustar prefix).
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub ty: tar::EntryType,
    pub meta: Meta,
    /// Content bytes; for a GNU sparse file its full size, holes included.
    pub size: u64,
    pub dev: (u32, u32),
    pub xattrs: Xattrs,
    pub acls: Vec<Vec<u8>>,
}

pub(crate) struct TarReader<R> {
    inner: R,
    /// Archive offset, for error messages.
    offset: u64,
    /// Bytes of the current member still in the stream (unread data and padding).
    left: u64,
    /// Content of the current member: where its stored chunks go in the file.
    chunks: Vec<(u64, u64)>,
    chunk: usize,
    pos: u64,
    size: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            left: 0,
            chunks: Vec::new(),
            chunk: 0,
            pos: 0,
            size: 0,
        }
    }

    /// The next member, or `None` at the end-of-archive block.
    pub fn next(&mut self) -> Result<Option<Entry>, Failure> {
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            self.skip_rest()?;
            let Some(header) = self.header()? else {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(corrupt(
                        "extension header at the end of the archive, with no entry",
                    ));
                }
                return Ok(None);
            };
            let ty = header.entry_type();
            let stored = header.entry_size().map_err(|_| {
                corrupt(format!(
                    "unreadable size field in the header at byte {}",
                    self.offset - BLOCK
                ))
            })?;
            let slot = match ty {
                tar::EntryType::XHeader => {
                    let body = self.body(stored, "PAX header")?;
                    set_once(&mut pax, pax::parse(&body)?, "PAX headers")?;
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    tracing::warn!("ignoring global PAX header in layer");
                    self.left = padded(stored)?;
                    continue;
                }
                tar::EntryType::GNULongName => &mut long_name,
                tar::EntryType::GNULongLink => &mut long_link,
                _ => {
                    let pax = pax.unwrap_or_default();
                    return self
                        .member(&header, stored, pax, long_name, long_link)
                        .map(Some);
                }
            };
            let mut body = self.body(stored, "GNU long name")?;
            // GNU tar counts the terminating NUL in the size.
            if body.last() == Some(&0) {
                body.pop();
            }
            set_once(slot, body, "GNU long-name headers")?;
        }
    }

    /// The content of the member `next` returned; reads stop at its size.
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// `header_size` is the header's size field, already parsed by `next`.
    fn member(
        &mut self,
        header: &tar::Header,
        header_size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, Failure> {
        let path = pax
            .path
            .or(long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let field = |what: &'static str| {
            let path = String::from_utf8_lossy(&path);
            move |_: io::Error| {
                ConvertError::Corrupt(format!("{path}: unreadable {what} field in header"))
            }
        };
        let ty = header.entry_type();
        if pax.sparse {
            return Err(ConvertError::unsupported(
                &path,
                "GNU tar PAX sparse file (archive it without --sparse)",
            )
            .into());
        }
        let meta = Meta {
            mode: header.mode().map_err(field("mode"))? & 0o7777,
            uid: id(&path, "uid", pax.uid, || header.uid().map_err(field("uid")))?,
            gid: id(&path, "gid", pax.gid, || header.gid().map_err(field("gid")))?,
            mtime: match pax.mtime {
                Some(t) => t,
                None => i64::try_from(header.mtime().map_err(field("mtime"))?).unwrap_or(i64::MAX),
            },
        };
        let dev = if matches!(ty, tar::EntryType::Char | tar::EntryType::Block) {
            (
                header.device_major().map_err(field("device"))?.unwrap_or(0),
                header.device_minor().map_err(field("device"))?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let stored = pax.size.unwrap_or(header_size);
        // The chunk list is reused from entry to entry: most entries need one chunk.
        let mut chunks = std::mem::take(&mut self.chunks);
        chunks.clear();
        let size = if ty.is_gnu_sparse() {
            let real = self.sparse_map(header, stored, &path, &mut chunks);
            self.chunks = chunks;
            real?
        } else {
            chunks.push((0, stored));
            self.chunks = chunks;
            stored
        };
        self.left = padded(stored)?;
        self.chunk = 0;
        self.pos = 0;
        self.size = size;
        Ok(Entry {
            link: pax
                .linkpath
                .or(long_link)
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned())),
            path,
            ty,
            meta,
            size,
            dev,
            xattrs: pax.xattrs,
            acls: pax.acls,
        })
    }

    /// Old GNU sparse format: up to four chunks in the header, more in 512-byte extension
    /// blocks right after it; the stored data is the chunks back to back.
    /// Fills `chunks` (empty on entry) with the map and returns the real size.
    fn sparse_map(
        &mut self,
        header: &tar::Header,
        stored: u64,
        path: &[u8],
        chunks: &mut Vec<(u64, u64)>,
    ) -> Result<u64, Failure> {
        let bad =
            |why: &str| ConvertError::Corrupt(format!("{}: {why}", String::from_utf8_lossy(path)));
        let gnu = header
            .as_gnu()
            .ok_or_else(|| bad("sparse entry without a GNU header"))?;
        let real = gnu.real_size().map_err(|_| bad("unreadable sparse size"))?;
        let mut add = |blocks: &[tar::GnuSparseHeader]| -> Result<(), ConvertError> {
            for b in blocks.iter().filter(|b| !b.is_empty()) {
                let off = b.offset().map_err(|_| bad("unreadable sparse map"))?;
                let len = b.length().map_err(|_| bad("unreadable sparse map"))?;
                chunks.push((off, len));
            }
            if chunks.len() > MAX_SPARSE_CHUNKS {
                return Err(ConvertError::unsupported(path, "sparse map too long"));
            }
            Ok(())
        };
        add(&gnu.sparse)?;
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = tar::GnuExtSparseHeader::new();
            if self.fill(ext.as_mut_bytes())? != BLOCK as usize {
                return Err(bad("archive ends inside a sparse map").into());
            }
            add(ext.sparse())?;
            extended = ext.is_extended();
        }
        let mut end = 0u64;
        let mut total = 0u64;
        for &(off, len) in chunks.iter() {
            if off < end {
                return Err(bad("sparse chunks overlap or are out of order").into());
            }
            end = off
                .checked_add(len)
                .ok_or_else(|| bad("sparse chunk overflows"))?;
            total = total
                .checked_add(len)
                .ok_or_else(|| bad("sparse chunk overflows"))?;
        }
        if end > real || total != stored {
            return Err(bad("sparse map disagrees with the sizes in the header").into());
        }
        if real - stored > MAX_SPARSE_HOLES {
            return Err(ConvertError::unsupported(
                path,
                format!(
                    "sparse file of {real} bytes with only {stored} stored: holes over {MAX_SPARSE_HOLES} bytes"
                ),
            )
            .into());
        }
        Ok(real)
    }

    /// Reads the next header block; `None` for the end-of-archive (all-zero) block.
    fn header(&mut self) -> Result<Option<tar::Header>, Failure> {
        let mut header = tar::Header::new_old();
        let at = self.offset;
        match self.fill(header.as_mut_bytes())? {
            0 => {
                return Err(corrupt(
                    "tar stream ends without an end-of-archive marker (truncated?)",
                ));
            }
            n if n < BLOCK as usize => {
                return Err(corrupt(format!(
                    "tar stream ends inside the header at byte {at}"
                )));
            }
            _ => {}
        }
        let bytes = header.as_bytes();
        if bytes.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        // The checksum field counts as spaces.
        let sum: u32 = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .map(|b| u32::from(*b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        if header.cksum().ok() != Some(sum) {
            return Err(corrupt(format!(
                "tar header checksum mismatch at byte {at}"
            )));
        }
        Ok(Some(header))
    }

    /// The whole data of an extension header, bounded in size.
    fn body(&mut self, size: u64, what: &str) -> Result<Vec<u8>, Failure> {
        if size > pax::MAX_HEADER {
            return Err(corrupt(format!(
                "{what} of {size} bytes at byte {} (at most {} allowed)",
                self.offset,
                pax::MAX_HEADER
            )));
        }
        let mut body = vec![0u8; size as usize];
        if self.fill(&mut body)? != body.len() {
            return Err(corrupt(format!("tar stream ends inside a {what}")));
        }
        self.left = padded(size)? - size;
        Ok(body)
    }

    /// Discards what is left of the current member.
    fn skip_rest(&mut self) -> Result<(), Failure> {
        let mut buf = [0u8; 8192];
        while self.left > 0 {
            let want = usize::try_from(self.left).map_or(buf.len(), |l| l.min(buf.len()));
            let n = self.fill(&mut buf[..want])?;
            if n == 0 {
                return Err(corrupt("tar stream ends inside entry data"));
            }
            self.left -= n as u64;
        }
        Ok(())
    }

    /// Reads until `buf` is full or the stream ends; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Read(e)),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }
}

/// Content reader of the current member: stored chunks from the stream, holes as zeros.
pub(crate) struct Data<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.reader;
        if r.pos >= r.size || buf.is_empty() {
            return Ok(0);
        }
        while let Some(&(off, len)) = r.chunks.get(r.chunk)
            && r.pos >= off + len
        {
            r.chunk += 1;
        }
        let (start, end) = r
            .chunks
            .get(r.chunk)
            .map_or((r.size, r.size), |&(off, len)| (off, off + len));
        let in_hole = r.pos < start;
        let limit = if in_hole { start } else { end };
        let n = usize::try_from(limit - r.pos).map_or(buf.len(), |l| l.min(buf.len()));
        let n = if in_hole {
            buf[..n].fill(0);
            n
        } else {
            let n = r.inner.read(&mut buf[..n])?;
            r.offset += n as u64;
            r.left -= n as u64;
            n
        };
        r.pos += n as u64;
        Ok(n)
    }
}

/// A uid or gid, from PAX or else the header. SquashFS ids are 32 bits, so a larger one (PAX
/// values are unbounded decimals, GNU base-256 fields 64 bits) cannot be kept.
fn id(
    path: &[u8],
    what: &str,
    pax: Option<u64>,
    header: impl FnOnce() -> Result<u64, ConvertError>,
) -> Result<u64, ConvertError> {
    let id = match pax {
        Some(id) => id,
        None => header()?,
    };
    if id > u64::from(u32::MAX) {
        return Err(ConvertError::unsupported(
            path,
            format!("{what} {id} does not fit SquashFS's 32-bit ids"),
        ));
    }
    Ok(id)
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), Failure> {
    if slot.is_some() {
        return Err(corrupt(format!("two {what} for one entry")));
    }
    *slot = Some(value);
    Ok(())
}

fn padded(size: u64) -> Result<u64, Failure> {
    size.checked_next_multiple_of(BLOCK)
        .ok_or_else(|| corrupt("entry size out of range"))
}

fn corrupt(msg: impl Into<String>) -> Failure {
    Failure::Convert(ConvertError::Corrupt(msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header for `path`, mode 0644, owned by root, mtime 0; the checksum is left to set.
    fn header(mut h: tar::Header, ty: tar::EntryType, path: &str, size: u64) -> tar::Header {
        h.set_path(path).unwrap();
        h.set_entry_type(ty);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    /// A GNU sparse member with the given chunks and sizes, its data, and the end block.
    fn sparse(chunks: &[(u64, u64)], real: u64, stored: u64) -> Vec<u8> {
        let gnu_header = tar::Header::new_gnu();
        let mut h = header(gnu_header, tar::EntryType::GNUSparse, "s", stored);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(real);
        for (slot, &(off, len)) in gnu.sparse.iter_mut().zip(chunks) {
            slot.set_offset(off);
            slot.set_length(len);
        }
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend(vec![b'd'; stored.next_multiple_of(BLOCK) as usize]);
        tar.extend([0u8; 1024]);
        tar
    }

    fn read_all(tar: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut r = TarReader::new(tar);
        let e = r.next()?.unwrap();
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).map_err(Failure::Read)?;
        assert_eq!(data.len() as u64, e.size);
        assert!(r.next()?.is_none());
        Ok(data)
    }

    #[test]
    fn sparse_map_is_expanded_and_checked() {
        let data = read_all(&sparse(&[(2, 3), (10, 2)], 14, 5)).unwrap();
        assert_eq!(data, b"\0\0ddd\0\0\0\0\0dd\0\0");
        for (chunks, real, stored) in [
            (&[(5, 3), (4, 2)][..], 14, 5), // out of order
            (&[(0, 3), (2, 2)], 14, 5),     // overlapping
            (&[(0, 3), (10, 2)], 11, 5),    // past the real size
            (&[(0, 3)], 14, 5),             // stored bytes unaccounted for
        ] {
            let err = read_all(&sparse(chunks, real, stored)).unwrap_err();
            assert!(
                matches!(err, Failure::Convert(ConvertError::Corrupt(_))),
                "{chunks:?}: {err:?}"
            );
        }
    }

    /// A regular file "f" of `data`, after a PAX header of `records`, and the end block.
    fn with_pax(records: &[(&str, &[u8])], data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in records {
            pax::record(&mut body, k.as_bytes(), v);
        }
        let ustar = tar::Header::new_ustar;
        let mut x = header(
            ustar(),
            tar::EntryType::XHeader,
            "PaxHeader",
            body.len() as u64,
        );
        x.set_cksum();
        let mut h = header(ustar(), tar::EntryType::Regular, "f", data.len() as u64);
        h.set_cksum();
        let mut tar = x.as_bytes().to_vec();
        tar.extend(&body);
        tar.resize(tar.len().next_multiple_of(BLOCK as usize), 0);
        tar.extend(h.as_bytes());
        tar.extend(data);
        tar.resize(tar.len().next_multiple_of(BLOCK as usize), 0);
        tar.extend([0u8; 1024]);
        tar
    }

    #[test]
    fn chunk_list_is_reused_not_carried_over() {
        // sparse, plain, sparse: each entry reads with its own map.
        let s1 = sparse(&[(2, 3), (10, 2)], 14, 5);
        let plain = with_pax(&[("path", b"p")], b"plain data");
        let s2 = sparse(&[(1, 1)], 3, 1);
        let member = |t: &[u8]| t[..t.len() - 1024].to_vec();
        let tar = [member(&s1), member(&plain), s2].concat();
        let mut r = TarReader::new(&tar[..]);
        let mut got = Vec::new();
        while let Some(e) = r.next().unwrap() {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data).unwrap();
            assert_eq!(data.len() as u64, e.size);
            got.push(data);
        }
        let want: [&[u8]; 3] = [b"\0\0ddd\0\0\0\0\0dd\0\0", b"plain data", b"\0d\0"];
        assert_eq!(got, want);
    }

    #[test]
    fn ids_above_32_bits_are_unsupported() {
        let max = u32::MAX.to_string();
        let over = (u64::from(u32::MAX) + 1).to_string();
        let tar = with_pax(&[("uid", max.as_bytes()), ("gid", b"7")], b"x");
        let mut r = TarReader::new(&tar[..]);
        let e = r.next().unwrap().unwrap();
        assert_eq!((e.meta.uid, e.meta.gid), (u64::from(u32::MAX), 7));
        for key in ["uid", "gid"] {
            let tar = with_pax(&[(key, over.as_bytes())], b"x");
            let err = TarReader::new(&tar[..]).next().err().unwrap();
            assert!(
                matches!(&err, Failure::Convert(e @ ConvertError::Unsupported { reason, .. })
                    if reason.starts_with(key) && e.is_invalid_input()),
                "{key}: {err:?}"
            );
        }
    }

    #[test]
    fn sparse_holes_are_bounded() {
        let most = 5 + MAX_SPARSE_HOLES;
        let e = TarReader::new(&sparse(&[(0, 5)], most, 5)[..])
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(e.size, most);
        for real in [most + 1, 1 << 62] {
            let tar = sparse(&[(0, 5)], real, 5);
            let err = TarReader::new(&tar[..]).next().err().unwrap();
            assert!(
                matches!(&err, Failure::Convert(e @ ConvertError::Unsupported { reason, .. })
                    if reason.contains("holes over") && e.is_invalid_input()),
                "{real}: {err:?}"
            );
        }
    }

    #[test]
    fn framing_errors_are_corrupt() {
        let good = sparse(&[(0, 5)], 5, 5);
        let mut bad_sum = good.clone();
        bad_sum[0] ^= 1;
        for (tar, want) in [
            (&good[..512 + 512], "without an end-of-archive marker"),
            (&good[..700], "ends inside entry data"),
            (&good[..100], "inside the header"),
            (&bad_sum[..], "checksum mismatch"),
        ] {
            let err = read_all(tar).unwrap_err();
            assert!(
                matches!(&err, Failure::Convert(ConvertError::Corrupt(m)) if m.contains(want)),
                "{want}: {err:?}"
            );
        }
    }
}
