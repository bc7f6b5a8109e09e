//! GRUB (BIOS, i386-pc) as the bootloader, end to end in QEMU (TCG, SeaBIOS): the disk made
//! by `clb deploy --bootloader bios` gets GRUB's core in the gap before the first partition
//! and `packaging/grub/grub.cfg` in COS_OEM's /grub (agent/src/bootloader.rs); the slots carry
//! their own kernel and initrd (copied out of the image's /boot at staging). GRUB reads and
//! writes the same `grubenv` as the hook, checked after each boot with `grub-editenv`:
//! v1 boots (good, and counted all the same: only clb_tries changes, 3 -> 2); v2 on trial with 12 tries: GRUB writes 11 (a two-digit
//! decrement) and the hook counts none; a broken v3 with one try: GRUB writes 0, v3 panics,
//! and the next boot GRUB writes the rollback and boots v2, which sees passive_mode and
//! upgrade_failure. (UEFI: qemu_grub_efi.rs.)
//!
//! Needs root, qemu-system-x86, grub-pc-bin, grub-common, busybox-static, docker-registry,
//! gdisk, e2fsprogs and apt (the Debian kernel is fetched once). Missing ones fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::grubenv::{self, get};
use clb_vm_tests::{clb, disks, kit, qemu, testos};

const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn grub_bios_boots_counts_tries_and_falls_back() {
    for tool in ["grub-mkimage", "grub-editenv", "sgdisk"] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();

    let images = testos::bootable_releases(&kit, &reg, work);

    let disk = work.join("disk.img");
    clb::deploy_bootable(
        &kit,
        &disk,
        &images[0],
        240,
        &["--bootloader", "bios", "--state-size", "160"],
    );
    let on_disk = |args: &[&str]| clb::on_disk(&kit, &disk, args);

    // `clb bootloader` on a BIOS disk: clb.env lives on COS_OEM; clb.debug added here must
    // reach the hook through GRUB at the next boot.
    let shown: serde_json::Value =
        serde_json::from_str(&on_disk(&["--json", "bootloader", "show"])).unwrap();
    assert_eq!(shown["kernel_args"], "console=ttyS0 loglevel=4", "{shown}");
    assert!(
        shown["stored_in"]
            .as_str()
            .unwrap()
            .starts_with("COS_OEM:/grub/clb.env")
    );
    on_disk(&["bootloader", "add-args", "clb.debug"]);

    // v1, good: GRUB counts its boot too (3 -> 2), and only clb_tries changes.
    let before = grubenv::grubenv(&disk, work);
    let b = qemu::boot_bios(&disk, work, "v1", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot a: 2 boots left unless it is marked good"),
        "{}",
        b.console
    );
    testos::assert_test_os(&b.console, "CLB-TEST-OS release=v1 slot=a mode=active");
    assert!(
        b.console.contains("clb-initrd: decision:"),
        "clb.debug from `clb bootloader add-args` reached the hook:\n{}",
        b.console
    );
    let after = grubenv::grubenv(&disk, work);
    let changed: Vec<_> = after.iter().filter(|kv| !before.contains(kv)).collect();
    assert_eq!(
        changed,
        [&("clb_tries".to_string(), "2".to_string())],
        "a good boot spends a try, nothing else"
    );
    on_disk(&["mark-good"]);

    // v2 on trial with 12 tries: GRUB spends one (12 -> 11), the hook (clb.slot=b) none.
    on_disk(&[
        "upgrade",
        "-q",
        "--no-verify",
        "--max-tries",
        "12",
        "-d",
        &images[1],
    ]);
    let b = qemu::boot_bios(&disk, work, "v2", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot b: 11 boots left unless it is marked good"),
        "{}",
        b.console
    );
    assert!(b.console.contains("clb.slot=b"), "{}", b.console);
    assert!(
        !b.console.contains("clb-initrd: slot b"),
        "the hook must not count when GRUB counted:\n{}",
        b.console
    );
    testos::assert_test_os(&b.console, "CLB-TEST-OS release=v2 slot=b mode=active");
    let env = grubenv::grubenv(&disk, work);
    assert_eq!(get(&env, "clb_tries"), "11", "{env:?}");
    assert_eq!(get(&env, "clb_active"), "b");
    assert_eq!(get(&env, "clb_good"), "0");
    let s = clb::status(&kit, &disk);
    assert_eq!(s["tries_left"], 11, "clb reads what GRUB wrote: {s}");
    on_disk(&["mark-good"]);

    // A broken v3 with one try: GRUB spends it (1 -> 0) and v3 panics.
    on_disk(&[
        "upgrade",
        "-q",
        "--no-verify",
        "--max-tries",
        "1",
        "-d",
        &images[2],
    ]);
    let b = qemu::boot_bios(&disk, work, "v3", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot a: 0 boots left unless it is marked good"),
        "{}",
        b.console
    );
    assert!(
        b.console.contains("CLB-TEST-OS broken release=v3"),
        "{}",
        b.console
    );
    assert!(b.console.contains("Kernel panic"), "{}", b.console);
    disks::fsck_state_repair(&disk);
    let env = grubenv::grubenv(&disk, work);
    assert_eq!(get(&env, "clb_tries"), "0", "{env:?}");
    assert_eq!(get(&env, "clb_active"), "a");

    // Tries spent: GRUB records the rollback and boots v2, which sees it.
    let b = qemu::boot_bios(&disk, work, "fallback", TIMEOUT);
    assert!(
        b.console
            .contains("clb-grub: slot a failed to boot: rolled back to slot b"),
        "{}",
        b.console
    );
    testos::assert_test_os(
        &b.console,
        "CLB-TEST-OS release=v2 slot=b mode=passive failure=a",
    );
    let env = grubenv::grubenv(&disk, work);
    for (k, want) in [
        ("clb_active", "b"),
        ("clb_fallback", ""),
        ("clb_good", "1"),
        ("clb_rolled_back", "1"),
        ("clb_failed", "a"),
        // --max-tries 1: the fallback boot was b's first and last try until mark-good.
        ("clb_tries", "0"),
    ] {
        assert_eq!(get(&env, k), want, "{k}: {env:?}");
    }
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b", "{s}");
    assert_eq!(s["rolled_back"], true, "{s}");
    assert_eq!(s["failed_slot"], "a", "{s}");
}
