//! GRUB (BIOS, i386-pc) as the bootloader, end to end in QEMU (TCG, SeaBIOS): the disk made
//! by `clb deploy --bootloader bios` gets GRUB's core in the gap before the first partition
//! and `packaging/grub/grub.cfg` in COS_OEM's /grub (agent/src/bootloader.rs); the slots carry
//! their own kernel and initrd (copied out of the image's /boot at staging). GRUB reads and
//! writes the same `grubenv` as the hook, checked after each boot with `grub-editenv`:
//! v1 boots (good: nothing written); v2 on trial with 12 tries: GRUB writes 11 (a two-digit
//! decrement) and the hook counts none; a broken v3 with one try: GRUB writes 0, v3 panics,
//! and the next boot GRUB writes the rollback and boots v2, which sees passive_mode and
//! upgrade_failure. (UEFI: qemu_grub_efi.rs.)
//!
//! Needs root, qemu-system-x86, grub-pc-bin, grub-common, busybox-static, docker-registry,
//! gdisk, e2fsprogs and apt (the Debian kernel is fetched once). Missing ones fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/vm/vmkit.rs"]
mod vmkit;

#[path = "../../tests/vm/grubbios.rs"]
mod grubbios;

use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use grubbios::get;
use vmkit::run;

const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn grub_bios_boots_counts_tries_and_falls_back() {
    for tool in ["grub-mkimage", "grub-editenv", "sgdisk"] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = vmkit::prepare(work);
    let reg = Registry::start_plain();

    let images = vmkit::bootable_releases(&kit, &reg, work);

    let disk = work.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(240 << 20)
        .unwrap();
    run(Command::new(&kit.clb).arg("--disk").arg(&disk).args([
        "deploy",
        "-q",
        "--no-verify",
        "-d",
        &images[0],
        "--bootloader",
        "bios",
        "--kernel-args",
        "console=ttyS0 loglevel=4",
        "--oem-size",
        "8",
        "--recovery-size",
        "0",
        "--state-size",
        "160",
    ]));
    let clb = |args: &[&str]| run(Command::new(&kit.clb).arg("--disk").arg(&disk).args(args));

    // v1, good: GRUB boots it without clb.slot and writes nothing.
    let before = grubbios::grubenv(&disk, work);
    let b = vmkit::boot_bios(&disk, work, "v1", TIMEOUT);
    assert!(
        b.console.contains("clb-grub: booting slot a from"),
        "{}",
        b.console
    );
    assert!(
        vmkit::test_os_line(&b.console).starts_with("CLB-TEST-OS release=v1 slot=a mode=active"),
        "{}",
        b.console
    );
    assert_eq!(
        grubbios::grubenv(&disk, work),
        before,
        "a good boot writes nothing"
    );

    // v2 on trial with 12 tries: GRUB spends one (12 -> 11), the hook (clb.slot=b) none.
    clb(&[
        "upgrade",
        "-q",
        "--no-verify",
        "--max-tries",
        "12",
        "-d",
        &images[1],
    ]);
    let b = vmkit::boot_bios(&disk, work, "v2", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot b on trial: 11 tries left after this boot"),
        "{}",
        b.console
    );
    assert!(b.console.contains("clb.slot=b"), "{}", b.console);
    assert!(
        !b.console.contains("clb-initrd: slot b not yet good"),
        "the hook must not count when GRUB counted:\n{}",
        b.console
    );
    assert!(
        vmkit::test_os_line(&b.console).starts_with("CLB-TEST-OS release=v2 slot=b mode=active"),
        "{}",
        b.console
    );
    let env = grubbios::grubenv(&disk, work);
    assert_eq!(get(&env, "clb_tries"), "11", "{env:?}");
    assert_eq!(get(&env, "clb_active"), "b");
    assert_eq!(get(&env, "clb_good"), "0");
    let s = vmkit::status(&kit, &disk);
    assert_eq!(s["tries_left"], 11, "clb reads what GRUB wrote: {s}");
    clb(&["mark-good"]);

    // A broken v3 with one try: GRUB spends it (1 -> 0) and v3 panics.
    clb(&[
        "upgrade",
        "-q",
        "--no-verify",
        "--max-tries",
        "1",
        "-d",
        &images[2],
    ]);
    let b = vmkit::boot_bios(&disk, work, "v3", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot a on trial: 0 tries left after this boot"),
        "{}",
        b.console
    );
    assert!(
        b.console.contains("CLB-TEST-OS broken release=v3"),
        "{}",
        b.console
    );
    assert!(b.console.contains("Kernel panic"), "{}", b.console);
    vmkit::fsck_state_repair(&disk);
    let env = grubbios::grubenv(&disk, work);
    assert_eq!(get(&env, "clb_tries"), "0", "{env:?}");
    assert_eq!(get(&env, "clb_active"), "a");

    // Tries spent: GRUB records the rollback and boots v2, which sees it.
    let b = vmkit::boot_bios(&disk, work, "fallback", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot a failed to boot: rolled back to slot b"),
        "{}",
        b.console
    );
    let line = vmkit::test_os_line(&b.console);
    assert!(
        line.starts_with("CLB-TEST-OS release=v2 slot=b mode=passive failure=a"),
        "{line}"
    );
    let env = grubbios::grubenv(&disk, work);
    for (k, want) in [
        ("clb_active", "b"),
        ("clb_fallback", ""),
        ("clb_good", "1"),
        ("clb_rolled_back", "1"),
        ("clb_failed", "a"),
    ] {
        assert_eq!(get(&env, k), want, "{k}: {env:?}");
    }
    let s = vmkit::status(&kit, &disk);
    assert_eq!(s["active"], "b", "{s}");
    assert_eq!(s["rolled_back"], true, "{s}");
    assert_eq!(s["failed_slot"], "a", "{s}");
}
