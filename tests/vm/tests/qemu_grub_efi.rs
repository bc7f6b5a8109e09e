//! GRUB as the bootloader, end to end in QEMU (TCG) with OVMF (UEFI): `clb deploy` lays out an
//! ESP and installs GRUB (x86_64-efi, `packaging/grub/grub.cfg`); the slots carry their own
//! kernel and initrd (copied out of the image's /boot at staging). GRUB reads and writes the
//! same `grubenv` the initrd hook uses and counts every boot itself; the hook sees `clb.slot=`
//! and does not count again. v1 boots (a good slot counts too: 3 → 2, mark-good refills);
//! v2 on trial is counted by GRUB (3 → 2) and marked good; then v2's disk goes bad (its top
//! layer no longer matches): three failed boots of the GOOD slot b, and GRUB falls back to v1
//! (one QEMU run that reboots on each panic); a broken v3 with one try panics, and GRUB falls
//! back to v1 again and records the rollback.
//!
//! Needs root, qemu-system-x86, ovmf, grub-efi-amd64-bin, grub-common, mtools, busybox-static,
//! docker-registry, gdisk, e2fsprogs and apt (the Debian kernel is fetched once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clb_testsupport::Registry;
use clb_vm_tests::qemu::{Qemu, boot_uefi, require_uefi_boot};
use clb_vm_tests::{clb, disks, kit, testos};

const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn grub_efi_boots_counts_tries_and_falls_back() {
    require_uefi_boot();
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
    assert!(
        c.contains("clb-grub: slot a: 2 boots left unless it is marked good"),
        "GRUB counts the boots of a good slot too:\n{c}"
    );
    assert!(
        c.contains("root=clb boot=clb"),
        "flavour-agnostic arguments:\n{c}"
    );
    assert_eq!(clb::status(&kit, &disk)["tries_left"], 2);
    clb::mark_good(&kit, &disk);
    assert_eq!(
        clb::status(&kit, &disk)["tries_left"],
        3,
        "mark-good refills"
    );

    // v2 on trial: GRUB spends one of its three tries, the hook (clb.slot=b) none.
    clb::on_disk(
        &kit,
        &disk,
        &["upgrade", "-q", "--no-verify", "-d", &images[1]],
    );
    let c = boot_uefi(&disk, work, "v2", TIMEOUT).console;
    testos::assert_test_os(&c, "CLB-TEST-OS release=v2 slot=b");
    assert!(
        !c.contains("clb-initrd: slot b"),
        "the hook must not count when GRUB chose:\n{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["tries_left"], 2, "GRUB decremented the tries once: {s}");
    clb::mark_good(&kit, &disk);

    // The good slot b stops booting: its three boots fail (one QEMU run, rebooting on each
    // panic) and GRUB falls back to a, whose system sees the rollback.
    disks::break_slot(&disk, work, "b");
    let c = Qemu::new()
        .uefi()
        .rebooting()
        .disk(&disk)
        .boot(work, "good-slot-broken", TIMEOUT * 3)
        .console;
    for left in [2, 1, 0] {
        assert!(
            c.contains(&format!(
                "clb-grub: slot b: {left} boots left unless it is marked good"
            )),
            "boot {left}:\n{c}"
        );
    }
    assert_eq!(
        c.matches("clb-initrd: error: slot b: layer").count(),
        3,
        "{c}"
    );
    assert!(
        c.contains("clb-grub: slot b failed to boot: rolled back to slot a"),
        "{c}"
    );
    assert!(
        testos::test_os_line(&c)
            .starts_with("CLB-TEST-OS release=v1 slot=a mode=passive failure=b"),
        "{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(
        (&s["active"], &s["failed_slot"]),
        (&"a".into(), &"b".into()),
        "{s}"
    );
    assert_eq!(s["tries_left"], 2, "the fallback's first boot counted: {s}");
    clb::mark_good(&kit, &disk);

    // A broken v3 with one try (into b, over the broken release): GRUB spends it, v3 panics;
    // the next boot falls back to v1.
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
            .starts_with("CLB-TEST-OS release=v1 slot=a mode=passive failure=b"),
        "the rolled-back system sees passive_mode and upgrade_failure:\n{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "a", "{s}");
    assert_eq!(s["rolled_back"], true, "{s}");
    assert_eq!(s["failed_slot"], "b", "{s}");
}
