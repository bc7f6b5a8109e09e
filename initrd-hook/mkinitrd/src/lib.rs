//! clb-mkinitrd: a minimal initramfs for clb hosts and tests, no dracut needed.
//!
//! The archive (cpio newc, gzip or zstd) holds:
//!
//! - `/init`: the static `clb-initrd` binary;
//! - `/lib/modules/<ver>/...ko`: the requested kernel modules and their dependencies,
//!   decompressed (the hook loads them with `finit_module`, which on older kernels takes
//!   only plain ELF), listed in load order in `/etc/clb/modules`;
//! - `/bin/busybox` and its applet links when a static busybox is given (a rescue shell and
//!   tools for scripts; the hook itself does not need it);
//! - `/dev/console` (the kernel opens it for `/init` before anything is mounted) and the empty
//!   mount points `/proc /sys /dev /run /sysroot`.
//!
//! See docs/boot.md.

mod cpio;
pub mod modules;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use cpio::CpioWriter;
pub use modules::{ModuleFile, ModuleIndex, elf_is_static, modinfo};

/// What a VM (virtio disk) needs to reach a clb root; their dependencies are added.
pub const DEFAULT_MODULES: [&str; 6] = [
    "virtio_pci",
    "virtio_blk",
    "loop",
    "squashfs",
    "overlay",
    "ext4",
];

/// Where the hook reads its module list.
pub const MODULES_LIST_PATH: &str = "etc/clb/modules";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    /// Plain cpio (the kernel takes it as is).
    None,
}

#[derive(Debug, Clone)]
pub struct MkinitrdOptions {
    /// The archive to write (replaced atomically: written next to it, then renamed).
    pub output: PathBuf,
    /// The static `clb-initrd` binary, installed as `/init`.
    pub init: PathBuf,
    /// `/lib/modules/<version>`; `None` builds an initramfs without modules (for kernels
    /// with everything needed built in).
    pub modules_dir: Option<PathBuf>,
    /// Modules to include (their dependencies are added). Defaults to [`DEFAULT_MODULES`].
    pub modules: Vec<String>,
    /// A static busybox to include with its applet links; `None` for none.
    pub busybox: Option<PathBuf>,
    pub compression: Compression,
    /// Extra files: (file on this host, absolute path in the archive), mode kept.
    pub extra_files: Vec<(PathBuf, String)>,
}

impl MkinitrdOptions {
    /// Defaults: the default module list, gzip, busybox if [`find_busybox`] finds one.
    pub fn new(init: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        MkinitrdOptions {
            output: output.into(),
            init: init.into(),
            modules_dir: None,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            busybox: find_busybox(),
            compression: Compression::Gzip,
            extra_files: Vec::new(),
        }
    }

    /// Add module names (`--add-modules a,b`).
    pub fn add_modules<I: IntoIterator<Item = S>, S: AsRef<str>>(&mut self, names: I) {
        for n in names {
            let n = n.as_ref().trim();
            if !n.is_empty() && !self.modules.iter().any(|m| m == n) {
                self.modules.push(n.to_string());
            }
        }
    }

    /// Add the modules named in a file (`--modules-list FILE`): one per line or
    /// whitespace/comma separated, `#` comments.
    pub fn add_modules_from_file(&mut self, file: &Path) -> Result<(), MkinitrdError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| MkinitrdError::Io(format!("read {}", file.display()), e))?;
        let names: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split([',', ' ', '\t']))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        self.add_modules(names);
        Ok(())
    }
}

/// What went into the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub output: PathBuf,
    /// Module names in load order (as written to `/etc/clb/modules`).
    pub modules: Vec<String>,
    /// Busybox applet links created.
    pub busybox_applets: usize,
    /// Entries in the archive.
    pub entries: usize,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MkinitrdError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Module(String),
    #[error("{0}")]
    Invalid(String),
    /// A helper program (busybox, xz) is missing or failed.
    #[error(transparent)]
    Command(#[from] clb_command::CommandError),
}

/// A statically linked busybox on this host (`/bin/busybox`, `/usr/bin/busybox`), if any.
pub fn find_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| elf_is_static(&b).ok())
                .unwrap_or(false)
        })
}

