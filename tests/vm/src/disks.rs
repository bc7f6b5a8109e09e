//! Disk images read independently of clb (sgdisk, blkid, losetup, mount, e2fsck), with guards
//! that always detach what they attached, and what the host has mounted and attached.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{kit_dir, run};

/// A raw image with a GPT, COS_STATE (`state_mib`) and COS_PERSISTENT (`persistent_mib`),
/// both ext4 and empty: what `clb --disk DISK upgrade` installs onto (`scripts/make-disk.sh`).
pub fn make_disk(disk: &Path, state_mib: u32, persistent_mib: u32) {
    run(Command::new(kit_dir().join("scripts/make-disk.sh"))
        .arg(disk)
        .arg(state_mib.to_string())
        .arg(persistent_mib.to_string()));
}

/// Byte offset and size of the partition whose filesystem label is `label`.
pub fn partition_range(disk: &Path, label: &str) -> (u64, u64) {
    let table = run(Command::new("sgdisk").arg("-p").arg(disk));
    let mut found = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(first), Some(last)) = (
            f.get(1).and_then(|s| s.parse::<u64>().ok()),
            f.get(2).and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if f.first().and_then(|s| s.parse::<u32>().ok()).is_none() {
            continue;
        }
        let offset = first * 512;
        let out = Command::new("blkid")
            .args(["-p", "-s", "LABEL", "-o", "value", "-O"])
            .arg(offset.to_string())
            .arg(disk)
            .output()
            .expect("blkid");
        if String::from_utf8_lossy(&out.stdout).trim() == label {
            found.push((offset, (last - first + 1) * 512));
        }
    }
    assert_eq!(found.len(), 1, "partitions labelled {label} in {table}");
    found[0]
}

/// A loop device over a byte range of a file; detached on drop.
pub struct LoopGuard {
    pub dev: String,
}

impl LoopGuard {
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> LoopGuard {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(size.to_string());
        if read_only {
            cmd.arg("--read-only");
        }
        let dev = run(cmd.arg(file)).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
        LoopGuard { dev }
    }

    /// The partition labelled `label` of `disk`.
    pub fn partition(disk: &Path, label: &str, read_only: bool) -> LoopGuard {
        let (offset, size) = partition_range(disk, label);
        LoopGuard::attach(disk, offset, size, read_only)
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mount; unmounted (and its directory removed) on drop, before the loop guard it sits on
/// when declared after it.
pub struct MountGuard {
    pub dir: PathBuf,
}

impl MountGuard {
    pub fn mount(dev: &str, dir: &Path, opts: &str) -> MountGuard {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount").args(["-o", opts, dev]).arg(dir));
        MountGuard {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The partition labelled `label` of a disk image, mounted (read-only unless `rw`) at `dir`
/// until dropped.
pub struct PartitionMount {
    // Field order = drop order: unmount first, then detach.
    pub mount: MountGuard,
    pub dev: LoopGuard,
}

impl PartitionMount {
    pub fn open(disk: &Path, label: &str, dir: &Path, rw: bool) -> PartitionMount {
        let dev = LoopGuard::partition(disk, label, !rw);
        let mount = MountGuard::mount(&dev.dev, dir, if rw { "rw" } else { "ro" });
        PartitionMount { mount, dev }
    }

    /// COS_STATE.
    pub fn state(disk: &Path, dir: &Path, rw: bool) -> PartitionMount {
        PartitionMount::open(disk, "COS_STATE", dir, rw)
    }

    pub fn path(&self) -> &Path {
        &self.mount.dir
    }
}

/// `e2fsck -f -n` on COS_STATE: the filesystem must be consistent (exit 0) as it is.
pub fn fsck_state_clean(disk: &Path) -> Result<(), String> {
    let dev = LoopGuard::partition(disk, "COS_STATE", true);
    let out = Command::new("e2fsck")
        .args(["-f", "-n", &dev.dev])
        .stdin(Stdio::null())
        .output()
        .expect("e2fsck");
    drop(dev);
    if out.status.code() == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "e2fsck -fn: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// After a kernel panic COS_STATE's ext4 journal needs replaying (`clb --disk … status`
/// mounts read-only and cannot): do what a host's boot-time fsck does.
pub fn fsck_state_repair(disk: &Path) {
    let dev = LoopGuard::partition(disk, "COS_STATE", false);
    let st = Command::new("e2fsck")
        .args(["-p", &dev.dev])
        .status()
        .expect("e2fsck");
    drop(dev);
    // 0: clean, 1: errors corrected (the journal replayed).
    assert!(matches!(st.code(), Some(0) | Some(1)), "e2fsck -p: {st}");
}

/// Loop devices (`/dev/loopN`) whose backing file is `file` or starts with one of `prefixes`.
pub fn loops_backed_by(file: Option<&Path>, prefixes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    let canon = file.map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let b = b.trim_end_matches('\n');
        let b = b.strip_suffix(" (deleted)").unwrap_or(b);
        let hit = canon.as_deref().is_some_and(|c| Path::new(b) == c)
            || prefixes.iter().any(|p| b.starts_with(p.as_str()));
        if hit {
            out.push(format!("/dev/{name}"));
        }
    }
    out.sort();
    out
}

/// One line of /proc/self/mountinfo: mount point, filesystem type, source, super options.
pub struct MountInfo {
    pub point: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

pub fn mounts() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next()?);
            let options = r.next().unwrap_or("").to_string();
            Some(MountInfo {
                point,
                fstype,
                source,
                options,
            })
        })
        .collect()
}

/// Wait (up to 5 s) until loop device `dev` has no backing file any more.
pub fn wait_loop_released(dev: &str) {
    let name = dev.trim_start_matches("/dev/");
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let start = Instant::now();
    while sys.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes `slot` of `disk` unbootable the way a failing disk would: its top layer file on
/// COS_STATE grows by one byte, so the hook's size check refuses it at every boot (and the
/// kernel panics). Returns the layer file changed.
pub fn break_slot(disk: &Path, work: &Path, slot: &str) -> PathBuf {
    let dir = work.join(format!("break-{slot}"));
    let state = PartitionMount::state(disk, &dir, true);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join(format!("slots/{slot}.json"))).unwrap(),
    )
    .unwrap();
    let top = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .unwrap()
        .to_string();
    let hex = top.trim_start_matches("sha256:");
    let layer = std::fs::read_dir(state.path().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(hex))
        .unwrap_or_else(|| panic!("no layer file for {top}"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&layer)
        .unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    f.sync_all().unwrap();
    layer
}
