//! The scenario both distribution initramfs tests (dracut, initramfs-tools) boot, so they
//! differ only in how the initramfs is built and what its failure looks like: v1 deployed to
//! slot a comes up; after mark-good and an upgrade v2 comes up on trial on slot b (the hook
//! counts the try, no bootloader here); a boot whose state label matches nothing must fail.

use std::path::Path;
use std::time::Duration;

use clb_testsupport::Registry;

use crate::kit::Kit;
use crate::qemu::{self, Boot};
use crate::{clb, testos};

/// The consoles of the three boots.
pub struct DistroBoots {
    pub v1: Boot,
    pub v2: Boot,
    pub no_state: Boot,
}

/// Boots the scenario with `kit.initrd` and `cmdline` (`root=clb` or `boot=clb`); `name`
/// prefixes the console logs. Checks what both flavours share: the test OS of each release
/// on its slot, the active slot after the upgrade, and that the failed boot never reaches the
/// test OS and prints the hook's one error line.
pub fn boot_v1_v2_and_no_state(
    kit: &Kit,
    work: &Path,
    name: &str,
    cmdline: &str,
    timeout: Duration,
) -> DistroBoots {
    let reg = Registry::start_plain();
    let images = testos::releases(kit, &reg, work, &[], &[("v1", false), ("v2", false)]);
    let disk = work.join("disk.img");
    clb::deploy(kit, &disk, &images[0], 96);

    let v1 = qemu::boot_direct(kit, &disk, work, &format!("{name}-v1"), cmdline, timeout);
    assert!(
        v1.console.contains("clb-initrd: assembled slot a"),
        "the hook did not assemble through {name}:\n{}",
        v1.console
    );
    testos::assert_test_os(
        &v1.console,
        "CLB-TEST-OS release=v1 slot=a mode=active failure=none",
    );

    clb::mark_good(kit, &disk);
    clb::upgrade(kit, &disk, &images[1], &[]);
    let v2 = qemu::boot_direct(kit, &disk, work, &format!("{name}-v2"), cmdline, timeout);
    assert!(
        v2.console
            .contains("clb-initrd: slot b (on trial): 2 boots left unless it is marked good"),
        "{}",
        v2.console
    );
    testos::assert_test_os(
        &v2.console,
        "CLB-TEST-OS release=v2 slot=b mode=active failure=none",
    );
    let s = clb::status(kit, &disk);
    assert_eq!(s["active"], "b", "{s}");

    let no_state = qemu::boot_direct(
        kit,
        &disk,
        work,
        &format!("{name}-nostate"),
        &format!("{cmdline} clb.state_label=NO_SUCH_LABEL clb.timeout=2"),
        timeout,
    );
    assert!(
        no_state
            .console
            .contains("clb-initrd: error: no partition labelled NO_SUCH_LABEL"),
        "{}",
        no_state.console
    );
    assert!(
        !no_state.console.contains("CLB-TEST-OS"),
        "{}",
        no_state.console
    );
    DistroBoots { v1, v2, no_state }
}
