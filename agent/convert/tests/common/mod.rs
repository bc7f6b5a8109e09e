//! Helpers shared by the integration tests: building tars byte by byte (the tar crate's
//! Builder refuses the hostile names we need), running tools, and mount guards.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use clb_convert::{ConvertError, ConvertOptions, ConvertStats};

/// Fails (never skips) when a tool the test depends on is missing.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "required tool `{tool}` is not installed (in PATH)");
}

pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_bytes(cmd)).into_owned()
}

pub fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A tar written by hand, entry by entry.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

pub struct E<'a> {
    pub name: &'a [u8],
    pub ty: u8,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
    pub pax: Vec<(&'a str, Vec<u8>)>,
    /// Size field of the header when it should not be the data's length (PAX `size` tests).
    pub header_size: Option<u64>,
}

impl<'a> E<'a> {
    pub fn new(name: &'a str, ty: u8) -> Self {
        Self {
            name: name.as_bytes(),
            ty,
            link: b"",
            data: b"",
            mode: if ty == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            pax: Vec::new(),
            header_size: None,
        }
    }
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Self {
            data,
            ..Self::new(name, b'0')
        }
    }
    pub fn dir(name: &'a str) -> Self {
        Self::new(name, b'5')
    }
    pub fn link(name: &'a str, ty: u8, target: &'a str) -> Self {
        Self {
            link: target.as_bytes(),
            ..Self::new(name, ty)
        }
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.pax.push((
            Box::leak(format!("SCHILY.xattr.{name}").into_boxed_str()),
            value.to_vec(),
        ));
        self
    }
}

fn pad(v: &mut Vec<u8>) {
    v.resize(v.len().div_ceil(512) * 512, 0);
}

fn header(name: &[u8], ty: u8, link: &[u8], size: u64, e: Option<&E>) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_entry_type(tar::EntryType::new(ty));
    h.set_size(size);
    match e {
        Some(e) => {
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mtime(e.mtime);
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        None => h.set_mode(0o644),
    }
    h.set_cksum();
    *h.as_bytes()
}

impl RawTar {
    pub fn add(&mut self, e: E<'_>) -> &mut Self {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path", e.name.to_vec()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath", e.link.to_vec()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                let base = k.len() + v.len() + 3;
                let mut len = base + 1;
                while base + len.to_string().len() != len {
                    len = base + len.to_string().len();
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            self.raw(b'x', &body);
        }
        let size = e.header_size.unwrap_or(e.data.len() as u64);
        self.bytes
            .extend_from_slice(&header(e.name, e.ty, e.link, size, Some(&e)));
        self.bytes.extend_from_slice(e.data);
        pad(&mut self.bytes);
        self
    }

    /// An extension member (`x`, `g`, `L`, `K`) with a body given verbatim.
    pub fn raw(&mut self, ty: u8, body: &[u8]) -> &mut Self {
        let name: &[u8] = if ty == b'L' || ty == b'K' {
            b"././@LongLink"
        } else {
            b"PaxHeader"
        };
        self.bytes
            .extend_from_slice(&header(name, ty, b"", body.len() as u64, None));
        self.bytes.extend_from_slice(body);
        pad(&mut self.bytes);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

pub fn opts() -> ConvertOptions {
    ConvertOptions {
        level: Some(3),
        ..ConvertOptions::host()
    }
}

pub fn convert(input: &[u8], out: &Path) -> Result<ConvertStats, ConvertError> {
    require("tar2sqfs");
    clb_convert::tar_layer_to_squashfs(input, out, &opts())
}

/// `unsquashfs -l` paths, relative to the image root.
pub fn list(img: &Path) -> Vec<String> {
    require("unsquashfs");
    let out = run(Command::new("unsquashfs")
        .arg("-l")
        .arg("-d")
        .arg("R")
        .arg(img));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("R/").map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

pub fn mount_squashfs(img: &Path, dir: &Path) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(img)
        .arg(dir));
    Mounted {
        dir: dir.to_path_buf(),
    }
}

/// `lowers` top first, as overlayfs wants them.
pub fn mount_overlay(lowers: &[&Path], dir: &Path) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", lowerdir.join(":")))
        .arg(dir));
    Mounted {
        dir: dir.to_path_buf(),
    }
}
