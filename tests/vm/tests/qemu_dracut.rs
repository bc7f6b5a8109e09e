//! The dracut way in (docs/boot.md, "Three ways in", 2), end to end in QEMU (TCG): dracut
//! (package dracut-core) builds an initramfs with our module `packaging/dracut/90clb` as it
//! would be installed under /usr/lib/dracut/modules.d; the kernel command line says `root=clb`,
//! so dracut's /init (PID 1, udev, module loading, the switch) accepts the root in the cmdline
//! hook and its mount hook runs `clb-initrd assemble --sysroot $NEWROOT`. v1 comes up on slot
//! a; after an upgrade v2 comes up on slot b, on trial, its try counted by the hook; a boot
//! that finds no state partition ends in dracut's `die` (no shell) and the reboot of `panic=`.
//!
//! dracut reads the kernel from /lib/modules/VER and `check()` of the module looks for
//! /usr/lib/clb/clb-initrd, where the package installs it. The Debian kernel of the tests is only
//! unpacked in its cache, so dracut runs in a private mount namespace (`unshare -m`, the kit's
//! `namespace` module) where
//! overlays put the kernel's modules, our module and the static hook into /usr/lib and
//! /boot: the host sees nothing, and nothing is left to clean up when the namespace ends,
//! whatever happened.
//!
//! Needs root, dracut-core (dracut, lsinitrd), util-linux (unshare), kmod (depmod),
//! qemu-system-x86, busybox-static, docker-registry, gdisk, e2fsprogs and apt (the Debian
//! kernel is fetched once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clb_testsupport::require_tool;
use clb_vm_tests::cmd::{run, workspace};
use clb_vm_tests::namespace::{assert_listed, assert_no_leaked_mounts, run_with_kernel_installed};
use clb_vm_tests::{distro, kit};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Copy `packaging/dracut/90clb` to `to` (file modes kept: dracut runs the hooks it installs).
fn copy_module(to: &Path) {
    let from = workspace().join("packaging/dracut/90clb");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn dracut_root_clb_assembles_the_slot() {
    for tool in [
        "dracut",
        "lsinitrd",
        "depmod",
        "unshare",
        "qemu-system-x86_64",
    ] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let mut kit = kit::prepare(work);

    // dracut with exactly the modules a clb boot needs: base (the shell /init), udev-rules
    // (the disk appears, modules load), clb; the virtio disk driver added by name. No host
    // configuration (--conf /dev/null, an empty --confdir, --no-hostonly).
    let ns = work.join("ns");
    copy_module(&ns.join("extra/dracut/modules.d/90clb"));
    let confdir = work.join("dracut.conf.d");
    std::fs::create_dir_all(&confdir).unwrap();
    let initrd = work.join("initrd-dracut.img");
    let mut dracut = Command::new("dracut");
    dracut
        .args(["--force", "--kver", &kit.kernel_version])
        .args(["--conf", "/dev/null", "--confdir"])
        .arg(&confdir)
        .args(["--no-hostonly", "--no-early-microcode", "--gzip"])
        .args(["-m", "base udev-rules clb"])
        .args(["--add-drivers", "virtio_pci virtio_blk"])
        .arg(&initrd);
    let log = run_with_kernel_installed(&kit, &ns, &dracut);
    assert!(
        log.contains("Including module: clb"),
        "dracut did not include the clb module:\n{log}"
    );
    let listing = run(Command::new("lsinitrd").arg(&initrd));
    assert_listed(
        &listing,
        &[
            "usr/lib/clb/clb-initrd",
            "hooks/cmdline/90-parse-clb.sh",
            "hooks/mount/90-mount-clb.sh",
            "/squashfs.ko",
            "/overlay.ko",
            "/loop.ko",
            "/virtio_blk.ko",
        ],
    );
    kit.initrd = initrd;

    // v1 on slot a, v2 on trial on slot b, a boot without state (the kit's shared scenario).
    let b = distro::boot_v1_v2_and_no_state(&kit, work, "dracut", "root=clb", TIMEOUT);
    assert!(
        b.no_state
            .console
            .contains("Kernel panic - not syncing: Attempted to kill init"),
        "a failed assembly must end in a kernel panic (and panic=5's reboot), \
         not in dracut's emergency shell:\n{}",
        b.no_state.console
    );
    assert!(
        !b.no_state.console.contains("Dropping to debug shell")
            && !b.no_state.console.contains("CLB-TEST-OS"),
        "{}",
        b.no_state.console
    );
    assert_no_leaked_mounts(work);
}
