//! Shared helpers of the QEMU tests that came after `qemu_boot.rs` (power loss, GRUB,
//! figures): the same kit (static hook, Debian kernel, initramfs, busybox test OS, local
//! registry), plus partition access with guards that always detach what they attached.
//!
//! Included with `#[path = "../../tests/vm/vmkit.rs"] mod vmkit;` from the test files of
//! `initrd-hook/tests/`; not every test uses every helper.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clb_testsupport::{Registry, require_tool};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Run a command, panic with its output if it fails, return stdout.
pub fn run(cmd: &mut Command) -> String {
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

pub struct Kit {
    /// Host kernel for direct (`-kernel`) boots.
    pub kernel: PathBuf,
    /// `6.1.0-…-amd64`.
    pub kernel_version: String,
    /// clb initramfs (hook as /init, default modules, busybox).
    pub initrd: PathBuf,
    pub clb: PathBuf,
    pub modules: Vec<String>,
}

/// Build clb and the static hook, fetch the kernel, build the initramfs into `work`.
pub fn prepare(work: &Path) -> Kit {
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "docker-registry",
        "sgdisk",
        "blkid",
        "mkfs.ext4",
        "e2fsck",
        "losetup",
        "mount",
        "umount",
        "apt-get",
        "dpkg",
        "tar2sqfs",
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
    let kernel_version = modules_dir
        .file_name()
        .expect("modules dir name")
        .to_string_lossy()
        .into_owned();

    let initrd = work.join("initrd.img");
    let mut opts = clb_mkinitrd::MkinitrdOptions::new(&hook, &initrd);
    opts.modules_dir = Some(modules_dir);
    opts.busybox = Some(clb_mkinitrd::find_busybox().expect("a static busybox"));
    let stats = clb_mkinitrd::build(&opts).expect("mkinitrd");
    Kit {
        kernel,
        kernel_version,
        initrd,
        clb,
        modules: stats.modules,
    }
}

/// The test OS's init: reports release, slot, mode and the try state, then powers off.
pub const INIT_OK: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
. /etc/clb-test-release
slot=$(cat /run/clb/booted_slot 2>/dev/null || echo none)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
failure=none
[ -e /run/clb/upgrade_failure ] && failure=$(cat /run/clb/upgrade_failure)
echo "CLB-TEST-OS release=$RELEASE slot=$slot mode=$mode failure=$failure env_slot=$CLB_SLOT uptime=$(cut -d' ' -f1 /proc/uptime)"
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

/// Base layer: busybox and the directories the hook and the test OS need.
pub fn base_layer(dir: &Path) {
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
        "boot",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let bb = clb_mkinitrd::find_busybox().expect("static busybox");
    std::fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "mount", "poweroff", "sync", "ls", "sleep", "cut",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// Top layer: /sbin/init and /etc/clb-test-release.
pub fn top_layer(dir: &Path, release: &str, broken: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("sbin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    let init = dir.join("sbin/init");
    std::fs::write(&init, if broken { INIT_BROKEN } else { INIT_OK }).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
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

/// `clb push DIR... IMAGE` (tar+gzip layers, converted at upgrade) and return the reference.
pub fn push(kit: &Kit, reg: &Registry, dirs: &[PathBuf], name: &str) -> String {
    let image = reg.image_ref(name);
    run(Command::new(&kit.clb).arg("push").args(dirs).arg(&image));
    image
}

pub fn status(kit: &Kit, disk: &Path) -> serde_json::Value {
    let out = run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["status", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json: {e}: {out}"))
}

/// `clb --disk DISK deploy` onto a fresh sparse image: COS_OEM, COS_STATE, COS_PERSISTENT,
/// no bootloader (the tests boot the kernel directly, or install one themselves).
pub fn deploy(kit: &Kit, disk: &Path, image: &str, state_mib: u32) {
    let _ = std::fs::remove_file(disk);
    let f = std::fs::File::create(disk).unwrap();
    f.set_len((u64::from(state_mib) + 8 + 32 + 2) * 1024 * 1024)
        .unwrap();
    drop(f);
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["deploy", "-q", "--no-verify", "-d", image])
        // Direct kernel boots: no ESP/GRUB (qemu_grub_efi.rs tests the bootloader).
        .args(["--bootloader", "none"])
        .args(["--oem-size", "8", "--recovery-size", "0", "--state-size"])
        .arg(state_mib.to_string()));
}

pub fn upgrade(kit: &Kit, disk: &Path, image: &str, extra: &[&str]) {
    run(Command::new(&kit.clb)
        .arg("--disk")
        .arg(disk)
        .args(["upgrade", "-q", "-d", image, "--no-verify"])
        .args(extra));
}

/// A QEMU boot: what was on the console and how long the VM ran.
pub struct Boot {
    pub console: String,
    pub elapsed: Duration,
}

/// Boot with `-kernel`/`-initrd` (the hook decides and counts). QEMU exits on poweroff or
/// (with -no-reboot) at the panic reboot; killed and failed after `timeout`.
pub fn boot_direct(
    kit: &Kit,
    disk: &Path,
    work: &Path,
    name: &str,
    append: &str,
    timeout: Duration,
) -> Boot {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=5 loglevel=4 {append}"));
    boot_qemu(cmd, disk, work, name, timeout, false)
}

/// Like [`boot_direct`], but the VM reboots on a kernel panic (`panic=5`) instead of exiting,
/// as a real machine does: one run covers a series of failed boots and the rollback, until
/// an init powers off.
pub fn boot_direct_rebooting(
    kit: &Kit,
    disk: &Path,
    work: &Path,
    name: &str,
    append: &str,
    timeout: Duration,
) -> Boot {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(&kit.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=5 loglevel=4 {append}"));
    boot_qemu(cmd, disk, work, name, timeout, true)
}

/// Boot `disk` with QEMU's BIOS (whatever bootloader the disk has).
pub fn boot_bios(disk: &Path, work: &Path, name: &str, timeout: Duration) -> Boot {
    boot_qemu(
        Command::new("qemu-system-x86_64"),
        disk,
        work,
        name,
        timeout,
        false,
    )
}

fn boot_qemu(
    mut cmd: Command,
    disk: &Path,
    work: &Path,
    name: &str,
    timeout: Duration,
    reboot: bool,
) -> Boot {
    let console = work.join(format!("console-{name}.log"));
    let _ = std::fs::remove_file(&console);
    let start = Instant::now();
    let mut child = cmd
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none"])
        .args(if reboot { &[][..] } else { &["-no-reboot"][..] })
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let timed_out = loop {
        if child.try_wait().expect("wait qemu").is_some() {
            break false;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    eprintln!(
        "---- boot {name}: {:.1} s ----\n{}",
        elapsed.as_secs_f64(),
        text.lines()
            .filter(|l| l.contains("clb-initrd")
                || l.contains("CLB-TEST-OS")
                || l.contains("clb-grub")
                || l.contains("panic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !timed_out,
        "boot {name} hung (killed after {timeout:?}):\n{text}"
    );
    Boot {
        console: text,
        elapsed,
    }
}

pub fn test_os_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("CLB-TEST-OS release="))
        .unwrap_or_else(|| panic!("the test OS did not report:\n{console}"))
}

/// Byte offset and size of the partition whose filesystem label is `label` (sgdisk + blkid,
/// independent of clb).
pub fn partition_range(disk: &Path, label: &str) -> (u64, u64) {
    let table = run(Command::new("sgdisk").arg("-p").arg(disk));
    let mut found = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(first), Some(last)) = (
            f.get(1).and_then(|s| s.parse::<u64>().ok()),
            f.get(2).and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if f.first().and_then(|s| s.parse::<u32>().ok()).is_none() {
            continue;
        }
        let offset = first * 512;
        let out = Command::new("blkid")
            .args(["-p", "-s", "LABEL", "-o", "value", "-O"])
            .arg(offset.to_string())
            .arg(disk)
            .output()
            .expect("blkid");
        if String::from_utf8_lossy(&out.stdout).trim() == label {
            found.push((offset, (last - first + 1) * 512));
        }
    }
    assert_eq!(found.len(), 1, "partitions labelled {label} in {table}");
    found[0]
}

/// A loop device over a byte range of a file; detached on drop.
pub struct LoopGuard {
    pub dev: String,
}

impl LoopGuard {
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> LoopGuard {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(size.to_string());
        if read_only {
            cmd.arg("--read-only");
        }
        let dev = run(cmd.arg(file)).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
        LoopGuard { dev }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mount; unmounted (and its directory removed) on drop, before the loop guard it sits on
/// when declared after it.
pub struct MountGuard {
    pub dir: PathBuf,
}

impl MountGuard {
    pub fn mount(dev: &str, dir: &Path, opts: &str) -> MountGuard {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount").args(["-o", opts, dev]).arg(dir));
        MountGuard {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The state partition of `disk`, mounted (read-only unless `rw`) at `dir` until dropped.
pub struct StateMount {
    // Field order = drop order: unmount first, then detach.
    pub mount: MountGuard,
    pub dev: LoopGuard,
}

impl StateMount {
    pub fn open(disk: &Path, dir: &Path, rw: bool) -> StateMount {
        let (offset, size) = partition_range(disk, "COS_STATE");
        let dev = LoopGuard::attach(disk, offset, size, !rw);
        let mount = MountGuard::mount(&dev.dev, dir, if rw { "rw" } else { "ro" });
        StateMount { mount, dev }
    }

    pub fn path(&self) -> &Path {
        &self.mount.dir
    }
}

/// `e2fsck -f -n` on COS_STATE: the filesystem must be consistent (exit 0) as it is.
pub fn fsck_state_clean(disk: &Path) -> Result<(), String> {
    let (offset, size) = partition_range(disk, "COS_STATE");
    let dev = LoopGuard::attach(disk, offset, size, true);
    let out = Command::new("e2fsck")
        .args(["-f", "-n", &dev.dev])
        .stdin(Stdio::null())
        .output()
        .expect("e2fsck");
    drop(dev);
    if out.status.code() == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "e2fsck -fn: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// After a kernel panic, replay COS_STATE's journal as a host's boot-time fsck would.
pub fn fsck_state_repair(disk: &Path) {
    let (offset, size) = partition_range(disk, "COS_STATE");
    let dev = LoopGuard::attach(disk, offset, size, false);
    let st = Command::new("e2fsck")
        .args(["-p", &dev.dev])
        .status()
        .expect("e2fsck");
    drop(dev);
    assert!(matches!(st.code(), Some(0) | Some(1)), "e2fsck -p: {st}");
}

/// Loop devices (`/dev/loopN`) whose backing file is `file` or starts with one of `prefixes`.
pub fn loops_backed_by(file: Option<&Path>, prefixes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    let canon = file.map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let b = b.trim_end_matches('\n');
        let b = b.strip_suffix(" (deleted)").unwrap_or(b);
        let hit = canon.as_deref().is_some_and(|c| Path::new(b) == c)
            || prefixes.iter().any(|p| b.starts_with(p.as_str()));
        if hit {
            out.push(format!("/dev/{name}"));
        }
    }
    out.sort();
    out
}

/// One line of /proc/self/mountinfo: mount point, filesystem type, source, super options.
pub struct MountInfo {
    pub point: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

pub fn mounts() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next()?);
            let options = r.next().unwrap_or("").to_string();
            Some(MountInfo {
                point,
                fstype,
                source,
                options,
            })
        })
        .collect()
}

/// Wait (up to 5 s) until loop device `dev` has no backing file any more.
pub fn wait_loop_released(dev: &str) {
    let name = dev.trim_start_matches("/dev/");
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    let start = Instant::now();
    while sys.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Releases v1, v2 and a broken v3 that carry their own kernel and initramfs in /boot (for
/// boots through a bootloader): a busybox base, a /boot layer, a release on top. Returns the
/// image references in that order.
pub fn bootable_releases(kit: &Kit, reg: &Registry, work: &Path) -> Vec<String> {
    let base = work.join("base");
    base_layer(&base);
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
    [("v1", false), ("v2", false), ("v3", true)]
        .into_iter()
        .map(|(release, broken)| {
            let top = work.join(format!("top-{release}"));
            top_layer(&top, release, broken);
            push(
                kit,
                reg,
                &[base.clone(), boot.clone(), top],
                &format!("os:{release}"),
            )
        })
        .collect()
}
