//! A file read while a download is still writing it, so that a layer is converted as it
//! arrives instead of after the last byte. The writer announces how far the file is written
//! (only bytes already handed to the kernel, so a reader through another descriptor sees
//! them); the reader blocks until there is more, and sees the end of the file only once the
//! writer says the download is complete and its digest checked. A failed download, or one
//! that had to start over from byte 0, makes the reader fail, which stops the conversion.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still downloading.
    Open,
    /// Every byte written and the digest checked.
    Complete,
    /// The download failed or was abandoned.
    Failed,
    /// The writer truncated the file to start over: what was read is stale.
    Restarted,
}

#[derive(Debug)]
struct Mark {
    written: u64,
    end: End,
}

/// How far the file is written, shared by the downloader and the reader.
#[derive(Debug)]
pub struct Watermark {
    mark: Mutex<Mark>,
    changed: Condvar,
}

impl Watermark {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            mark: Mutex::new(Mark {
                written: 0,
                end: End::Open,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Mark> {
        // A panic while holding this lock leaves two plain integers behind: still valid.
        self.mark
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first `written` bytes are in the file. A value below the last one means the
    /// writer started the file over.
    pub fn advance(&self, written: u64) {
        let mut mark = self.lock();
        if mark.end != End::Open {
            return;
        }
        if written < mark.written {
            mark.end = End::Restarted;
        } else {
            mark.written = written;
        }
        self.changed.notify_all();
    }

    /// The download ended: `complete` when every byte is in and the digest matched.
    pub fn finish(&self, complete: bool) {
        let mut mark = self.lock();
        if mark.end == End::Open {
            mark.end = if complete { End::Complete } else { End::Failed };
        }
        self.changed.notify_all();
    }

    /// Whether the writer had to start the file over (the registry ignored a Range request).
    pub fn restarted(&self) -> bool {
        self.lock().end == End::Restarted
    }
}

/// Marks the download failed when dropped before [`Watermark::finish`], so that a reader
/// never waits for a download whose future was dropped (a cancelled upgrade).
pub struct FinishOnDrop(pub Arc<Watermark>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish(false);
    }
}

/// Reads a file up to the watermark, waiting for the writer.
pub struct GrowingFile {
    file: File,
    pos: u64,
    mark: Arc<Watermark>,
}

impl GrowingFile {
    pub fn open(path: &Path, mark: Arc<Watermark>) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            pos: 0,
            mark,
        })
    }
}

impl Read for GrowingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut mark = self.mark.lock();
            loop {
                match mark.end {
                    End::Failed => {
                        return Err(io::Error::other("the download of this layer failed"));
                    }
                    End::Restarted => {
                        return Err(io::Error::other("the download of this layer started over"));
                    }
                    End::Open | End::Complete if mark.written > self.pos => {
                        break mark.written - self.pos;
                    }
                    End::Complete => return Ok(0),
                    End::Open => {
                        mark = self
                            .mark
                            .changed
                            .wait(mark)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                }
            }
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the partial download is shorter than what was written to it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn reader_follows_the_writer_and_ends_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let mut out = File::create(&path).unwrap();
        let mark = Watermark::new();
        let mut reader = GrowingFile::open(&path, mark.clone()).unwrap();
        let consumer = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all)
        });
        let mut written = 0;
        for chunk in [b"abc".as_slice(), b"defgh", b"", b"ij"] {
            out.write_all(chunk).unwrap();
            written += chunk.len() as u64;
            mark.advance(written);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The reader has everything written but must still be waiting for the end.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!consumer.is_finished());
        mark.finish(true);
        assert_eq!(consumer.join().unwrap().unwrap(), b"abcdefghij");
    }

    #[test]
    fn a_failed_or_restarted_download_fails_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let mark = Watermark::new();
        mark.advance(10);
        let mut reader = GrowingFile::open(&path, mark.clone()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        drop(FinishOnDrop(mark.clone()));
        assert!(reader.read(&mut buf).is_err());
        assert!(!mark.restarted());

        let mark = Watermark::new();
        mark.advance(10);
        mark.advance(0);
        assert!(mark.restarted());
        let mut reader = GrowingFile::open(&path, mark.clone()).unwrap();
        assert!(reader.read(&mut buf).is_err());
        // A restart is final: finishing afterwards does not make the stale bytes readable.
        mark.finish(true);
        assert!(mark.restarted());
    }
}
