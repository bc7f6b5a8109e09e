//! The busybox test OS as layer directories, and the releases the tests publish of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clb_testsupport::Registry;

use crate::clb::push;
use crate::kit::Kit;

/// The test OS's init: reports release, slot, mode, the try state, what survived the last
/// boot on persistent paths (/home, /etc) and on the root's tmpfs overlay (/ephemeral.txt),
/// the image's /usr/local/share/release.txt under the host's /usr/local/host.txt (written on
/// the first boot only) and the hook's systemd mount units for the persistent mounts, then
/// powers off.
pub const INIT_OK: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
. /etc/clb-test-release
slot=$(cat /run/clb/booted_slot 2>/dev/null || echo none)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
failure=none
[ -e /run/clb/upgrade_failure ] && failure=$(cat /run/clb/upgrade_failure)
persist=$(cat /home/persist.txt 2>/dev/null || echo none)
etc=$(cat /etc/persist.txt 2>/dev/null || echo none)
ephemeral=$(cat /ephemeral.txt 2>/dev/null || echo none)
release_txt=$(cat /usr/local/share/release.txt 2>/dev/null || echo none)
host_txt=$(cat /usr/local/host.txt 2>/dev/null || echo none)
dropins=none
if [ -d /run/systemd/system ]; then
    cd /run/systemd/system && set -- *.mount && IFS=, && dropins="$*" && unset IFS; cd /
fi
echo "CLB-TEST-OS release=$RELEASE slot=$slot mode=$mode failure=$failure persistent=$persist etc=$etc ephemeral=$ephemeral release_txt=$release_txt host_txt=$host_txt dropins=$dropins env_slot=$CLB_SLOT uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "$RELEASE" > /home/persist.txt
echo "$RELEASE" > /etc/persist.txt
echo "$RELEASE" > /ephemeral.txt
[ -e /usr/local/host.txt ] || echo "$RELEASE" > /usr/local/host.txt
# A clean shutdown: what a real system's shutdown does before powering off.
[ -d /run/initramfs/clb/persistent ] && mount -o remount,ro /run/initramfs/clb/persistent
mount -o remount,ro /run/initramfs/clb/state
sync
poweroff -f
"#;

/// A release whose init exits: the kernel panics and (`panic=N`) reboots.
pub const INIT_BROKEN: &str = r#"#!/bin/sh
. /etc/clb-test-release
echo "CLB-TEST-OS broken release=$RELEASE: init exits uptime=$(cut -d' ' -f1 /proc/uptime)"
exit 1
"#;

/// Directories of the base layer: what the hook and the test OS mount on or write to.
/// `/var/lib`, a default persistent path, is left out on purpose: the hook must create a
/// persistent path the image lacks.
pub const BASE_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "home",
    "root",
    "opt",
    "var/log",
    "usr/local",
    "boot",
];

/// Busybox applets of the base layer (what [`INIT_OK`] and [`INIT_BROKEN`] run).
pub const BASE_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "mount", "poweroff", "sync", "ls", "sleep", "cut",
];

/// Deterministic, incompressible bytes (xorshift64*), so layers of different releases differ
/// and a layer's size is what it stores.
pub fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `dirs` and the static busybox in /bin with `applets` linked to it.
pub fn busybox_root(dir: &Path, dirs: &[&str], applets: &[&str]) {
    for d in dirs {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let bb = clb_mkinitrd::find_busybox().expect("a static busybox (busybox-static)");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// Base layer: busybox and the directories the hook and the test OS need.
pub fn base_layer(dir: &Path) {
    busybox_root(dir, BASE_DIRS, BASE_APPLETS);
}

/// Top layer: /sbin/init ([`INIT_OK`], or [`INIT_BROKEN`]), /etc/clb-test-release and
/// /usr/local/share/release.txt.
pub fn top_layer(dir: &Path, release: &str, broken: bool) {
    top_layer_with_init(dir, release, if broken { INIT_BROKEN } else { INIT_OK });
}

/// Top layer with the init script `init`, /etc/clb-test-release and
/// /usr/local/share/release.txt (the image's own file under a persistent path).
pub fn top_layer_with_init(dir: &Path, release: &str, init: &str) {
    std::fs::create_dir_all(dir.join("sbin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("usr/local/share")).unwrap();
    std::fs::write(
        dir.join("usr/local/share/release.txt"),
        format!("{release}\n"),
    )
    .unwrap();
    let path = dir.join("sbin/init");
    std::fs::write(&path, init).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("etc/clb-test-release"),
        format!("RELEASE={release}\n"),
    )
    .unwrap();
}

/// A layer directory holding `files` (path relative to the layer root, content).
pub fn files_layer(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
}

/// The `CLB-TEST-OS release=…` line [`INIT_OK`] printed.
pub fn test_os_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("CLB-TEST-OS release="))
        .unwrap_or_else(|| panic!("the test OS did not report:\n{console}"))
}

/// The test OS line of `console`, which must start with `prefix`.
pub fn assert_test_os<'a>(console: &'a str, prefix: &str) -> &'a str {
    let line = test_os_line(console);
    assert!(line.starts_with(prefix), "{line}\n{console}");
    line
}

/// Push `os:RELEASE` for each (release, broken): one busybox base shared by all, then
/// `extra_layers`, then the release's own top layer (init and release file). Returns the
/// image references in that order.
pub fn releases(
    kit: &Kit,
    reg: &Registry,
    work: &Path,
    extra_layers: &[PathBuf],
    releases: &[(&str, bool)],
) -> Vec<String> {
    let base = work.join("base");
    base_layer(&base);
    releases
        .iter()
        .map(|(release, broken)| {
            let top = work.join(format!("top-{release}"));
            top_layer(&top, release, *broken);
            let mut layers = vec![base.clone()];
            layers.extend_from_slice(extra_layers);
            layers.push(top);
            push(kit, reg, &layers, &format!("os:{release}"))
        })
        .collect()
}

/// Releases v1, v2 and a broken v3 that carry their own kernel and initramfs in /boot (for
/// boots through a bootloader): a busybox base, a /boot layer, a release on top. Returns the
/// image references in that order.
pub fn bootable_releases(kit: &Kit, reg: &Registry, work: &Path) -> Vec<String> {
    let boot = work.join("boot");
    let v = &kit.kernel_version;
    files_layer(
        &boot,
        &[
            (
                &format!("boot/vmlinuz-{v}"),
                std::fs::read(&kit.kernel).unwrap(),
            ),
            (
                &format!("boot/initrd.img-{v}"),
                std::fs::read(&kit.initrd).unwrap(),
            ),
        ],
    );
    releases(
        kit,
        reg,
        work,
        &[boot],
        &[("v1", false), ("v2", false), ("v3", true)],
    )
}
