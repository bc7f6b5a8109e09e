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
//! the hook copies /usr/bin/clb-initrd, as a package would install it. The Debian kernel of the
//! tests is only unpacked in its cache, so mkinitramfs runs in a private mount namespace
//! (`unshare -m`) where overlays put the kernel's /lib/modules and /boot and the static hook
//! into /usr/lib, /boot and /usr/bin: the host sees nothing, and nothing is left to clean up
//! when the namespace ends, whatever happened.
//!
//! Needs root, initramfs-tools-core (mkinitramfs), util-linux (unshare), qemu-system-x86,
//! busybox-static, docker-registry, gdisk, e2fsprogs and apt (the Debian kernel is fetched once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/vm/vmkit.rs"]
mod vmkit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use vmkit::run;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs "$@" in the private mount namespace `unshare -m --propagation private` gives it:
/// $1 work dir, $2 the unpacked kernel's lib dir (holding modules/VER), $3 its boot dir
/// (config-VER), $4 the static clb-initrd; the command follows.
const NAMESPACE: &str = r#"
w=$1 klib=$2 kboot=$3 hook=$4
shift 4
mkdir -p "$w/lib-upper" "$w/lib-work" "$w/bin"
cp "$hook" "$w/bin/clb-initrd"
# Writable (depmod may write modules.dep), the writes land in $w, not in the kernel cache.
mount -t overlay clb-test -o "lowerdir=/usr/lib:$klib,upperdir=$w/lib-upper,workdir=$w/lib-work" /usr/lib
mount -t overlay clb-test -o "lowerdir=$kboot:/boot" /boot
mount -t overlay clb-test -o "lowerdir=$w/bin:/usr/bin" /usr/bin
exec "$@"
"#;

/// Static hook, kernel image and the unpacked kernel's lib and boot dirs (the scripts print
/// their results again at once: both were run by `vmkit::prepare`).
fn kernel_and_hook() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let root = vmkit::workspace();
    let hook = run(&mut Command::new(root.join("initrd-hook/build-static.sh")));
    let out = run(&mut Command::new(root.join("tests/vm/fetch-kernel.sh")));
    let mut lines = out.lines();
    let vmlinuz = PathBuf::from(lines.next().expect("vmlinuz line"));
    let modules = PathBuf::from(lines.next().expect("modules line"));
    let klib = modules.parent().and_then(Path::parent).expect("lib dir");
    let kboot = vmlinuz.parent().expect("boot dir");
    (
        PathBuf::from(hook.trim()),
        vmlinuz.clone(),
        klib.to_path_buf(),
        kboot.to_path_buf(),
    )
}

/// Our mounts must not have leaked out of the namespace.
fn assert_no_leaked_mounts(work: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(" clb-test ") || l.contains(&*work.to_string_lossy()))
        .collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:#?}");
}

/// An initramfs-tools configuration directory with our hook and boot script installed as
/// /etc/initramfs-tools/{hooks,scripts}/clb would be; only the modules the VM needs
/// (MODULES=list: virtio for the disk; the hook adds loop, squashfs, overlay, ext4).
fn conf_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let pkg = vmkit::workspace().join("packaging/initramfs-tools");
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
        "unshare",
        "qemu-system-x86_64",
    ] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let mut kit = vmkit::prepare(work);
    let (hook, vmlinuz, klib, kboot) = kernel_and_hook();
    assert_eq!(vmlinuz, kit.kernel);

    // mkinitramfs -d CONF -o OUT VER, in the namespace.
    let conf = work.join("initramfs-tools");
    conf_dir(&conf);
    let initrd = work.join("initrd-initramfs-tools.img");
    let ns = work.join("ns");
    std::fs::create_dir_all(&ns).unwrap();
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-euc",
            NAMESPACE,
            "sh",
        ])
        .args([&ns, &klib, &kboot, &hook])
        .arg("mkinitramfs")
        .arg("-d")
        .arg(&conf)
        .arg("-o")
        .arg(&initrd)
        .arg(&kit.kernel_version)
        .output()
        .expect("run unshare");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("---- mkinitramfs ----\n{log}");
    assert!(
        out.status.success(),
        "mkinitramfs failed ({}):\n{log}",
        out.status
    );
    assert_no_leaked_mounts(work);
    let listing = run(Command::new("lsinitramfs").arg(&initrd));
    for want in [
        "usr/bin/clb-initrd",
        "scripts/clb",
        "/squashfs.ko",
        "/overlay.ko",
        "/loop.ko",
        "/virtio_blk.ko",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(want)),
            "{want} missing from the initramfs:\n{listing}"
        );
    }
    kit.initrd = initrd;

    // The usual disk: busybox base, a release on top, deployed to slot a.
    let reg = Registry::start_plain();
    let base = work.join("base");
    vmkit::base_layer(&base);
    let mut images = Vec::new();
    for release in ["v1", "v2"] {
        let top = work.join(format!("top-{release}"));
        vmkit::top_layer(&top, release, false);
        images.push(vmkit::push(
            &kit,
            &reg,
            &[base.clone(), top],
            &format!("os:{release}"),
        ));
    }
    let disk = work.join("disk.img");
    vmkit::deploy(&kit, &disk, &images[0], 96);

    let b = vmkit::boot_direct(&kit, &disk, work, "itt-v1", "boot=clb", TIMEOUT);
    assert!(
        b.console.contains("clb-initrd: assembled slot a"),
        "the hook did not assemble through initramfs-tools:\n{}",
        b.console
    );
    let line = vmkit::test_os_line(&b.console);
    assert!(
        line.starts_with("CLB-TEST-OS release=v1 slot=a mode=active failure=none"),
        "{line}\n{}",
        b.console
    );

    // An upgrade: v2 on trial on slot b; the hook counts the try (no bootloader here).
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(&disk)
        .arg("mark-good"));
    vmkit::upgrade(&kit, &disk, &images[1], &[]);
    let b = vmkit::boot_direct(&kit, &disk, work, "itt-v2", "boot=clb", TIMEOUT);
    let line = vmkit::test_os_line(&b.console);
    assert!(
        line.starts_with("CLB-TEST-OS release=v2 slot=b mode=active failure=none"),
        "{line}\n{}",
        b.console
    );
    let s = vmkit::status(&kit, &disk);
    assert_eq!(s["active"], "b", "{s}");

    // No state partition: the hook's one error line, initramfs-tools' panic() and, with
    // panic=5, its reboot instead of a shell (QEMU runs with -no-reboot and exits).
    let b = vmkit::boot_direct(
        &kit,
        &disk,
        work,
        "itt-nostate",
        "boot=clb clb.state_label=NO_SUCH_LABEL clb.timeout=2",
        TIMEOUT,
    );
    assert!(
        b.console
            .contains("clb-initrd: error: no partition labelled NO_SUCH_LABEL"),
        "{}",
        b.console
    );
    assert!(
        b.console.contains("clb-initrd could not assemble the root")
            && b.console
                .contains("Rebooting automatically due to panic= boot argument"),
        "a failed assembly must end in panic() and panic=5's reboot:\n{}",
        b.console
    );
    assert!(!b.console.contains("CLB-TEST-OS"), "{}", b.console);
    assert_no_leaked_mounts(work);
}
