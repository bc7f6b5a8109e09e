//! Real boots in QEMU (TCG): a Debian kernel, an initramfs from `clb-mkinitrd` with the static
//! hook as /init, and a disk whose COS_STATE was filled by the real agent from a real registry.
//!
//! v1 boots from slot a; v2 (only the top layer changed) is staged and boots from slot b; a
//! manual `clb rollback` boots v1 again; a broken v3 (its init exits, the kernel panics) is
//! staged over v2, burns its tries and the host comes back on v1 with `rolled_back`.
//!
//! Persistent state (docs/persistence.md): files under persistent paths (/home, /etc) survive
//! all of it, a file on the root's tmpfs overlay does not survive a reboot. /usr/local is an
//! overlay of the image's directory under the host's changes: the image's
//! /usr/local/share/release.txt follows the release booted (upgrade and rollback) while the
//! host's /usr/local/host.txt stays. The image's /etc/clb/persistent.env adds /srv, which the
//! image lacks; every persistent mount has its systemd mount unit.
//!
//! Needs root, qemu-system-x86, busybox-static, docker-registry, gdisk, e2fsprogs and apt
//! access for the kernel (cached in /var/cache/clb-test-kernel). Missing prerequisites fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use clb_testsupport::Registry;
use clb_vm_tests::disks::PartitionMount;
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::qemu::{self, error_lines};
use clb_vm_tests::testos;
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
    // The image maker's persistent paths: the defaults and /srv (not in the image).
    let layout = work.join("layout");
    testos::files_layer(
        &layout,
        &[(
            "etc/clb/persistent.env",
            b"# clb-initrd reads this before mounting over /etc\n\
              PERSISTENT_STATE_PATHS=\"/etc /var/lib /var/log /home /root /opt /usr/local /srv\"\n"
                .to_vec(),
        )],
    );
    // One busybox base; each release changes only the top layer (its init and release files).
    let images = testos::releases(
        &kit,
        &reg,
        work,
        &[layout],
        &[("v1", false), ("v2", false), ("v3", true)],
    );
    let (v1, v2, v3) = (&images[0], &images[1], &images[2]);
    let dropins = "dropins=etc.mount,home.mount,opt.mount,root.mount,srv.mount,\
                   usr-local.mount,var-lib.mount,var-log.mount ";

    // A blank GPT disk (COS_STATE, COS_PERSISTENT): the first upgrade is the install.
    let disk = work.join("disk.img");
    disks::make_disk(&disk, 256, 64);
    clb::upgrade(&kit, &disk, v1, &[]);

    // (a) v1 on slot a, good from the start (first install).
    let c = boot(&kit, &disk, work, "v1");
    let line = testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v1 slot=a mode=active failure=none persistent=none etc=none \
         ephemeral=none release_txt=v1 host_txt=none ",
    );
    assert!(
        line.contains(dropins) && line.contains("env_slot=a"),
        "{line}"
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

    // (b) v2 in slot b: counts a try, then marked good (the test OS has no clb, so offline).
    //     /home and /etc kept, the root's overlay forgotten; /usr/local shows v2's
    //     release.txt and still the host's host.txt.
    clb::upgrade(&kit, &disk, v2, &["--max-tries", "2"]);
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["tries_left"], 2);
    let c = boot(&kit, &disk, work, "v2");
    assert!(
        c.contains("clb-initrd: slot b (on trial): 1 boots left unless it is marked good"),
        "{c}"
    );
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v2 slot=b mode=active failure=none persistent=v1 etc=v1 \
         ephemeral=none release_txt=v2 host_txt=v1 ",
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["good"], false);
    assert_eq!(s["tries_left"], 1, "the hook counted one try on disk: {s}");
    clb::mark_good(&kit, &disk);
    assert_eq!(clb::status(&kit, &disk)["good"], true);

    // (c) A manual rollback to v1 (slot a): v1's release.txt again, the host's files kept.
    clb::on_disk(&kit, &disk, &["rollback"]);
    let c = boot(&kit, &disk, work, "rollback-v1");
    let line = testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v1 slot=a mode=active failure=none persistent=v2 etc=v2 \
         ephemeral=none release_txt=v1 host_txt=v1 ",
    );
    assert!(line.contains(dropins), "{line}");

    // (d) broken v3 into slot b (over v2), two tries: two panics, then back on v1.
    clb::upgrade(&kit, &disk, v3, &["--max-tries", "2"]);
    for (i, left) in [(1, 1), (2, 0)] {
        let c = boot(&kit, &disk, work, &format!("v3-try{i}"));
        assert!(c.contains("CLB-TEST-OS broken release=v3"), "{c}");
        assert!(c.contains("Kernel panic"), "init exit must panic: {c}");
        disks::fsck_state_repair(&disk);
        let s = clb::status(&kit, &disk);
        assert_eq!(s["active"], "b");
        assert_eq!(s["tries_left"], left, "{s}");
    }
    let c = boot(&kit, &disk, work, "rollback");
    assert!(
        c.contains("clb-initrd: slot b failed to boot: rolled back to slot a"),
        "{c}"
    );
    testos::assert_test_os(
        &c,
        "CLB-TEST-OS release=v1 slot=a mode=passive failure=b persistent=v1 etc=v1 \
         ephemeral=none release_txt=v1 host_txt=v1 ",
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(s["active"], "a");
    assert_eq!(s["rolled_back"], true);
    assert_eq!(s["failed_slot"], "b");
    assert_eq!(s["good"], true);
    assert!(!c.contains("not yet good"), "{c}");
    // The host's files are on COS_PERSISTENT, in the overlays' upper directories; the
    // image's release.txt never was copied there.
    {
        let mnt = PartitionMount::open(&disk, "COS_PERSISTENT", &work.join("mnt-p"), false);
        let read = |f: &str| std::fs::read_to_string(mnt.path().join(f)).ok();
        assert_eq!(
            read(".state/usr-local.overlay/upper/host.txt").as_deref(),
            Some("v1\n")
        );
        assert_eq!(
            read(".state/etc.overlay/upper/persist.txt").as_deref(),
            Some("v1\n")
        );
        assert_eq!(
            read(".state/usr-local.overlay/upper/share/release.txt"),
            None
        );
    }

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
