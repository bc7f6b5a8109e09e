//! GRUB for x86-64 EFI, installed into the ESP (`COS_GRUB`, vfat) of a disk or image: a
//! `grub-mkimage` binary with every module it needs built in (nothing else to install on the
//! ESP) as the removable-media path `EFI/BOOT/BOOTX64.EFI`, clb's `grub.cfg` next to it, and
//! `clb.env` (a GRUB environment block holding this machine's kernel arguments).
//! The files are written with mtools, so no vfat driver or mount is needed.
//! GRUB counts tries itself in `COS_STATE/grubenv` (see `packaging/grub/grub.cfg`).
//!
//! For BIOS machines ([`install_bios`]) GRUB's `core.img` goes into the unallocated gap
//! between the GPT's entries and the first partition (clb aligns that at 1 MiB), `boot.img`
//! becomes the MBR code pointing at it (the protective MBR's partition table kept), and
//! `grub.cfg` with `clb.env` go to `COS_OEM:/grub`. This is what `grub-install
//! --target=i386-pc` + `grub-bios-setup` do, without needing partition nodes for the disk
//! (an image file works the same as a block device).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ClbError, Result};
use crate::partitions::{ESP_LABEL, OEM_LABEL};

/// clb's GRUB configuration, the same file as `packaging/grub/grub.cfg`.
pub const GRUB_CFG: &str = include_str!("../../packaging/grub/grub.cfg");

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

/// Runs a GRUB or mtools program; mtools must not refuse an image over its geometry checks.
fn tool(cmd: &mut Command) -> Result<()> {
    clb_command::run(cmd.env("MTOOLS_SKIP_CHECK", "1"))?;
    Ok(())
}

/// Installs GRUB into the ESP of `disk` (an image or a whole block device).
pub fn install_efi(disk: &Path, kernel_args: &str) -> Result<()> {
    let target = crate::partitions::esp_target(Some(disk))?.ok_or_else(|| {
        ClbError::State(format!(
            "{}: no partition labelled {ESP_LABEL}",
            disk.display()
        ))
    })?;
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let efi = work.path().join("BOOTX64.EFI");
    tool(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o"])
            .arg(&efi)
            .args(MODULES),
    )?;
    let cfg = work.path().join("grub.cfg");
    std::fs::write(&cfg, GRUB_CFG).map_err(ClbError::io("writing grub.cfg"))?;
    let env = work.path().join("clb.env");
    std::fs::write(&env, crate::kernelargs::machine_env(kernel_args)?)
        .map_err(ClbError::io("writing clb.env"))?;
    for dir in ["::/EFI", "::/EFI/BOOT"] {
        // mmd fails when the directory exists already (a re-install): that is fine.
        let _ = tool(Command::new("mmd").args(["-i", &target, dir]));
    }
    for (file, name) in [(&efi, "BOOTX64.EFI"), (&cfg, "grub.cfg"), (&env, "clb.env")] {
        tool(
            Command::new("mcopy")
                .args(["-o", "-i", &target])
                .arg(file)
                .arg(format!("::/EFI/BOOT/{name}")),
        )?;
    }
    tracing::info!(disk = %disk.display(), esp = %target, "GRUB (x86_64-efi) installed");
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

const BIOS_GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "ext2",
    "search",
    "search_label",
    "normal",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "sleep",
    "linux",
    "serial",
    "terminal",
    "gzio",
];
/// First sector after a standard GPT's partition entries.
const CORE_LBA: u64 = 34;

/// Installs GRUB for BIOS (i386-pc) on `disk` (an image or a whole block device).
pub fn install_bios(disk: &Path, kernel_args: &str) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let boot_img = Path::new(BIOS_GRUB_DIR).join("boot.img");
    if !boot_img.exists() {
        return Err(ClbError::State(format!(
            "{} missing (package grub-pc-bin)",
            boot_img.display()
        )));
    }
    let parts = clb_disk::list_partitions(disk).map_err(ClbError::from)?;
    let first_free_end = parts
        .iter()
        .map(|p| p.start_bytes / 512)
        .min()
        .unwrap_or(2048);
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let early = work.path().join("early.cfg");
    std::fs::write(
        &early,
        "search --no-floppy --label --set=root COS_OEM\nset prefix=($root)/grub\n",
    )
    .map_err(ClbError::io("writing the early config"))?;
    let core_path = work.path().join("core.img");
    tool(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", "/grub", "-d", BIOS_GRUB_DIR, "-c"])
            .arg(&early)
            .arg("-o")
            .arg(&core_path)
            .args(BIOS_MODULES),
    )?;
    let mut core = std::fs::read(&core_path).map_err(ClbError::io("reading core.img"))?;
    core.resize(core.len().div_ceil(512) * 512, 0);
    let sectors = (core.len() / 512) as u64;
    if CORE_LBA + sectors > first_free_end {
        return Err(ClbError::Invalid(format!(
            "{}: no room for GRUB's core.img ({sectors} sectors) before the first partition",
            disk.display()
        )));
    }
    // diskboot.img's block list (end of core.img's first sector): the rest follows it.
    core[0x1f4..0x1fc].copy_from_slice(&(CORE_LBA + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    let mut boot = std::fs::read(&boot_img).map_err(ClbError::io("reading boot.img"))?;
    if boot.len() != 512 {
        return Err(ClbError::State("boot.img is not one sector".into()));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(ClbError::io(format!("opening {}", disk.display())))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)
        .map_err(ClbError::io("reading the MBR"))?;
    // Keep the BPB area and the (protective) partition table; point at core.img; the
    // boot-drive check becomes two NOPs, as grub-bios-setup does for hard disks.
    boot[0x03..0x5a].copy_from_slice(&mbr[0x03..0x5a]);
    boot[0x5c..0x64].copy_from_slice(&CORE_LBA.to_le_bytes());
    boot[0x66..0x68].copy_from_slice(&[0x90, 0x90]);
    boot[0x1b8..0x1fe].copy_from_slice(&mbr[0x1b8..0x1fe]);
    let write = |f: &mut std::fs::File| -> std::io::Result<()> {
        f.seek(SeekFrom::Start(CORE_LBA * 512))?;
        f.write_all(&core)?;
        f.sync_all()?;
        // The MBR last: until it points at core.img, nothing boots a half-written core.
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&boot)?;
        f.sync_all()
    };
    write(&mut f).map_err(ClbError::io(format!("writing GRUB to {}", disk.display())))?;
    drop(f);
    let (_oem_disk, oem) = crate::target::open_store(disk, OEM_LABEL, true)?;
    let dir = oem.root().join("grub");
    std::fs::create_dir_all(&dir).map_err(ClbError::io("creating COS_OEM:/grub"))?;
    clb_ondisk::atomic::write_atomic(&dir.join("grub.cfg"), GRUB_CFG.as_bytes())
        .map_err(ClbError::io("writing grub.cfg"))?;
    clb_ondisk::atomic::write_atomic(
        &dir.join("clb.env"),
        &crate::kernelargs::machine_env(kernel_args)?,
    )
    .map_err(ClbError::io("writing clb.env"))?;
    tracing::info!(disk = %disk.display(), sectors, "GRUB (i386-pc) installed");
    Ok(())
}
