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

use std::path::Path;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::qemu::{OVMF_CODE, boot_uefi};
use clb_vm_tests::{clb, kit, testos};

const TIMEOUT: Duration = Duration::from_secs(240);

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
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();

    let images = testos::bootable_releases(&kit, &reg, work);

    let disk = work.join("disk.img");
    clb::deploy_bootable(
        &kit,
        &disk,
        &images[0],
        420,
        &["--esp-size", "32", "--state-size", "240"],
    );
    assert_eq!(clb::status(&kit, &disk)["active"], "a");
    let c = boot_uefi(&disk, work, "v1", TIMEOUT).console;
    testos::assert_test_os(&c, "CLB-TEST-OS release=v1 slot=a");
    clb::mark_good(&kit, &disk);

    // v2 on trial: GRUB spends one of its three tries, the hook (clb.slot=b) none.
    clb::on_disk(
        &kit,
        &disk,
        &["upgrade", "-q", "--no-verify", "-d", &images[1]],
    );
    let c = boot_uefi(&disk, work, "v2", TIMEOUT).console;
    testos::assert_test_os(&c, "CLB-TEST-OS release=v2 slot=b");
    assert!(
        !c.contains("not yet good"),
        "the hook must not count when GRUB chose:\n{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["tries_left"], 2, "GRUB decremented the tries once: {s}");
    clb::mark_good(&kit, &disk);

    // A broken v3 with one try: GRUB spends it, v3 panics; the next boot falls back to v2.
    clb::on_disk(
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
    let c = boot_uefi(&disk, work, "v3", TIMEOUT).console;
    assert!(c.contains("CLB-TEST-OS broken release=v3"), "{c}");
    let c = boot_uefi(&disk, work, "fallback", TIMEOUT).console;
    assert!(
        testos::test_os_line(&c)
            .starts_with("CLB-TEST-OS release=v2 slot=b mode=passive failure=a"),
        "the rolled-back system sees passive_mode and upgrade_failure:\n{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b", "{s}");
    assert_eq!(s["rolled_back"], true, "{s}");
    assert_eq!(s["failed_slot"], "a", "{s}");
}
