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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clb_testsupport::{Registry, require_tool};
use serde_json::Value;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Run a command, panic with its output if it fails, return stdout.
fn run(cmd: &mut Command) -> String {
    let printable = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {printable}: {e}"));
    assert!(
        out.status.success(),
        "{printable} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Kit {
    kernel: PathBuf,
    initrd: PathBuf,
    clb: PathBuf,
    modules: Vec<String>,
}

fn prepare(work: &Path) -> Kit {
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "docker-registry",
        "sgdisk",
        "mkfs.ext4",
        "e2fsck",
        "losetup",
        "apt-get",
        "dpkg",
    ] {
        require_tool(tool);
    }
    let root = workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .args(["build", "-q", "-p", "clb"])
        .current_dir(&root));
    let clb = root.join("target/debug/clb");
    let hook = run(&mut Command::new(root.join("initrd-hook/build-static.sh")));
    let hook = PathBuf::from(hook.trim());
    let kernel_out = run(&mut Command::new(root.join("tests/vm/fetch-kernel.sh")));
    let mut lines = kernel_out.lines();
    let kernel = PathBuf::from(lines.next().expect("vmlinuz line"));
    let modules_dir = PathBuf::from(lines.next().expect("modules line"));

    let initrd = work.join("initrd.img");
    let mut opts = clb_mkinitrd::MkinitrdOptions::new(&hook, &initrd);
    opts.modules_dir = Some(modules_dir);
    opts.busybox = Some(clb_mkinitrd::find_busybox().expect("a static busybox"));
    let stats = clb_mkinitrd::build(&opts).expect("mkinitrd");
    eprintln!(
        "initrd: {} modules {:?}, {} bytes",
        stats.modules.len(),
        stats.modules,
        stats.compressed_bytes
    );
    Kit {
        kernel,
        initrd,
        clb,
        modules: stats.modules,
    }
}

const INIT_OK: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
. /etc/clb-test-release
slot=$(cat /run/clb/booted_slot 2>/dev/null || echo none)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
failure=none
[ -e /run/clb/upgrade_failure ] && failure=$(cat /run/clb/upgrade_failure)
persist=$(cat /home/persist.txt 2>/dev/null || echo none)
ephemeral=$(cat /etc/ephemeral.txt 2>/dev/null || echo none)
echo "CLB-TEST-OS release=$RELEASE slot=$slot mode=$mode failure=$failure persistent=$persist ephemeral=$ephemeral env_slot=$CLB_SLOT"
echo "$RELEASE" > /home/persist.txt
echo "$RELEASE" > /etc/ephemeral.txt
# A clean shutdown: what a real system's shutdown does before powering off.
mount -o remount,ro /run/initramfs/clb/persistent
mount -o remount,ro /run/initramfs/clb/state
sync
poweroff -f
"#;

const INIT_BROKEN: &str = r#"#!/bin/sh
. /etc/clb-test-release
echo "CLB-TEST-OS broken release=$RELEASE: init exits"
exit 1
"#;

/// Two layer directories: a busybox base and a top layer with /sbin/init and the release.
fn test_os(work: &Path, release: &str, broken: bool) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let base = work.join(format!("os-{release}-base"));
    let top = work.join(format!("os-{release}-top"));
    for d in [
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
    ] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let bb = clb_mkinitrd::find_busybox().expect("static busybox");
    std::fs::copy(&bb, base.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "mount", "poweroff", "sync", "ls", "sleep",
    ] {
        std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(top.join("sbin")).unwrap();
    std::fs::create_dir_all(top.join("etc")).unwrap();
    let init = top.join("sbin/init");
    std::fs::write(&init, if broken { INIT_BROKEN } else { INIT_OK }).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        top.join("etc/clb-test-release"),
        format!("RELEASE={release}\n"),
    )
    .unwrap();
    (base, top)
}

fn publish(kit: &Kit, reg: &Registry, work: &Path, release: &str, broken: bool) -> String {
    let (base, top) = test_os(work, release, broken);
    let image = reg.image_ref(&format!("os:{release}"));
    run(Command::new(&kit.clb)
        .arg("push")
        .arg(&base)
        .arg(&top)
        .arg(&image));
    image
}

