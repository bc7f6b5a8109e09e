//! Real boots in QEMU (TCG): a Debian kernel, an initramfs from `clb-mkinitrd` with the static
//! hook as /init, and a disk whose COS_STATE was filled by the real agent from a real registry.
//!
//! v1 boots from slot a; v2 (only the top layer changed) is staged and boots from slot b;
//! a broken v3 (its init exits, the kernel panics) burns its tries and the host comes back on
//! v2 with `rolled_back`. A file under a persistent path survives all of it, a file on the
//! tmpfs overlay does not survive a reboot.
//!
//! Needs root, qemu-system-x86, busybox-static, docker-registry, gdisk, e2fsprogs and apt
//! access for the kernel (cached in /var/cache/clb-test-kernel). Missing prerequisites fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use clb_testsupport::Registry;
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::qemu::{self, error_lines};
use clb_vm_tests::testos::{self, test_os_line};
use clb_vm_tests::{clb, disks};
use serde_json::Value;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Boot once with the kit's kernel; returns the serial console.
fn boot(kit: &Kit, disk: &Path, work: &Path, name: &str) -> String {
    boot_with(kit, disk, work, name, "")
}

fn boot_with(kit: &Kit, disk: &Path, work: &Path, name: &str, append: &str) -> String {
    qemu::boot_direct(kit, disk, work, name, append, BOOT_TIMEOUT).console
}

#[test]
fn qemu_boot_upgrade_and_rollback() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    // Dependency order from the real kernel's .modinfo (no modules.dep in the package).
    let pos = |m: &str| {
        kit.modules
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{m} not in {:?}", kit.modules))
    };
    assert!(pos("jbd2") < pos("ext4") && pos("mbcache") < pos("ext4"));
    assert!(pos("crc32c_generic") < pos("ext4"), "softdep crypto-crc32c");
    assert!(pos("virtio") < pos("virtio_blk"));

    let reg = Registry::start_plain();
    // One busybox base; each release changes only the top layer (its init and release file).
    let images = testos::releases(
        &kit,
        &reg,
        work,
        &[],
        &[("v1", false), ("v2", false), ("v3", true)],
    );
    let (v1, v2, v3) = (&images[0], &images[1], &images[2]);

    // A blank GPT disk (COS_STATE, COS_PERSISTENT): the first upgrade is the install.
    let disk = work.join("disk.img");
    disks::make_disk(&disk, 256, 64);
    clb::upgrade(&kit, &disk, v1, &[]);

    // (a) v1 on slot a, good from the start (first install).
    let c = boot(&kit, &disk, work, "v1");
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v1 slot=a mode=active failure=none persistent=none ephemeral=none env_slot=a",
    );
    assert!(c.contains("clb-initrd: booting slot a"), "{c}");
    assert!(
        !c.contains("not yet good"),
        "a good slot counts no tries: {c}"
    );
    assert!(qemu::hook_ms(&c) > 0, "switch_root time");
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "a");
    assert_eq!(s["good"], true);

    // A reboot: persistent /home kept, /etc (tmpfs overlay) forgotten.
    let c = boot(&kit, &disk, work, "v1-again");
    let line = test_os_line(&c);
    assert!(
        line.contains("release=v1 slot=a") && line.contains("persistent=v1 ephemeral=none"),
        "{line}"
    );

    // (b) v2 in slot b: counts a try, then marked good (the test OS has no clb, so offline).
    clb::upgrade(&kit, &disk, v2, &["--max-tries", "2"]);
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["tries_left"], 2);
    let c = boot(&kit, &disk, work, "v2");
    assert!(
        c.contains("clb-initrd: slot b not yet good: 1 tries left after this boot"),
        "{c}"
    );
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v2 slot=b mode=active failure=none persistent=v1",
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["good"], false);
    assert_eq!(s["tries_left"], 1, "the hook counted one try on disk: {s}");
    clb::mark_good(&kit, &disk);
    assert_eq!(clb::status(&kit, &disk)["good"], true);

    // (c) broken v3 into slot a, two tries: two panics, then back on v2.
    clb::upgrade(&kit, &disk, v3, &["--max-tries", "2"]);
    for (i, left) in [(1, 1), (2, 0)] {
        let c = boot(&kit, &disk, work, &format!("v3-try{i}"));
        assert!(c.contains("CLB-TEST-OS broken release=v3"), "{c}");
        assert!(c.contains("Kernel panic"), "init exit must panic: {c}");
        disks::fsck_state_repair(&disk);
        let s = clb::status(&kit, &disk);
        assert_eq!(s["active"], "a");
        assert_eq!(s["tries_left"], left, "{s}");
    }
    let c = boot(&kit, &disk, work, "rollback");
    assert!(
        c.contains("clb-initrd: slot a failed to boot: rolled back to slot b"),
        "{c}"
    );
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v2 slot=b mode=passive failure=a persistent=v2",
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["rolled_back"], true);
    assert_eq!(s["failed_slot"], "a");
    assert_eq!(s["good"], true);
    assert!(!c.contains("not yet good"), "{c}");

    // A failure in the hook: one clear line, then the kernel panics (and panic=5 reboots).
    let c = boot_with(
        &kit,
        &disk,
        work,
        "no-state",
        "clb.state_label=NO_SUCH_LABEL clb.timeout=1",
    );
    let errors = error_lines(&c);
    assert_eq!(errors.len(), 1, "{c}");
    assert!(
        errors[0].contains(
            "no partition labelled NO_SUCH_LABEL after 1 s (block devices: vda vda1 vda2)"
        ),
        "{c}"
    );
    assert!(c.contains("Kernel panic"), "{c}");
    assert!(!c.contains("CLB-TEST-OS"), "{c}");
    // The state partition was never found, so nothing on it changed.
    let without_dir = |mut v: Value| {
        v["state_dir"] = Value::Null; // a fresh private mount point each time
        v
    };
    assert_eq!(without_dir(clb::status(&kit, &disk)), without_dir(s));
}
