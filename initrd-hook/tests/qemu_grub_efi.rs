//! GRUB as the bootloader, end to end in QEMU (TCG) with OVMF (UEFI): `clb deploy` lays out an
//! ESP and installs GRUB (x86_64-efi, `packaging/grub/grub.cfg`); the slots carry their own
//! kernel and initrd (copied out of the image's /boot at staging). GRUB reads and writes the
//! same `grubenv` the initrd hook uses and counts tries itself; the hook sees `clb.slot=` and
//! does not count again. v1 boots; v2 on trial is counted by GRUB (3 → 2); a broken v3 with one
//! try panics, and the next boot GRUB falls back to v2 and records the rollback.
//!
//! Needs root, qemu-system-x86, ovmf, grub-efi-amd64-bin, grub-common, mtools, busybox-static,
//! docker-registry, gdisk, e2fsprogs and apt (the Debian kernel is fetched once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/vm/vmkit.rs"]
mod vmkit;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use vmkit::{Kit, run};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const TIMEOUT: Duration = Duration::from_secs(240);

/// Boot `disk` through the firmware: OVMF finds EFI/BOOT/BOOTX64.EFI on the ESP.
fn boot_uefi(disk: &Path, work: &Path, name: &str) -> String {
    let vars = work.join(format!("vars-{name}.fd"));
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF vars (package ovmf)");
    let log = work.join(format!("console-{name}.log"));
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-reboot",
        ])
        .args(["-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let start = std::time::Instant::now();
    let timed_out = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).to_string();
    eprintln!(
        "---- uefi boot {name}: {:.1} s ----\n{}",
        start.elapsed().as_secs_f64(),
        console
            .lines()
            .filter(|l| l.contains("clb-initrd")
                || l.contains("CLB-TEST-OS")
                || l.contains("panic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!timed_out, "boot {name} hung:\n{console}");
    console
}

fn clb(kit: &Kit, disk: &Path, args: &[&str]) -> String {
    run(Command::new(&kit.clb).arg("--disk").arg(disk).args(args))
}

#[test]
fn grub_efi_boots_counts_tries_and_falls_back() {
    for tool in [
        "grub-mkimage",
        "mcopy",
        "grub-editenv",
        "qemu-system-x86_64",
    ] {
        require_tool(tool);
    }
    assert!(
        Path::new(OVMF_CODE).exists(),
        "missing test prerequisite: {OVMF_CODE} (package ovmf)"
    );
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = vmkit::prepare(work);
    let reg = Registry::start_plain();

    let images = vmkit::bootable_releases(&kit, &reg, work);

    let disk = work.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(420 << 20)
        .unwrap();
    clb(
        &kit,
        &disk,
        &[
            "deploy",
            "-q",
            "--no-verify",
            "-d",
            &images[0],
            "--kernel-args",
            "console=ttyS0 loglevel=4",
            "--esp-size",
            "32",
            "--oem-size",
            "8",
            "--recovery-size",
            "0",
            "--state-size",
            "240",
        ],
    );
    let _ = clb(&kit, &disk, &["status"]);
    let c = boot_uefi(&disk, work, "v1");
    assert!(
        vmkit::test_os_line(&c).starts_with("CLB-TEST-OS release=v1 slot=a"),
        "{c}"
    );
    clb(&kit, &disk, &["mark-good"]);

    // v2 on trial: GRUB spends one of its three tries, the hook (clb.slot=b) none.
    clb(
        &kit,
        &disk,
        &["upgrade", "-q", "--no-verify", "-d", &images[1]],
    );
    let c = boot_uefi(&disk, work, "v2");
    assert!(
        vmkit::test_os_line(&c).starts_with("CLB-TEST-OS release=v2 slot=b"),
        "{c}"
    );
    assert!(
        !c.contains("not yet good"),
        "the hook must not count when GRUB chose:\n{c}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&clb(&kit, &disk, &["--json", "status"])).unwrap();
    assert_eq!(s["tries_left"], 2, "GRUB decremented the tries once: {s}");
    clb(&kit, &disk, &["mark-good"]);

    // A broken v3 with one try: GRUB spends it, v3 panics; the next boot falls back to v2.
    clb(
        &kit,
        &disk,
        &[
            "upgrade",
            "-q",
            "--no-verify",
            "--max-tries",
            "1",
            "-d",
            &images[2],
        ],
    );
    let c = boot_uefi(&disk, work, "v3");
    assert!(c.contains("CLB-TEST-OS broken release=v3"), "{c}");
    let c = boot_uefi(&disk, work, "fallback");
    assert!(
        vmkit::test_os_line(&c).starts_with("CLB-TEST-OS release=v2 slot=b mode=passive failure=a"),
        "the rolled-back system sees passive_mode and upgrade_failure:\n{c}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&clb(&kit, &disk, &["--json", "status"])).unwrap();
    assert_eq!(s["active"], "b", "{s}");
    assert_eq!(s["rolled_back"], true, "{s}");
    assert_eq!(s["failed_slot"], "a", "{s}");
}
