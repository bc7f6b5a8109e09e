//! The initramfs-tools way in (docs/boot.md, "Three ways in", 3), end to end in QEMU (TCG):
//! Debian's own `mkinitramfs` builds the initramfs from a configuration directory holding our
//! `packaging/initramfs-tools/hooks/clb` and `scripts/clb` as they would be installed under
//! /etc/initramfs-tools; the kernel command line says `boot=clb`, so initramfs-tools' /init
//! (PID 1, udev, module loading, the switch) sources /scripts/clb and its `mountroot` runs
//! `clb-initrd assemble --sysroot ${rootmnt}`. v1 comes up on slot a; after an upgrade v2 comes
//! up on slot b, on trial, its try counted by the hook; a boot that finds no state partition
//! ends in initramfs-tools' `panic` and, with `panic=5`, its reboot.
//!
//! mkinitramfs reads the kernel from fixed host paths (/lib/modules/VER, /boot/config-VER) and
//! the hook copies /usr/lib/clb/clb-initrd, where the package installs it. The Debian kernel of
//! the tests is only unpacked in its cache, so mkinitramfs runs in a private mount namespace
//! (`unshare -m`, the kit's `namespace` module) where overlays put the kernel's /lib/modules
//! and /boot and the static hook into /usr/lib and /boot: the host sees nothing,
//! and nothing is left to clean up when the namespace ends, whatever happened.
//!
//! Needs root, initramfs-tools-core (mkinitramfs), util-linux (unshare), kmod (depmod),
//! qemu-system-x86,
//! busybox-static, docker-registry, gdisk, e2fsprogs and apt (the Debian kernel is fetched once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clb_testsupport::require_tool;
use clb_vm_tests::cmd::{run, workspace};
use clb_vm_tests::namespace::{assert_listed, assert_no_leaked_mounts, run_with_kernel_installed};
use clb_vm_tests::{distro, kit};

const TIMEOUT: Duration = Duration::from_secs(300);

/// An initramfs-tools configuration directory with our hook and boot script installed as
/// /etc/initramfs-tools/{hooks,scripts}/clb would be; only the modules the VM needs
/// (MODULES=list: virtio for the disk; the hook adds loop, squashfs, overlay, ext4).
fn conf_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let pkg = workspace().join("packaging/initramfs-tools");
    for d in ["hooks", "scripts", "conf.d"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("initramfs.conf"),
        "MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\nRESUME=none\n",
    )
    .unwrap();
    std::fs::write(dir.join("modules"), "virtio_pci\nvirtio_blk\n").unwrap();
    for (from, to, mode) in [
        ("hooks/clb", "hooks/clb", 0o755),
        ("scripts/clb", "scripts/clb", 0o644),
    ] {
        std::fs::copy(pkg.join(from), dir.join(to)).unwrap();
        std::fs::set_permissions(dir.join(to), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn initramfs_tools_boot_clb_assembles_the_slot() {
    for tool in [
        "mkinitramfs",
        "lsinitramfs",
        "depmod",
        "unshare",
        "qemu-system-x86_64",
    ] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let mut kit = kit::prepare(work);

    // mkinitramfs -d CONF -o OUT VER, in the namespace.
    let conf = work.join("initramfs-tools");
    conf_dir(&conf);
    let initrd = work.join("initrd-initramfs-tools.img");
    let mut mkinitramfs = Command::new("mkinitramfs");
    mkinitramfs
        .arg("-d")
        .arg(&conf)
        .arg("-o")
        .arg(&initrd)
        .arg(&kit.kernel_version);
    run_with_kernel_installed(&kit, &work.join("ns"), &mkinitramfs);
    let listing = run(Command::new("lsinitramfs").arg(&initrd));
    assert_listed(
        &listing,
        &[
            "usr/lib/clb/clb-initrd",
            "scripts/clb",
            "/squashfs.ko",
            "/overlay.ko",
            "/loop.ko",
            "/virtio_blk.ko",
        ],
    );
    kit.initrd = initrd;

    // v1 on slot a, v2 on trial on slot b, a boot without state (the kit's shared scenario).
    let b = distro::boot_v1_v2_and_no_state(&kit, work, "itt", "boot=clb", TIMEOUT);
    assert!(
        b.no_state
            .console
            .contains("clb-initrd could not assemble the root")
            && b.no_state
                .console
                .contains("Rebooting automatically due to panic= boot argument"),
        "a failed assembly must end in panic() and panic=5's reboot:\n{}",
        b.no_state.console
    );
    assert!(
        !b.no_state.console.contains("CLB-TEST-OS"),
        "{}",
        b.no_state.console
    );
    assert_no_leaked_mounts(work);
}