fn status(kit: &Kit, disk: &Path) -> Value {
    let out = run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["status", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json: {e}: {out}"))
}

/// Boot once; returns the serial console. QEMU exits on poweroff or (with -no-reboot) on the
/// panic reboot; killed after BOOT_TIMEOUT.
fn boot(kit: &Kit, disk: &Path, work: &Path, name: &str) -> String {
    boot_with(kit, disk, work, name, "")
}

fn boot_with(kit: &Kit, disk: &Path, work: &Path, name: &str, append: &str) -> String {
    let console = work.join(format!("console-{name}.log"));
    let _ = std::fs::remove_file(&console);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=5 loglevel=4 {append}"))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let timed_out = loop {
        if child.try_wait().expect("wait qemu").is_some() {
            break false;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    eprintln!(
        "---- boot {name}: {:.1} s ----\n{}",
        start.elapsed().as_secs_f64(),
        text.lines()
            .filter(|l| l.contains("clb-initrd")
                || l.contains("CLB-TEST-OS")
                || l.contains("panic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !timed_out,
        "boot {name} hung (killed after {BOOT_TIMEOUT:?}):\n{text}"
    );
    text
}

fn test_os_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("CLB-TEST-OS release="))
        .unwrap_or_else(|| panic!("the test OS did not report:\n{console}"))
}

/// After a kernel panic COS_STATE's ext4 journal needs replaying; `clb --disk ... status`
/// mounts read-only and cannot replay it, so do what a host's boot-time fsck does.
fn fsck_state(disk: &Path) {
    let info = run(Command::new("sgdisk").args(["-i", "1"]).arg(disk));
    let sector = |key: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {info}"))
    };
    let (first, last) = (sector("First sector: "), sector("Last sector: "));
    let dev = run(Command::new("losetup")
        .args(["--find", "--show", "--offset"])
        .arg((first * 512).to_string())
        .arg("--sizelimit")
        .arg(((last - first + 1) * 512).to_string())
        .arg(disk));
    let dev = dev.trim();
    let st = Command::new("e2fsck")
        .args(["-p", dev])
        .status()
        .expect("e2fsck");
    run(Command::new("losetup").args(["-d", dev]));
    // 0: clean, 1: errors corrected (the journal replayed).
    assert!(matches!(st.code(), Some(0) | Some(1)), "e2fsck {dev}: {st}");
}

fn upgrade(kit: &Kit, disk: &Path, image: &str, extra: &[&str]) {
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["upgrade", "-d", image, "--no-verify"])
        .args(extra));
}

#[test]
fn qemu_boot_upgrade_and_rollback() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = prepare(work);
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
    let v1 = publish(&kit, &reg, work, "v1", false);
    let v2 = publish(&kit, &reg, work, "v2", false);
    let v3 = publish(&kit, &reg, work, "v3", true);

    let disk = work.join("disk.img");
    run(Command::new(workspace().join("tests/vm/make-disk.sh")).arg(&disk));
    upgrade(&kit, &disk, &v1, &[]);

    // (a) v1 on slot a, good from the start (first install).
    let c = boot(&kit, &disk, work, "v1");
    let line = test_os_line(&c);
    assert!(
        line.starts_with("CLB-TEST-OS release=v1 slot=a mode=active failure=none persistent=none ephemeral=none env_slot=a"),
        "{line}"
    );
    assert!(c.contains("clb-initrd: booting slot a"), "{c}");
    assert!(
        !c.contains("not yet good"),
        "a good slot counts no tries: {c}"
    );
    assert!(c.contains("ms"), "switch_root time");
    let s = status(&kit, &disk);
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
    upgrade(&kit, &disk, &v2, &["--max-tries", "2"]);
    let s = status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["tries_left"], 2);
    let c = boot(&kit, &disk, work, "v2");
    assert!(
        c.contains("clb-initrd: slot b not yet good: 1 tries left after this boot"),
        "{c}"
    );
    let line = test_os_line(&c);
    assert!(
        line.starts_with("CLB-TEST-OS release=v2 slot=b mode=active failure=none persistent=v1"),
        "{line}"
    );
    let s = status(&kit, &disk);
    assert_eq!(s["active"], "b");
    assert_eq!(s["good"], false);
    assert_eq!(s["tries_left"], 1, "the hook counted one try on disk: {s}");
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(&disk)
        .arg("mark-good"));
    assert_eq!(status(&kit, &disk)["good"], true);

    // (c) broken v3 into slot a, two tries: two panics, then back on v2.
    upgrade(&kit, &disk, &v3, &["--max-tries", "2"]);
    for (i, left) in [(1, 1), (2, 0)] {
        let c = boot(&kit, &disk, work, &format!("v3-try{i}"));
        assert!(c.contains("CLB-TEST-OS broken release=v3"), "{c}");
        assert!(c.contains("Kernel panic"), "init exit must panic: {c}");
        fsck_state(&disk);
        let s = status(&kit, &disk);
        assert_eq!(s["active"], "a");
        assert_eq!(s["tries_left"], left, "{s}");
    }
    let c = boot(&kit, &disk, work, "rollback");
    assert!(
        c.contains("clb-initrd: slot a failed to boot: rolled back to slot b"),
        "{c}"
    );
    let line = test_os_line(&c);
    assert!(
        line.starts_with("CLB-TEST-OS release=v2 slot=b mode=passive failure=a persistent=v2"),
        "{line}"
    );
    let s = status(&kit, &disk);
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
    let errors: Vec<&str> = c
        .lines()
        .filter(|l| l.contains("clb-initrd: error:"))
        .collect();
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
    assert_eq!(without_dir(status(&kit, &disk)), without_dir(s));
}
