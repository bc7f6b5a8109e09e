//! Mount guards (unmount on drop) and lookups in /proc/self/mountinfo.
//!
//! Mounting uses rustix directly (plain mount(2)/umount2(2) calls, no `unsafe`, no libmount
//! quirks). Loop setup is done separately (see `loopdev`), so no `-o loop` magic is needed.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{DiskError, Result, errno_io};

pub use rustix::mount::MountFlags as Flags;

/// A mounted filesystem, unmounted when dropped (lazily, with a warning, if busy).
#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
    mounted: bool,
}

impl Mount {
    /// mount(2) `source` on `target`. `data` is the comma-separated option string.
    pub fn new(
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<Self> {
        let ctx = || {
            format!(
                "mount {} ({fstype}) on {}",
                source.display(),
                target.display()
            )
        };
        let data = data
            .map(CString::new)
            .transpose()
            .map_err(|_| DiskError::Invalid(format!("{}: NUL in mount options", ctx())))?;
        rustix::mount::mount(source, target, fstype, flags, data.as_deref())
            .map_err(|e| errno_io(ctx(), e))?;
        tracing::debug!(source = %source.display(), target = %target.display(), fstype, "mounted");
        Ok(Mount {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// Bind-mount `source` on `target`, read-only if asked. A bind mount ignores MS_RDONLY on
    /// the first call, hence the remount.
    pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<Self> {
        rustix::mount::mount_bind(source, target).map_err(|e| {
            errno_io(
                format!("bind {} on {}", source.display(), target.display()),
                e,
            )
        })?;
        let m = Mount {
            target: target.to_path_buf(),
            mounted: true,
        };
        if read_only {
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(|e| errno_io(format!("remount {} read-only", target.display()), e))?;
        }
        Ok(m)
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmount now, returning `Busy` instead of falling back to a lazy unmount.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.target)
    }

    /// Leave it mounted (for mounts that must outlive the process) and return the target.
    pub fn leave_mounted(mut self) -> PathBuf {
        self.mounted = false;
        std::mem::take(&mut self.target)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            unmount_or_detach(&self.target);
        }
    }
}

/// umount(2) `target`. Busy → `DiskError::Busy`; not a mount point → `DiskError::NotMounted`.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::BUSY) => Err(DiskError::Busy {
            target: target.to_path_buf(),
        }),
        Err(Errno::INVAL) => Err(DiskError::NotMounted {
            target: target.to_path_buf(),
        }),
        Err(e) => Err(errno_io(format!("unmount {}", target.display()), e)),
    }
}

/// Unmount for cleanup paths: if busy, detach lazily (the kernel finishes the unmount once the
/// last user is gone) and warn, because the caller cannot do anything better at that point.
pub(crate) fn unmount_or_detach(target: &Path) {
    match unmount(target) {
        Ok(()) => {}
        Err(DiskError::Busy { .. }) => {
            tracing::warn!(target = %target.display(), "busy, unmounting lazily");
            if let Err(e) = rustix::mount::unmount(target, UnmountFlags::DETACH) {
                tracing::warn!(target = %target.display(), "lazy unmount failed: {e}");
            }
        }
        Err(e) => tracing::warn!(target = %target.display(), "unmount failed: {e}"),
    }
}

/// One line of /proc/self/mountinfo (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    /// Path inside the filesystem that is mounted (`/` unless it is a bind of a subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Parse /proc/self/mountinfo.
pub fn mountinfo() -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| DiskError::io("read /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    // id parent major:minor root mount_point options [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let (major, minor) = f.get(2)?.split_once(':')?;
    let mut r = right.split(' ');
    Some(MountInfo {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: PathBuf::from(unescape(f.get(3)?)),
        mount_point: PathBuf::from(unescape(f.get(4)?)),
        fs_type: r.next()?.to_string(),
        source: unescape(r.next().unwrap_or("")),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the block device `dev` is already mounted (its filesystem root, not a bind of a
/// subdirectory), so the agent can reuse e.g. the initrd's mount of COS_STATE instead of
/// mounting the same ext4 twice.
pub fn find_mounted(dev: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(dev).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    mountinfo()
        .ok()?
        .into_iter()
        .find(|m| m.major == major && m.minor == minor && m.root == Path::new("/"))
        .map(|m| m.mount_point)
}

/// Whether `path` is a mount point right now.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    mountinfo()
        .map(|all| all.iter().any(|m| m.mount_point == canon))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 1 7:3 / /run/initramfs/cos-state rw - ext4 /dev/loop3 rw\n";
        let all = parse_mountinfo(text);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(all[0].root, PathBuf::from("/mnt1"));
        assert_eq!((all[0].major, all[0].minor), (98, 0));
        assert_eq!(all[0].fs_type, "ext3");
        assert_eq!(
            all[1].mount_point,
            PathBuf::from("/run/initramfs/cos-state")
        );
        assert_eq!(all[1].source, "/dev/loop3");
    }

    #[test]
    fn unescape_keeps_plain_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("x\\"), "x\\");
        assert_eq!(unescape("x\\09"), "x\\09");
    }
}
