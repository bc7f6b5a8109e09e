//! GRUB for x86-64 EFI, installed into the ESP (`COS_GRUB`, vfat) of a disk or image: a
//! `grub-mkimage` binary with every module it needs built in (nothing else to install on the
//! ESP) as the removable-media path `EFI/BOOT/BOOTX64.EFI`, clb's `grub.cfg` next to it, and
//! `clb.env` (a GRUB environment block holding this machine's kernel arguments).
//! The files are written with mtools, so no vfat driver or mount is needed.
//! GRUB counts tries itself in `COS_STATE/grubenv` (see `packaging/grub/grub.cfg`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ClbError, Result};
use crate::target::disk_error;

/// clb's GRUB configuration, the same file as `packaging/grub/grub.cfg`.
pub const GRUB_CFG: &str = include_str!("../../packaging/grub/grub.cfg");

/// Filesystem label of the EFI system partition (Elemental's name).
pub const ESP_LABEL: &str = "COS_GRUB";

const MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "loadenv",
    "echo",
    "test",
    "sleep",
    "reboot",
    "halt",
    "gzio",
    "efi_gop",
    "all_video",
];

fn tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(ClbError::io(format!(
            "running {what} (packages grub-efi-amd64-bin, grub-common, mtools)"
        )))?;
    if !out.status.success() {
        return Err(ClbError::State(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        )));
    }
    Ok(())
}

/// Installs GRUB into the ESP of `disk` (an image or a whole block device).
pub fn install_efi(disk: &Path, kernel_args: &str) -> Result<()> {
    let part = clb_disk::find_by_label(disk, ESP_LABEL).map_err(disk_error)?;
    // mtools reads an image at an offset directly; a block device's partition node is used as is.
    let target = match clb_disk::PartitionDevice::open(
        disk,
        part.number,
        part.start_bytes,
        part.size_bytes,
        false,
    )
    .map_err(disk_error)?
    {
        clb_disk::PartitionDevice::Node(node) => node.display().to_string(),
        clb_disk::PartitionDevice::Loop(l) => {
            drop(l);
            format!("{}@@{}", disk.display(), part.start_bytes)
        }
    };
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let efi = work.path().join("BOOTX64.EFI");
    tool(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
            .arg(&efi)
            .args(MODULES),
        "grub-mkimage",
    )?;
    let cfg = work.path().join("grub.cfg");
    std::fs::write(&cfg, GRUB_CFG).map_err(ClbError::io("writing grub.cfg"))?;
    let env = work.path().join("clb.env");
    tool(
        Command::new("grub-editenv").arg(&env).arg("create"),
        "grub-editenv",
    )?;
    tool(
        Command::new("grub-editenv")
            .arg(&env)
            .arg("set")
            .arg(format!("clb_cmdline={kernel_args}")),
        "grub-editenv",
    )?;
    for dir in ["::/EFI", "::/EFI/BOOT"] {
        // mmd fails on an existing directory; a second install is fine.
        let _ = Command::new("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &target, dir])
            .output();
    }
    for (file, name) in [(&efi, "BOOTX64.EFI"), (&cfg, "grub.cfg"), (&env, "clb.env")] {
        tool(
            Command::new("mcopy")
                .args(["-o", "-i", &target])
                .arg(file)
                .arg(format!("::/EFI/BOOT/{name}")),
            "mcopy",
        )?;
    }
    tracing::info!(disk = %disk.display(), esp = part.number, "GRUB (x86_64-efi) installed");
    Ok(())
}

/// Where the bootloader's files are on the ESP, for documentation and tests.
pub fn esp_paths() -> [PathBuf; 3] {
    [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/grub.cfg",
        "EFI/BOOT/clb.env",
    ]
    .map(PathBuf::from)
}
