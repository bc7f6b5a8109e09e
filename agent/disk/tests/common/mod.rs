#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Helpers shared by the integration tests. They run as root and need losetup, sgdisk, blkid,
//! mkfs.ext4, mkfs.vfat and mksquashfs; a missing tool fails the test loudly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a tool, panic with its output if it is missing or fails; return stdout.
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required for this test and could not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Loop devices currently attached to `file` (`losetup -j`).
pub fn loops_of(file: &Path) -> Vec<String> {
    tool("losetup", &["-j", s(file)])
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

/// Whether anything is mounted at or below `dir`.
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    clb_disk::mountinfo()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// A temporary directory holding test images. On drop (also when a test panics) it unmounts
/// whatever is still mounted below it and detaches every loop device of the files it holds,
/// so a failing test does not leak loop devices into the next run.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            files: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Remember a file whose loop devices must be detached at the end.
    pub fn track(&mut self, file: &Path) {
        self.files.push(file.to_path_buf());
    }

    /// A sparse file of `mib` MiB.
    pub fn sparse(&mut self, name: &str, mib: u64) -> PathBuf {
        let p = self.path(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib * 1024 * 1024)
            .unwrap();
        self.track(&p);
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut mounts = mounted_under(self.dir.path());
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        for f in &self.files {
            for dev in loops_of_quiet(f) {
                let _ = Command::new("losetup").arg("-d").arg(&dev).status();
            }
        }
    }
}

fn loops_of_quiet(file: &Path) -> Vec<String> {
    Command::new("losetup")
        .arg("-j")
        .arg(file)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split(':').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A loop device attached with plain `losetup` (independent of the code under test),
/// detached on drop.
pub struct RawLoop(pub String);

impl RawLoop {
    pub fn attach(file: &Path, offset: u64, size: u64) -> Self {
        let dev = tool(
            "losetup",
            &[
                "--find",
                "--show",
                "-o",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
                s(file),
            ],
        );
        RawLoop(dev.trim().to_string())
    }
}

impl Drop for RawLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

pub const MIB: u64 = 1024 * 1024;

/// (number, name, start sector, size in sectors, mkfs) of the test disk.
pub const PARTS: [(u32, &str, u64, u64, &str); 4] = [
    (1, "COS_OEM", 2048, 8 * 2048, "vfat"),
    (2, "COS_RECOVERY", 2048 + 8 * 2048, 16 * 2048, "ext4"),
    (3, "COS_STATE", 2048 + 24 * 2048, 24 * 2048, "ext4"),
    (4, "COS_PERSISTENT", 2048 + 48 * 2048, 14 * 2048, "ext4"),
];

/// A 64 MiB GPT disk image with the four cOS partitions, each formatted through an offset
/// loop device with its name as filesystem label. `labels` overrides the labels.
pub fn make_disk(scratch: &mut Scratch, name: &str, labels: Option<[&str; 4]>) -> PathBuf {
    let img = scratch.sparse(name, 64);
    let mut args: Vec<String> = vec!["-o".into()];
    for (n, pname, start, size, _) in PARTS {
        args.push(format!("-n={n}:{start}:{}", start + size - 1));
        args.push(format!("-c={n}:{pname}"));
        args.push(format!("-t={n}:8300"));
    }
    args.push(s(&img).to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("sgdisk", &argv);
    for (i, (_, pname, start, size, fs)) in PARTS.into_iter().enumerate() {
        let label = labels.map(|l| l[i]).unwrap_or(pname);
        let lo = RawLoop::attach(&img, start * 512, size * 512);
        match fs {
            // -I: a reused loop device may still show partitions of its previous file.
            "vfat" => tool("mkfs.vfat", &["-I", "-n", label, &lo.0]),
            _ => tool("mkfs.ext4", &["-q", "-F", "-L", label, &lo.0]),
        };
    }
    img
}

/// `blkid -p -o value -s TAG dev` (low-level probe, no cache).
pub fn blkid(dev: &str, tag: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag, dev])
        .output()
        .expect("blkid is required for this test");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
