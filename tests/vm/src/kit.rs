//! What every boot test starts from: the programs under test, the Debian kernel (fetched once
//! into `/var/cache/clb-test-kernel` by `scripts/fetch-kernel.sh`) and a clb initramfs (the
//! static hook as /init, the default modules, busybox).

use std::path::{Path, PathBuf};
use std::process::Command;

use clb_testsupport::require_tool;

use crate::binaries::binaries;
use crate::cmd::{kit_dir, run};

pub struct Kit {
    /// Host kernel for direct (`-kernel`) boots.
    pub kernel: PathBuf,
    /// `6.1.0-…-amd64`.
    pub kernel_version: String,
    /// The unpacked kernel's `lib/modules/VER`.
    pub modules_dir: PathBuf,
    /// clb initramfs (hook as /init, default modules plus the extra ones asked for, busybox).
    pub initrd: PathBuf,
    /// Modules in `initrd`, in load order.
    pub modules: Vec<String>,
    pub clb: PathBuf,
    /// The static clb-initrd.
    pub hook: PathBuf,
}

/// The kit with the default initramfs modules.
pub fn prepare(work: &Path) -> Kit {
    prepare_with(work, &[])
}

/// Check the tools, build clb and the static hook, fetch the kernel and build the initramfs
/// (default modules and `extra_modules`) into `work`.
pub fn prepare_with(work: &Path, extra_modules: &[&str]) -> Kit {
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "docker-registry",
        "sgdisk",
        "blkid",
        "mkfs.ext4",
        "e2fsck",
        "losetup",
        "mount",
        "umount",
        "apt-get",
        "dpkg",
        "tar2sqfs",
    ] {
        require_tool(tool);
    }
    let bins = binaries();
    let out = run(&mut Command::new(kit_dir().join("scripts/fetch-kernel.sh")));
    let mut lines = out.lines();
    let kernel = PathBuf::from(lines.next().expect("vmlinuz line"));
    let modules_dir = PathBuf::from(lines.next().expect("modules line"));
    let kernel_version = modules_dir
        .file_name()
        .expect("modules dir name")
        .to_string_lossy()
        .into_owned();
    let mut kit = Kit {
        kernel,
        kernel_version,
        modules_dir,
        initrd: work.join("initrd.img"),
        modules: Vec::new(),
        clb: bins.clb.clone(),
        hook: bins.hook.clone(),
    };
    kit.modules = kit.initramfs(&kit.initrd, extra_modules);
    kit
}

impl Kit {
    /// Build a clb initramfs at `out` with the default modules and `extra_modules`; returns
    /// the modules it holds, in load order.
    pub fn initramfs(&self, out: &Path, extra_modules: &[&str]) -> Vec<String> {
        let mut opts = clb_mkinitrd::MkinitrdOptions::new(&self.hook, out);
        opts.modules_dir = Some(self.modules_dir.clone());
        opts.busybox = Some(clb_mkinitrd::find_busybox().expect("a static busybox"));
        opts.add_modules(extra_modules.iter().copied());
        let stats = clb_mkinitrd::build(&opts).expect("mkinitrd");
        eprintln!(
            "initrd {}: {} modules {:?}, {} bytes",
            out.display(),
            stats.modules.len(),
            stats.modules,
            stats.compressed_bytes
        );
        for m in extra_modules {
            assert!(
                stats.modules.iter().any(|n| n == m),
                "{m} missing from the initramfs: {:?}",
                stats.modules
            );
        }
        stats.modules
    }

    /// The unpacked kernel package's lib dir (holding `modules/VER`).
    pub fn kernel_lib_dir(&self) -> &Path {
        self.modules_dir
            .parent()
            .and_then(Path::parent)
            .expect("lib dir of the kernel's modules")
    }

    /// The unpacked kernel package's boot dir (`vmlinuz-VER`, `config-VER`).
    pub fn kernel_boot_dir(&self) -> &Path {
        self.kernel.parent().expect("boot dir of the kernel")
    }
}
