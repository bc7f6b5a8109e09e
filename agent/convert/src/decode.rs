//! Input side: sniff the compression from magic bytes, count bytes at both ends of the
//! decoder, and remember failures of the underlying reader so that a read error of the
//! source (an I/O problem) is not reported as a corrupt layer.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Read};
use std::rc::Rc;

use crate::ConvertError;
use crate::gunzip::GzipDecoder;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
/// How much of the layer is read at a time: large reads, since a layer is hundreds of MiB; the
/// gzip decoder works straight from this buffer.
const INPUT_BUFFER: usize = 1 << 20;

/// Remembers the first error a wrapped reader or writer returned.
#[derive(Clone, Default)]
pub(crate) struct ErrSlot(Rc<RefCell<Option<io::Error>>>);

impl ErrSlot {
    fn record(&self, e: &io::Error) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            // io::Error is not Clone; an OS error code round-trips exactly, others keep kind
            // and text, which is all the classification needs.
            *slot = Some(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            });
        }
    }

    /// Passes `result` on, recording its error (an interruption is not one).
    pub fn note<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && e.kind() != io::ErrorKind::Interrupted
        {
            self.record(e);
        }
        result
    }

    pub fn take(&self) -> Option<io::Error> {
        self.0.borrow_mut().take()
    }
}

/// The raw (possibly compressed) source, buffered once: counts bytes and records read errors.
pub(crate) struct Source<R> {
    inner: io::BufReader<R>,
    pub count: Rc<Cell<u64>>,
    pub err: ErrSlot,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.err.note(self.inner.read(buf))?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R: Read> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.err.note(self.inner.fill_buf())
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.count.set(self.count.get() + amount as u64);
    }
}

/// The decoded tar stream, counting bytes, failing past its limit.
pub(crate) struct Decoded<'a> {
    inner: Box<dyn Read + 'a>,
    pub count: Rc<Cell<u64>>,
    limit: Option<u64>,
    expanded: Rc<Cell<Option<u64>>>,
}

impl Read for Decoded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let count = self.count.get() + n as u64;
        self.count.set(count);
        if let Some(limit) = self.limit.filter(|&limit| count > limit) {
            self.expanded.set(Some(limit));
            return Err(io::Error::other(format!("decompressed past {limit} bytes")));
        }
        Ok(n)
    }
}

/// What explains a failed read of the decoded stream.
#[derive(Default)]
pub(crate) struct ReadSide {
    /// The input's own error.
    pub input_err: ErrSlot,
    /// The limit, once the decoded stream went past it.
    pub expanded: Rc<Cell<Option<u64>>>,
}

pub(crate) struct Opened<'a> {
    pub decoded: Decoded<'a>,
    pub input_bytes: Rc<Cell<u64>>,
    pub read_side: ReadSide,
}

/// Wraps `input` in the decoder its first bytes call for (gzip, zstd, or none); the decoded
/// stream fails once it passes `limit` bytes.
pub(crate) fn open<'a>(
    input: impl Read + 'a,
    limit: Option<u64>,
) -> Result<Opened<'a>, ConvertError> {
    let input_bytes = Rc::new(Cell::new(0));
    let read_side = ReadSide::default();
    let mut source = Source {
        inner: io::BufReader::with_capacity(INPUT_BUFFER, input),
        count: input_bytes.clone(),
        err: read_side.input_err.clone(),
    };
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match source.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ConvertError::io("reading layer", e)),
        }
    }
    let head = &magic[..got];
    let stream = io::Cursor::new(head.to_vec()).chain(source);
    let inner: Box<dyn Read + 'a> = if head.starts_with(GZIP_MAGIC) {
        // Multi-member: pigz and friends may concatenate gzip members.
        Box::new(
            GzipDecoder::new(stream).map_err(|e| ConvertError::io("starting gzip decoder", e))?,
        )
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(
            zstd::stream::read::Decoder::new(stream)
                .map_err(|e| ConvertError::io("starting zstd decoder", e))?,
        )
    } else if head.starts_with(XZ_MAGIC) {
        return Err(ConvertError::Corrupt(
            "xz-compressed layers are not supported (gzip, zstd or plain tar)".into(),
        ));
    } else {
        Box::new(stream)
    };
    Ok(Opened {
        decoded: Decoded {
            inner,
            count: Rc::new(Cell::new(0)),
            limit,
            expanded: read_side.expanded.clone(),
        },
        input_bytes,
        read_side,
    })
}
