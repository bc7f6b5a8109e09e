//! The real `clb` agent at work on the tests' registry and disk images.

use std::path::{Path, PathBuf};
use std::process::Command;

use clb_testsupport::Registry;

use crate::cmd::run;
use crate::kit::Kit;

/// `clb push DIR... IMAGE` (tar+gzip layers, converted at upgrade) and return the reference.
pub fn push(kit: &Kit, reg: &Registry, dirs: &[PathBuf], name: &str) -> String {
    let image = reg.image_ref(name);
    run(Command::new(&kit.clb).arg("push").args(dirs).arg(&image));
    image
}

/// `clb --disk DISK ARGS...`, its stdout.
pub fn on_disk(kit: &Kit, disk: &Path, args: &[&str]) -> String {
    run(Command::new(&kit.clb).arg("--disk").arg(disk).args(args))
}

/// `clb --json ARGS...`, parsed.
pub fn json(kit: &Kit, args: &[&str]) -> serde_json::Value {
    let out = run(Command::new(&kit.clb).arg("--json").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("clb {args:?} json: {e}: {out}"))
}

/// `clb --disk DISK status --json`, parsed.
pub fn status(kit: &Kit, disk: &Path) -> serde_json::Value {
    let out = on_disk(kit, disk, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json: {e}: {out}"))
}

/// `clb --disk DISK deploy` onto a fresh sparse image: COS_OEM, COS_STATE, COS_PERSISTENT,
/// no bootloader (the tests boot the kernel directly, or install one themselves).
pub fn deploy(kit: &Kit, disk: &Path, image: &str, state_mib: u32) {
    let _ = std::fs::remove_file(disk);
    let f = std::fs::File::create(disk).unwrap();
    f.set_len((u64::from(state_mib) + 8 + 32 + 2) * 1024 * 1024)
        .unwrap();
    drop(f);
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["deploy", "-q", "--no-verify", "-d", image])
        // Direct kernel boots: no ESP/GRUB (qemu_grub_efi.rs tests the bootloader).
        .args(["--bootloader", "none"])
        .args(["--oem-size", "8", "--recovery-size", "0", "--state-size"])
        .arg(state_mib.to_string()));
}

/// `clb --disk DISK deploy` onto a fresh sparse image of `disk_mib` with a bootloader that
/// boots with `console=ttyS0 loglevel=4`: COS_OEM of 8 MiB, no recovery, plus `args`
/// (bootloader, ESP and state sizes).
pub fn deploy_bootable(kit: &Kit, disk: &Path, image: &str, disk_mib: u64, args: &[&str]) {
    let _ = std::fs::remove_file(disk);
    std::fs::File::create(disk)
        .unwrap()
        .set_len(disk_mib << 20)
        .unwrap();
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["deploy", "-q", "--no-verify", "-d", image])
        .args(["--kernel-args", "console=ttyS0 loglevel=4"])
        .args(["--oem-size", "8", "--recovery-size", "0"])
        .args(args));
}

/// `clb --disk DISK upgrade -d IMAGE --no-verify EXTRA...`.
pub fn upgrade(kit: &Kit, disk: &Path, image: &str, extra: &[&str]) {
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["upgrade", "-q", "-d", image, "--no-verify"])
        .args(extra));
}

pub fn mark_good(kit: &Kit, disk: &Path) {
    on_disk(kit, disk, &["mark-good"]);
}
