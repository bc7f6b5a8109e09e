//! A reader and replayer of the log that the kernel's `dm-log-writes` target records
//! (Documentation/admin-guide/device-mapper/log-writes.rst), written for the power-cut test.
//!
//! Layout of the log device: block 0 is the super block (`magic`, `version`, `nr_entries`
//! as little-endian u64, `sectorsize` as u32), in blocks of `sectorsize` bytes. Entries
//! follow from block 1 on. Each entry is one block: `sector`, `nr_sectors`, `flags` and
//! `data_len` (u64 each), then, for a mark, its name. A write's data follows in
//! `nr_sectors` blocks; a discard and a flush without data have none. `sector` and
//! `nr_sectors` count in `sectorsize` units.
//!
//! The kernel logs a write when it has *completed*, and a flush after the writes it waited
//! for, so the entries up to a flush are what the disk holds once that flush returns. Writes
//! logged after the last flush may or may not have reached the disk, in any order; a FUA
//! write is on the disk once it completes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const FLUSH: u64 = 1 << 0;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First sector written (in the log's `sectorsize`).
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// Byte offset of the data on the log device.
    pub data_offset: u64,
    /// The name of a mark (`dmsetup message DEV 0 mark NAME`).
    pub mark: Option<String>,
}

impl Entry {
    /// A write that carries data (with or without FLUSH/FUA).
    pub fn writes(&self) -> bool {
        self.nr_sectors > 0 && self.flags & (DISCARD | MARK) == 0
    }

    /// A point where what was logged so far is on stable storage.
    pub fn is_durability_point(&self) -> bool {
        self.flags & (FLUSH | FUA) != 0
    }
}

/// A parsed log; the data stays on the log device and is read when replayed.
pub struct Log {
    device: File,
    pub sectorsize: u64,
    pub entries: Vec<Entry>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Log {
    /// Parse the log on `device` (the log device itself or a copy of it).
    pub fn read(device: File) -> io::Result<Log> {
        let mut sb = [0u8; 32];
        device.read_exact_at(&mut sb, 0)?;
        if le64(&sb, 0) != MAGIC {
            return Err(invalid(format!("bad magic {:#x}", le64(&sb, 0))));
        }
        if le64(&sb, 8) != 1 {
            return Err(invalid(format!("log version {}", le64(&sb, 8))));
        }
        let count = le64(&sb, 16);
        let sectorsize = u64::from(u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]));
        if !(512..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(invalid(format!("sector size {sectorsize}")));
        }
        let device_len = device.metadata()?.len();
        let device_len = if device_len == 0 {
            // A block device reports its size by seeking, not in its metadata.
            use std::io::Seek;
            (&device).seek(io::SeekFrom::End(0))?
        } else {
            device_len
        };
        let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
        let mut at = sectorsize;
        let mut block = vec![0u8; sectorsize as usize];
        for i in 0..count {
            if at + sectorsize > device_len {
                return Err(invalid(format!("entry {i} past the end of the log")));
            }
            device.read_exact_at(&mut block, at)?;
            let (sector, nr_sectors, flags, data_len) = (
                le64(&block, 0),
                le64(&block, 8),
                le64(&block, 16),
                le64(&block, 24),
            );
            let mark = if flags & MARK != 0 {
                let len = (data_len as usize).min(block.len() - 32);
                Some(String::from_utf8_lossy(&block[32..32 + len]).into_owned())
            } else {
                None
            };
            let entry = Entry {
                sector,
                nr_sectors,
                flags,
                data_offset: at + sectorsize,
                mark,
            };
            at += sectorsize;
            if entry.flags & DISCARD == 0 && entry.flags & MARK == 0 {
                at += nr_sectors * sectorsize;
            }
            entries.push(entry);
        }
        Ok(Log {
            device,
            sectorsize,
            entries,
        })
    }

    /// Make `target` hold what entry `i` put on the disk: its data for a write, zeros for a
    /// discard (the device may return either after a discard; zeros are the harsher case),
    /// nothing for a flush or mark.
    pub fn apply(&self, i: usize, target: &File) -> io::Result<()> {
        let e = &self.entries[i];
        if e.flags & MARK != 0 || e.nr_sectors == 0 {
            return Ok(());
        }
        let len = e.nr_sectors * self.sectorsize;
        let offset = e.sector * self.sectorsize;
        if e.flags & DISCARD != 0 {
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                target.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            return Ok(());
        }
        let mut buf = vec![0u8; len as usize];
        self.device.read_exact_at(&mut buf, e.data_offset)?;
        target.write_all_at(&buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log written the way the kernel lays it out: super, a write of two blocks, a flush,
    /// a mark.
    fn sample() -> Vec<u8> {
        let ss = 512usize;
        let mut log = vec![0u8; ss * 6];
        let put = |log: &mut Vec<u8>, at: usize, v: u64| {
            log[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut log, 0, MAGIC);
        put(&mut log, 8, 1);
        put(&mut log, 16, 3);
        log[24..28].copy_from_slice(&512u32.to_le_bytes());
        put(&mut log, ss, 4);
        put(&mut log, ss + 8, 2);
        log[ss * 2..ss * 4].fill(0xAB);
        put(&mut log, ss * 4 + 16, FLUSH);
        put(&mut log, ss * 5 + 16, MARK);
        put(&mut log, ss * 5 + 24, 4);
        log[ss * 5 + 32..ss * 5 + 36].copy_from_slice(b"done");
        log
    }

    #[test]
    fn parses_and_replays_a_kernel_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, sample()).unwrap();
        let log = Log::read(File::open(&path).unwrap()).unwrap();
        assert_eq!(log.entries.len(), 3);
        assert!(log.entries[0].writes());
        assert!(log.entries[1].is_durability_point());
        assert_eq!(log.entries[2].mark.as_deref(), Some("done"));
        let target_path = dir.path().join("disk");
        std::fs::write(&target_path, vec![0u8; 8 * 512]).unwrap();
        let target = File::options().write(true).open(&target_path).unwrap();
        for i in 0..3 {
            log.apply(i, &target).unwrap();
        }
        let disk = std::fs::read(&target_path).unwrap();
        assert!(disk[..4 * 512].iter().all(|&b| b == 0));
        assert!(disk[4 * 512..6 * 512].iter().all(|&b| b == 0xAB));
        assert!(disk[6 * 512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_what_is_not_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bad = sample();
        bad[0] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(Log::read(File::open(&path).unwrap()).is_err());
        let mut short = sample();
        short.truncate(512 * 3);
        std::fs::write(&path, &short).unwrap();
        assert!(Log::read(File::open(&path).unwrap()).is_err());
    }
}
