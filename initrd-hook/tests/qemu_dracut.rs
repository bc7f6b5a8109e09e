//! The dracut way in (docs/boot.md, "Three ways in", 2), end to end in QEMU (TCG): dracut
//! (package dracut-core) builds an initramfs with our module `packaging/dracut/90clb` as it
//! would be installed under /usr/lib/dracut/modules.d; the kernel command line says `root=clb`,
//! so dracut's /init (PID 1, udev, module loading, the switch) accepts the root in the cmdline
//! hook and its mount hook runs `clb-initrd assemble --sysroot $NEWROOT`. v1 comes up on slot
//! a; after an upgrade v2 comes up on slot b, on trial, its try counted by the hook; a boot
//! that finds no state partition ends in dracut's `die` (no shell) and the reboot of `panic=`.
//!
//! dracut reads the kernel from /lib/modules/VER and `check()` of the module looks for
//! clb-initrd on PATH, as a package would install it. The Debian kernel of the tests is only
//! unpacked in its cache, so dracut runs in a private mount namespace (`unshare -m`) where
//! overlays put the kernel's modules, our module and the static hook into /usr/lib, /boot and
//! /usr/bin: the host sees nothing, and nothing is left to clean up when the namespace ends,
//! whatever happened.
//!
//! Needs root, dracut-core (dracut, lsinitrd), util-linux (unshare), kmod (depmod),
//! qemu-system-x86, busybox-static, docker-registry, gdisk, e2fsprogs and apt (the Debian
//! kernel is fetched once).

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
/// $1 work dir (its `extra/dracut/modules.d/90clb` appears in /usr/lib), $2 the unpacked
/// kernel's lib dir (holding modules/VER), $3 its boot dir (config-VER), $4 the static
/// clb-initrd; the command follows.
const NAMESPACE: &str = r#"
w=$1 klib=$2 kboot=$3 hook=$4
shift 4
mkdir -p "$w/lib-upper" "$w/lib-work" "$w/bin"
cp "$hook" "$w/bin/clb-initrd"
# Writable (depmod may write modules.dep), the writes land in $w, not in the kernel cache.
mount -t overlay clb-test -o "lowerdir=$w/extra:/usr/lib:$klib,upperdir=$w/lib-upper,workdir=$w/lib-work" /usr/lib
mount -t overlay clb-test -o "lowerdir=$kboot:/boot" /boot
mount -t overlay clb-test -o "lowerdir=$w/bin:/usr/bin" /usr/bin
# The unpacked kernel has no modules.dep; dracut's kmod lookups need one.
depmod "$DEPMOD_KVER"
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

/// Copy `packaging/dracut/90clb` to `to` (file modes kept: dracut runs the hooks it installs).
fn copy_module(to: &Path) {
    let from = vmkit::workspace().join("packaging/dracut/90clb");
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
    let mut kit = vmkit::prepare(work);
    let (hook, vmlinuz, klib, kboot) = kernel_and_hook();
    assert_eq!(vmlinuz, kit.kernel);

    // dracut with exactly the modules a clb boot needs: base (the shell /init), udev-rules
    // (the disk appears, modules load), clb; the virtio disk driver added by name. No host
    // configuration (--conf /dev/null, an empty --confdir, --no-hostonly).
    let ns = work.join("ns");
    copy_module(&ns.join("extra/dracut/modules.d/90clb"));
    let confdir = work.join("dracut.conf.d");
    std::fs::create_dir_all(&confdir).unwrap();
    let initrd = work.join("initrd-dracut.img");
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
        .env("DEPMOD_KVER", &kit.kernel_version)
        .args(["dracut", "--force", "--kver", &kit.kernel_version])
        .args(["--conf", "/dev/null", "--confdir"])
        .arg(&confdir)
        .args(["--no-hostonly", "--no-early-microcode", "--gzip"])
        .args(["-m", "base udev-rules clb"])
        .args(["--add-drivers", "virtio_pci virtio_blk"])
        .arg(&initrd)
        .output()
        .expect("run unshare");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("---- dracut ----\n{log}");
    assert!(
        out.status.success(),
        "dracut failed ({}):\n{log}",
        out.status
    );
    assert!(
        log.contains("Including module: clb"),
        "dracut did not include the clb module:\n{log}"
    );
    assert_no_leaked_mounts(work);
    let listing = run(Command::new("lsinitrd").arg(&initrd));
    for want in [
        "usr/bin/clb-initrd",
        "hooks/cmdline/90-parse-clb.sh",
        "hooks/mount/90-mount-clb.sh",
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

    let b = vmkit::boot_direct(&kit, &disk, work, "dracut-v1", "root=clb", TIMEOUT);
    assert!(
        b.console.contains("clb-initrd: assembled slot a"),
        "the hook did not assemble through dracut:\n{}",
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
    let b = vmkit::boot_direct(&kit, &disk, work, "dracut-v2", "root=clb", TIMEOUT);
    assert!(
        b.console.contains("clb-initrd: slot b not yet good"),
        "{}",
        b.console
    );
    let line = vmkit::test_os_line(&b.console);
    assert!(
        line.starts_with("CLB-TEST-OS release=v2 slot=b mode=active failure=none"),
        "{line}\n{}",
        b.console
    );
    assert_eq!(vmkit::status(&kit, &disk)["active"], "b");

    // No state partition: the hook's one error line, dracut dies without a shell and the
    // machine reboots (panic=5; QEMU runs with -no-reboot and exits).
    let b = vmkit::boot_direct(
        &kit,
        &disk,
        work,
        "dracut-nostate",
        "root=clb clb.state_label=NO_SUCH_LABEL clb.timeout=2",
        TIMEOUT,
    );
    assert!(
        b.console
            .contains("clb-initrd: error: no partition labelled NO_SUCH_LABEL"),
        "{}",
        b.console
    );
    assert!(
        b.console
            .contains("Kernel panic - not syncing: Attempted to kill init"),
        "a failed assembly must end in a kernel panic (and panic=5's reboot), \
         not in dracut's emergency shell:\n{}",
        b.console
    );
    assert!(
        !b.console.contains("Dropping to debug shell") && !b.console.contains("CLB-TEST-OS"),
        "{}",
        b.console
    );
    assert_no_leaked_mounts(work);
}
