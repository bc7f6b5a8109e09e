//! Install BIOS GRUB (i386-pc) onto a disk image without grub-install: grub-install needs the
//! partition nodes of a partition-scanned loop device, which containers often lack. This does
//! what `grub-install --target=i386-pc` + `grub-bios-setup` do for a GPT disk:
//!
//! 1. a BIOS boot partition (GPT type EF02) in the gap before the first partition;
//! 2. `grub-mkimage -O i386-pc` with every module clb's grub.cfg needs built in and an early
//!    config that finds COS_STATE by label and sets `$prefix` to `($root)/grub`;
//! 3. core.img written into the BIOS boot partition, its first sector's block list
//!    (`diskboot.img`, offset 0x1f4: start LBA u64, sector count u16) pointing at the rest;
//! 4. `boot.img` as the MBR code: the BPB (0x03..0x5a) and the partition table
//!    (0x1b8..0x1fe) of the existing protective MBR kept, core.img's LBA at 0x5c, and the
//!    boot-drive check (0x66) turned into two NOPs as grub-bios-setup does for hard disks;
//! 5. `packaging/grub/grub.cfg` and a `clb.env` (kernel arguments) in COS_STATE's `/grub`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use crate::vmkit::{StateMount, run, workspace};

const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const MODULES: &[&str] = &[
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

/// First LBA of the BIOS boot partition: right after the GPT's partition entries.
const CORE_LBA: u64 = 34;
/// Its last LBA: just before clb's first partition at 1 MiB.
const CORE_END: u64 = 2047;

pub fn install(disk: &Path, work: &Path, kernel_args: &str) {
    assert!(
        Path::new(GRUB_DIR).join("boot.img").exists(),
        "missing test prerequisite: {GRUB_DIR} (package grub-pc-bin)"
    );
    run(Command::new("sgdisk")
        .args(["-a", "1", "-n"])
        .arg(format!("0:{CORE_LBA}:{CORE_END}"))
        .args(["-t", "0:EF02", "-c", "0:bios_grub"])
        .arg(disk));

    let early = work.join("grub-early.cfg");
    std::fs::write(
        &early,
        "search --no-floppy --label --set=root COS_STATE\nset prefix=($root)/grub\n",
    )
    .unwrap();
    let core = work.join("core.img");
    run(Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-p", "/grub", "-d", GRUB_DIR, "-c"])
        .arg(&early)
        .arg("-o")
        .arg(&core)
        .args(MODULES));
    let mut core = std::fs::read(&core).unwrap();
    core.resize(core.len().div_ceil(512) * 512, 0);
    let sectors = (core.len() / 512) as u64;
    assert!(
        sectors <= CORE_END - CORE_LBA + 1,
        "core.img is {sectors} sectors, the gap {}",
        CORE_END - CORE_LBA + 1
    );
    // diskboot.img's block list: the rest of core.img follows its first sector.
    core[0x1f4..0x1fc].copy_from_slice(&(CORE_LBA + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());

    let mut boot = std::fs::read(Path::new(GRUB_DIR).join("boot.img")).unwrap();
    assert_eq!(boot.len(), 512);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).unwrap();
    boot[0x03..0x5a].copy_from_slice(&mbr[0x03..0x5a]);
    boot[0x5c..0x64].copy_from_slice(&CORE_LBA.to_le_bytes());
    boot[0x66..0x68].copy_from_slice(&[0x90, 0x90]);
    boot[0x1b8..0x1fe].copy_from_slice(&mbr[0x1b8..0x1fe]);
    assert_eq!(&boot[0x1fe..], &[0x55, 0xaa]);
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&boot).unwrap();
    f.seek(SeekFrom::Start(CORE_LBA * 512)).unwrap();
    f.write_all(&core).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let mnt = StateMount::open(disk, &work.join("grub-state"), true);
    let dir = mnt.path().join("grub");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        workspace().join("packaging/grub/grub.cfg"),
        dir.join("grub.cfg"),
    )
    .unwrap();
    let env = dir.join("clb.env");
    run(Command::new("grub-editenv").arg(&env).arg("create"));
    run(Command::new("grub-editenv")
        .arg(&env)
        .arg("set")
        .arg(format!("clb_cmdline={kernel_args}")));
    run(&mut Command::new("sync"));
}

/// `grub-editenv COS_STATE/grubenv list`, as key/value pairs.
pub fn grubenv(disk: &Path, work: &Path) -> Vec<(String, String)> {
    let mnt = StateMount::open(disk, &work.join("grubenv-read"), false);
    let out = run(Command::new("grub-editenv")
        .arg(mnt.path().join("grubenv"))
        .arg("list"));
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {env:?}"))
}