/// Build the initramfs described by `opts`.
pub fn build(opts: &MkinitrdOptions) -> Result<Stats, MkinitrdError> {
    let init = std::fs::read(&opts.init)
        .map_err(|e| MkinitrdError::Io(format!("read {}", opts.init.display()), e))?;
    match elf_is_static(&init) {
        Ok(true) => {}
        Ok(false) => {
            return Err(MkinitrdError::Invalid(format!(
                "{} is dynamically linked; /init must be static (initrd-hook/build-static.sh)",
                opts.init.display()
            )));
        }
        Err(e) => {
            return Err(MkinitrdError::Invalid(format!(
                "{}: {e}",
                opts.init.display()
            )));
        }
    }

    let mods = match &opts.modules_dir {
        Some(dir) => ModuleIndex::open(dir)?.resolve(&opts.modules)?,
        None => Vec::new(),
    };
    let kver = opts
        .modules_dir
        .as_ref()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned());

    let out_dir = opts
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = opts
        .output
        .file_name()
        .ok_or_else(|| MkinitrdError::Invalid("output has no file name".into()))?;
    let tmp = out_dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let io = |what: &str| {
        let what = what.to_string();
        move |e| MkinitrdError::Io(what, e)
    };
    let file = std::fs::File::create(&tmp).map_err(io(&format!("create {}", tmp.display())))?;
    let sink: Box<dyn Write> = match opts.compression {
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::new(6),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 19)
                .map_err(io("zstd"))?
                .auto_finish(),
        ),
        Compression::None => Box::new(std::io::BufWriter::new(file)),
    };
    let mut cpio = CpioWriter::new(sink);
    let mut entries = 0usize;
    let w = |r: std::io::Result<()>| r.map_err(io("write initramfs"));

    let mut dirs: Vec<String> = [
        "bin", "dev", "etc", "etc/clb", "lib", "proc", "run", "sbin", "sys", "sysroot", "usr",
        "usr/bin", "usr/sbin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Parent directories of modules and extra files.
    let mut wanted: Vec<String> = Vec::new();
    if let Some(v) = &kver {
        for m in &mods {
            wanted.push(format!("lib/modules/{v}/{}", m.rel_ko.display()));
        }
    }
    for (_, dst) in &opts.extra_files {
        wanted.push(dst.trim_start_matches('/').to_string());
    }
    for p in &wanted {
        let mut cur = Path::new(p).parent();
        while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_string_lossy().into_owned());
            cur = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        w(cpio.dir(d, 0o755))?;
        entries += 1;
    }
    w(cpio.char_dev("dev/console", 0o600, 5, 1))?;
    w(cpio.char_dev("dev/null", 0o666, 1, 3))?;
    w(cpio.file("init", 0o755, &init))?;
    entries += 3;

    let mut list = String::from("# written by clb mkinitrd: loaded in this order by /init\n");
    if let Some(v) = &kver {
        for m in &mods {
            let data = modules::read_module(&m.path)?;
            let dst = format!("lib/modules/{v}/{}", m.rel_ko.display());
            w(cpio.file(&dst, 0o644, &data))?;
            entries += 1;
            list.push('/');
            list.push_str(&dst);
            list.push('\n');
        }
    }
    w(cpio.file(MODULES_LIST_PATH, 0o644, list.as_bytes()))?;
    entries += 1;

    let mut applets = 0;
    if let Some(bb) = &opts.busybox {
        let data = std::fs::read(bb).map_err(io(&format!("read {}", bb.display())))?;
        if !elf_is_static(&data).unwrap_or(false) {
            return Err(MkinitrdError::Invalid(format!(
                "{} is not a static busybox (install busybox-static)",
                bb.display()
            )));
        }
        w(cpio.file("bin/busybox", 0o755, &data))?;
        entries += 1;
        for applet in busybox_applets(bb)? {
            let a = applet.trim_start_matches('/');
            // Only the standard directories we created; never replace /init.
            let dir_ok = ["bin/", "sbin/", "usr/bin/", "usr/sbin/"]
                .iter()
                .any(|d| a.strip_prefix(d).is_some_and(|n| !n.contains('/')));
            if !dir_ok || a == "bin/busybox" {
                continue;
            }
            w(cpio.symlink(a, "/bin/busybox"))?;
            applets += 1;
            entries += 1;
        }
    }

    for (src, dst) in &opts.extra_files {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(src).map_err(io(&format!("stat {}", src.display())))?;
        let data = std::fs::read(src).map_err(io(&format!("read {}", src.display())))?;
        w(cpio.file(dst, meta.permissions().mode() & 0o7777, &data))?;
        entries += 1;
    }

    let uncompressed = cpio.bytes_written();
    let mut sink = cpio.finish().map_err(io("write initramfs"))?;
    sink.flush().map_err(io("write initramfs"))?;
    drop(sink);
    let f = std::fs::File::open(&tmp).map_err(io(&format!("open {}", tmp.display())))?;
    f.sync_all().map_err(io("fsync initramfs"))?;
    let compressed = f.metadata().map_err(io("stat initramfs"))?.len();
    std::fs::rename(&tmp, &opts.output).map_err(io(&format!(
        "rename {} to {}",
        tmp.display(),
        opts.output.display()
    )))?;
    Ok(Stats {
        output: opts.output.clone(),
        modules: mods.into_iter().map(|m| m.name).collect(),
        busybox_applets: applets,
        entries,
        uncompressed_bytes: uncompressed,
        compressed_bytes: compressed,
    })
}

/// `busybox --list-full`: applet paths like `bin/sh`, `sbin/losetup`.
fn busybox_applets(bb: &Path) -> Result<Vec<String>, MkinitrdError> {
    let out = clb_command::run(Command::new(bb).arg("--list-full"))?;
    Ok(out.lines().map(str::to_string).collect())
}
