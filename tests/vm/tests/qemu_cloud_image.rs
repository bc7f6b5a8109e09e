//! A self-deploying cloud image, end to end in QEMU (TCG; issue 4 point 7), booted the way a
//! cloud VM boots it: UEFI firmware (OVMF), the disk's own GRUB, and a NoCloud CD.
//!
//! One busybox-based OS image serves as the recovery system and as the installed system. It
//! carries the real `clb` (the debug build, with its shared libraries) and the tools its
//! recovery path runs: util-linux `blkid` (the first-boot config uses `blkid -L`, which
//! busybox lacks), `losetup`, `blockdev`, `partx`, and `mkfs.ext4`; and in `/boot` the Debian
//! kernel (`tests/vm/scripts/fetch-kernel.sh`) and a clb initramfs with the CD drivers on top of the
//! default modules (`ata_piix` for the IDE controller of QEMU's `pc` machine, `sr_mod`,
//! `cdrom`, `isofs`, and their dependencies `libata`, `scsi_mod`). Staging copies them to
//! `boot/recovery/` on COS_RECOVERY and `boot/a/` on COS_STATE, where GRUB loads them. Its
//! `/sbin/init` prints the kernel command line and the config drive it sees, runs
//! `clb run-stage boot`, prints a marker line, and reboots if something asked it to (busybox
//! `reboot`, what `clb` falls back to without logind/systemctl, signals PID 1) or powers off.
//!
//! 1. The image is pushed to a local `docker-registry` with `clb push`, and
//!    `clb build-disk --kernel-args "console=ttyS0 loglevel=4"` writes a raw disk with the ESP
//!    (COS_GRUB: GRUB x86_64-efi, `grub.cfg`, `clb.env`), COS_OEM (the first-boot config) and
//!    COS_RECOVERY (the recovery slot) only.
//! 2. A NoCloud config drive: an ISO 9660 volume labelled `cidata` (`genisoimage`) holding a
//!    `#cloud-config` `user-data` whose `write_files`/`runcmd` (a `boot` step) write under
//!    `/usr/local`, a persistent path. It is attached as a **CD** (`-cdrom`: an ATAPI drive on
//!    the PIIX IDE controller), as clouds attach it.
//! 3. Boot 1: OVMF → `EFI/BOOT/BOOTX64.EFI` → GRUB finds no COS_STATE and boots the recovery
//!    slot from COS_RECOVERY with `clb.mode=recovery`; the first-boot config copies
//!    `user-data` from the CD (`/dev/sr0`) to `/oem/99_userdata.yaml` and runs
//!    `clb deploy --from-recovery`, which lays out COS_STATE and COS_PERSISTENT in the free
//!    space, installs slot `a` from the recovery slot and reboots (QEMU runs with
//!    `-no-reboot`, so it exits). `clb --disk status` shows slot `a`.
//! 4. Boot 2, normal, the CD still attached: GRUB reads `grubenv` on COS_STATE and boots
//!    slot `a` with its own kernel; `clb run-stage boot` applies the user data (the first-boot
//!    steps do not run again), and the test reads the files back from COS_PERSISTENT with its
//!    own loop mount.
//!
//! The first-boot config lays out the COS_STATE size given to build-disk (`--state-size`), so
//! the disk is a small sparse file; only what is written takes space.
//!
//! Needs root, qemu-system-x86, ovmf, busybox-static, docker-registry, gdisk, e2fsprogs,
//! util-linux, squashfs-tools-ng (`tar2sqfs`), genisoimage, what `build-disk` needs for the
//! ESP (grub-efi-amd64-bin, grub-common, mtools, dosfstools) and apt access for the kernel.
//! Missing prerequisites fail the test. `CLB_TEST_HOOK=/path/to/clb-initrd` boots a hook
//! built elsewhere instead of `initrd-hook/build-static.sh`'s (in every test of the kit);
//! `CLB_TEST_KEEP=1` keeps the work directory (consoles, disk).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Cloud, Instance, MetadataServer, Registry, require_tool};
use clb_vm_tests::cmd::run;
use clb_vm_tests::disks::PartitionMount;
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::qemu::{OVMF_CODE, OVMF_VARS, Qemu, metadata_net_args};
use clb_vm_tests::{clb, testos};

/// A TCG boot of this image takes 10–40 s (the deploy formats and copies inside the VM);
/// generous for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// What the initramfs needs on top of the default (virtio) modules to read the config drive
/// on a CD: the PIIX IDE controller of QEMU's `pc` machine (`-cdrom`), the SCSI CD-ROM
/// driver and ISO 9660 (`libata`, `scsi_mod` and `scsi_common` come in as dependencies); and
/// the network card, for the metadata service.
const EXTRA_MODULES: &[&str] = &["ata_piix", "sr_mod", "cdrom", "isofs", "virtio_net"];

const USER_DATA: &str = r#"#cloud-config
write_files:
  - path: /usr/local/hello-from-user-data
    content: "hello from cidata\n"
runcmd:
  - echo "slot=$(cat /run/clb/booted_slot)" > /usr/local/runcmd-saw
"#;

/// `/sbin/init` of the image, recovery and installed alike. The hook already mounted
/// `/proc`, `/sys`, `/dev` and `/run` (moved into the new root).
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# clb reboots with a plain `reboot` here (no logind, no systemctl): busybox signals PID 1
# with SIGTERM. The trap runs once the foreground command (clb run-stage) has finished.
reboot_requested=no
trap 'reboot_requested=yes' TERM
slot=$(cat /run/clb/booted_slot 2>/dev/null || echo none)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
echo "CLB-CLOUD-IMAGE init slot=$slot mode=$mode env_slot=$CLB_SLOT"
echo "CLB-CLOUD-IMAGE cmdline=$(cat /proc/cmdline)"
mods=""
for m in ata_piix libata sr_mod cdrom isofs; do grep -q "^$m " /proc/modules && mods="$mods $m"; done
echo "CLB-CLOUD-IMAGE cidata=$(blkid -L cidata 2>/dev/null || echo none) modules=$mods"
# The network a cloud's DHCP would configure; QEMU's link-local user network (see the test).
net=none
if [ -e /sys/class/net/eth0 ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add 169.254.0.15/16 dev eth0
    net=169.254.0.15
fi
echo "CLB-CLOUD-IMAGE net=$net"
clb run-stage boot
rc=$?
state=$(blkid -L COS_STATE 2>/dev/null || echo none)
persistent=$(blkid -L COS_PERSISTENT 2>/dev/null || echo none)
hello=$(cat /usr/local/hello-from-user-data 2>/dev/null || echo none)
runcmd=$(cat /usr/local/runcmd-saw 2>/dev/null || echo none)
userdata=no
[ -f /oem/99_userdata.yaml ] && userdata=yes
echo "CLB-CLOUD-IMAGE slot=$slot mode=$mode run_stage_exit=$rc reboot_requested=$reboot_requested state=$state persistent=$persistent oem_userdata=$userdata host=$(cat /proc/sys/kernel/hostname) hello=$hello runcmd=$runcmd"
# A clean shutdown: what a real system's shutdown does before the power goes.
for m in /oem /run/initramfs/clb/persistent /run/initramfs/clb/state; do
    grep -q " $m " /proc/mounts && mount -o remount,ro "$m"
done
sync
if [ "$reboot_requested" = yes ]; then
    echo "CLB-CLOUD-IMAGE rebooting"
    reboot -f
else
    echo "CLB-CLOUD-IMAGE powering off"
    poweroff -f
fi
sleep 30
"#;

/// Busybox applets of the image. Not `blkid`, `losetup`, `blockdev`: util-linux's are used
/// (Debian's busybox has no `blkid`, and its `losetup` lacks `--show`/`--sizelimit`).
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "mkdir", "cp", "cat", "echo", "ls", "reboot", "poweroff", "sync",
    "sleep", "test", "[", "true", "false", "rm", "mv", "ln", "chmod", "sed", "grep", "cut",
    "dmesg", "ip",
];

/// Host programs copied into the image with their shared libraries: (host name, image path).
const PROGRAMS: &[(&str, &str)] = &[
    ("blkid", "usr/sbin/blkid"),
    ("losetup", "usr/sbin/losetup"),
    ("blockdev", "usr/sbin/blockdev"),
    ("partx", "usr/bin/partx"),
    // mke2fs picks the filesystem from argv[0]: keep the mkfs.ext4 name.
    ("mkfs.ext4", "usr/sbin/mkfs.ext4"),
];

/// `ldd` of `binary`: every library path it resolves, plus the dynamic loader.
fn shared_libraries(binary: &Path) -> BTreeSet<PathBuf> {
    let out = run(Command::new("ldd").arg(binary));
    let mut libs = BTreeSet::new();
    for line in out.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    assert!(
        libs.iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")),
        "no dynamic loader in ldd {}: {out}",
        binary.display()
    );
    libs
}

/// Copy a host file (following symlinks) to `root` + `image_path`, keeping its mode.
fn copy_into(root: &Path, host: &Path, image_path: &Path) {
    let rel = image_path.strip_prefix("/").unwrap_or(image_path);
    let dest = root.join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(host, &dest)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", host.display(), dest.display()));
}

/// The OS image as four layer directories: busybox base, `/boot` (the Debian kernel and
/// `initrd`), tools (clb, util-linux, e2fsprogs, their libraries), and the top with
/// /sbin/init.
fn cloud_os(kit: &Kit, initrd: &Path, work: &Path) -> Vec<PathBuf> {
    let base = work.join("os-base");
    let boot = work.join("os-boot");
    let tools = work.join("os-tools");
    let top = work.join("os-top");
    let dirs: Vec<&str> = testos::BASE_DIRS
        .iter()
        .copied()
        .chain(["usr/bin", "usr/sbin", "oem"])
        .collect();
    testos::busybox_root(&base, &dirs, APPLETS);
    std::fs::set_permissions(base.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(base.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(base.join("etc/group"), "root:x:0:\n").unwrap();

    let v = &kit.kernel_version;
    testos::files_layer(
        &boot,
        &[
            (
                &format!("boot/vmlinuz-{v}"),
                std::fs::read(&kit.kernel).unwrap(),
            ),
            (
                &format!("boot/initrd.img-{v}"),
                std::fs::read(initrd).unwrap(),
            ),
        ],
    );

    let mut libs = shared_libraries(&kit.clb);
    copy_into(&tools, &kit.clb, Path::new("/usr/bin/clb"));
    for (name, image_path) in PROGRAMS {
        let host = require_tool(name);
        libs.extend(shared_libraries(&host));
        copy_into(&tools, &host, Path::new(image_path));
    }
    for lib in &libs {
        copy_into(&tools, lib, lib);
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        copy_into(
            &tools,
            Path::new("/etc/mke2fs.conf"),
            Path::new("/etc/mke2fs.conf"),
        );
    }

    std::fs::create_dir_all(top.join("sbin")).unwrap();
    let init = top.join("sbin/init");
    std::fs::write(&init, INIT).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/os-release"), "ID=clb-cloud-test\n").unwrap();
    vec![base, boot, tools, top]
}

/// The clb initramfs with the CD and network drivers ([`EXTRA_MODULES`]).
fn initrd_with_cd(kit: &Kit, work: &Path) -> PathBuf {
    let initrd = work.join("initrd-cd.img");
    let modules = kit.initramfs(&initrd, EXTRA_MODULES);
    for m in ["libata", "scsi_mod"] {
        assert!(
            modules.iter().any(|n| n == m),
            "{m} missing from the initramfs: {modules:?}"
        );
    }
    initrd
}

/// The NoCloud config drive: ISO 9660, volume label `cidata`, `user-data` and `meta-data`.
fn cidata_iso(work: &Path) -> PathBuf {
    let dir = work.join("cidata");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("user-data"), USER_DATA).unwrap();
    std::fs::write(
        dir.join("meta-data"),
        "instance-id: clb-test-1\nlocal-hostname: clb-test\n",
    )
    .unwrap();
    let iso = work.join("cidata.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&iso)
        .arg(&dir));
    iso
}

/// One QEMU boot through the firmware: OVMF (fresh variables each boot) finds
/// `EFI/BOOT/BOOTX64.EFI` on the disk's ESP, GRUB boots a slot. The disk is a virtio disk,
/// `cdrom` (if any) a CD on the IDE controller of the `pc` machine.
/// `metadata`: the port of a metadata service the guest reaches at 169.254.169.254:80.
fn boot(
    disk: &Path,
    cdrom: Option<&Path>,
    metadata: Option<u16>,
    work: &Path,
    name: &str,
) -> String {
    let mut vm = Qemu::new().uefi().machine("pc").memory(768).disk(disk);
    if let Some(iso) = cdrom {
        vm = vm.arg("-cdrom").arg(iso);
    }
    if let Some(port) = metadata {
        vm = vm.args(metadata_net_args(port));
    }
    vm.boot(work, name, BOOT_TIMEOUT).console
}

/// `clb build-disk` of `image` to `disk`: ESP, COS_OEM and COS_RECOVERY only.
fn build_disk(kit: &Kit, image: &str, disk: &Path) {
    run(Command::new(&kit.clb)
        .args(["-q", "build-disk", "-d", image, "--no-verify", "--out"])
        .arg(disk)
        .args([
            "--size",
            "800M",
            "--oem-size",
            "16",
            "--recovery-size",
            "160",
            "--esp-size",
            "32",
        ])
        .args(["--state-size", "256"])
        .args(["--kernel-args", "console=ttyS0 loglevel=4"]));
}

/// The init's `CLB-CLOUD-IMAGE KEY=...` line (the first one starting so).
fn init_line<'a>(console: &'a str, key: &str) -> &'a str {
    let prefix = format!("CLB-CLOUD-IMAGE {key}=");
    console
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the image's init did not print {prefix}...:\n{console}"))
}

/// The init's summary line (`CLB-CLOUD-IMAGE slot=...`).
fn summary(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.starts_with("CLB-CLOUD-IMAGE slot="))
        .unwrap_or_else(|| panic!("the image's init did not report:\n{console}"))
}

/// Read files (relative paths) from the filesystem labelled `label` on `disk`, mounted
/// read-only through an offset loop device (detached even when the test fails).
fn read_from_partition(
    disk: &Path,
    label: &str,
    work: &Path,
    files: &[&str],
) -> Vec<Option<String>> {
    let mnt = PartitionMount::open(disk, label, &work.join(format!("mnt-{label}")), false);
    files
        .iter()
        .map(|f| std::fs::read_to_string(mnt.path().join(f)).ok())
        .collect()
}

#[test]
fn qemu_cloud_image_deploys_itself_from_recovery() {
    // CLB_TEST_KEEP=1 keeps the work directory (consoles, disk) for a look afterwards.
    let tmp = tempfile::Builder::new()
        .prefix("clb-cloud-image.")
        .disable_cleanup(std::env::var_os("CLB_TEST_KEEP").is_some())
        .tempdir()
        .unwrap();
    let work = tmp.path();
    for tool in [
        "genisoimage",
        "ldd",
        "grub-mkimage",
        "grub-editenv",
        "mcopy",
        "mkfs.vfat",
    ] {
        require_tool(tool);
    }
    for f in [OVMF_CODE, OVMF_VARS] {
        assert!(
            Path::new(f).exists(),
            "missing test prerequisite: {f} (package ovmf)"
        );
    }
    let kit = kit::prepare(work);
    let initrd = initrd_with_cd(&kit, work);
    let reg = Registry::start_plain();

    // 1. The image, pushed, and the self-deploying disk built from it.
    let layers = cloud_os(&kit, &initrd, work);
    let image = clb::push(&kit, &reg, &layers, "cloud-os:v1");
    let disk = work.join("disk.raw");
    build_disk(&kit, &image, &disk);
    let table = run(Command::new("sgdisk").arg("-p").arg(&disk));
    assert!(
        table.contains("efi")
            && table.contains("oem")
            && table.contains("recovery")
            && !table.contains("state"),
        "{table}"
    );
    let recovery = clb::json(
        &kit,
        &[
            "--disk",
            &disk.display().to_string(),
            "--state-label",
            "COS_RECOVERY",
            "status",
        ],
    );
    let recovery_digest = recovery["slots"]["recovery"]["digest"].clone();
    assert!(recovery_digest.is_string(), "{recovery}");
    // The recovery slot carries its kernel (GRUB loads /boot/recovery/ on COS_RECOVERY).
    {
        let mnt = PartitionMount::open(&disk, "COS_RECOVERY", &work.join("mnt-rec"), false);
        for f in ["boot/recovery/vmlinuz", "boot/recovery/initrd"] {
            assert!(mnt.path().join(f).is_file(), "COS_RECOVERY has no {f}");
        }
        assert_eq!(
            std::fs::read(mnt.path().join("boot/recovery/initrd")).unwrap(),
            std::fs::read(&initrd).unwrap(),
            "the recovery slot boots the initramfs with the CD drivers"
        );
    }
    let iso = cidata_iso(work);

    // 2. Boot 1 through OVMF and GRUB, no COS_STATE yet: recovery; user data copied from
    //    the CD, deploy from recovery, reboot. (GRUB's clb_load says "no partition labelled
    //    COS_STATE" and waits 10 s before clb_auto turns to recovery.)
    let c = boot(&disk, Some(&iso), None, work, "recovery");
    if let Some(e) = c.lines().find(|l| l.contains("clb-initrd: error:")) {
        panic!("the recovery boot failed in the hook: {e}\n{c}");
    }
    assert!(
        c.contains("clb-grub: booting slot recovery"),
        "GRUB boots the recovery slot when there is no COS_STATE:\n{c}"
    );
    let cmdline = init_line(&c, "cmdline");
    assert!(
        cmdline.contains("BOOT_IMAGE=/boot/recovery/vmlinuz")
            && cmdline.contains("clb.mode=recovery")
            && cmdline.contains("console=ttyS0 loglevel=4")
            && !cmdline.contains("clb.slot="),
        "GRUB loaded the recovery slot's kernel with clb.env's arguments: {cmdline}"
    );
    let cd = init_line(&c, "cidata");
    assert!(
        cd.starts_with("CLB-CLOUD-IMAGE cidata=/dev/sr0 ")
            && ["ata_piix", "sr_mod", "cdrom", "isofs"]
                .iter()
                .all(|m| cd.split_whitespace().any(|w| w == *m)),
        "the config drive is the CD, through the IDE/ATAPI drivers of the initramfs: {cd}\n{c}"
    );
    assert!(c.contains("clb-initrd: booting slot recovery"), "{c}");
    for step in [
        "user data from a config drive or the cloud's metadata service: Ran",
        "deploy from recovery on first boot: Ran",
    ] {
        assert!(c.contains(step), "first-boot step {step:?}:\n{c}");
    }
    assert!(
        c.contains("CLB-CLOUD-IMAGE init slot=recovery mode=recovery env_slot=recovery"),
        "{c}"
    );
    let line = summary(&c);
    assert!(
        line.contains("slot=recovery mode=recovery")
            && line.contains("reboot_requested=yes")
            && line.contains("run_stage_exit=0")
            && !line.contains("state=none")
            && !line.contains("persistent=none")
            && line.contains("oem_userdata=yes")
            && line.contains("host=clb-test ")
            && line.contains("hello=none"),
        "the recovery boot deploys and asks for a reboot, the user data is not applied yet: {line}\n{c}"
    );
    assert!(c.contains("CLB-CLOUD-IMAGE rebooting"), "{c}");
    assert!(!c.contains("CLB-CLOUD-IMAGE powering off"), "{c}");
    assert!(!c.contains("Kernel panic"), "{c}");

    let table = run(Command::new("sgdisk").arg("-p").arg(&disk));
    assert!(
        table.contains("state") && table.contains("persistent"),
        "COS_STATE and COS_PERSISTENT laid out: {table}"
    );
    let s = clb::json(&kit, &["--disk", &disk.display().to_string(), "status"]);
    assert_eq!(s["active"], "a", "{s}");
    assert_eq!(s["good"], true, "{s}");
    assert_eq!(s["slots"]["a"]["complete"], true, "{s}");
    assert_eq!(s["slots"]["a"]["digest"], recovery_digest, "{s}");
    assert_eq!(s["slots"]["a"]["image"], image.as_str(), "{s}");
    let oem = read_from_partition(&disk, "COS_OEM", work, &["99_userdata.yaml"]);
    assert_eq!(
        oem[0].as_deref(),
        Some(USER_DATA),
        "COS_OEM holds the config drive's user-data"
    );

    // 3. Boot 2 through OVMF and GRUB, the CD still attached (as a cloud leaves it): GRUB
    //    reads grubenv and boots slot a with its own kernel; the user data applied.
    let c = boot(&disk, Some(&iso), None, work, "installed");
    if let Some(e) = c.lines().find(|l| l.contains("clb-initrd: error:")) {
        panic!("the installed system's boot failed in the hook: {e}\n{c}");
    }
    assert!(c.contains("clb-grub: booting slot a"), "{c}");
    let cmdline = init_line(&c, "cmdline");
    assert!(
        cmdline.contains("BOOT_IMAGE=/boot/a/vmlinuz")
            && cmdline.contains("console=ttyS0 loglevel=4")
            && !cmdline.contains("clb.mode=recovery"),
        "GRUB loaded slot a's kernel (a good slot: no clb.slot=): {cmdline}"
    );
    assert!(
        init_line(&c, "cidata").starts_with("CLB-CLOUD-IMAGE cidata=/dev/sr0 "),
        "{c}"
    );
    assert!(c.contains("clb-initrd: booting slot a"), "{c}");
    for step in [
        "user data from a config drive or the cloud's metadata service: Ran",
        "deploy from recovery on first boot: Ran",
    ] {
        assert!(
            !c.contains(step),
            "the first-boot steps run only in recovery mode: {step:?}\n{c}"
        );
    }
    let line = summary(&c);
    assert!(
        line.contains("slot=a mode=active run_stage_exit=0 reboot_requested=no")
            && line.contains("hello=hello from cidata runcmd=slot=a"),
        "{line}\n{c}"
    );
    assert!(c.contains("CLB-CLOUD-IMAGE powering off"), "{c}");
    assert!(!c.contains("Kernel panic"), "{c}");

    // The user's files on COS_PERSISTENT (/usr/local's overlay: the host's changes in
    // .state/usr-local.overlay/upper), read by the test itself.
    let p = read_from_partition(
        &disk,
        "COS_PERSISTENT",
        work,
        &[
            ".state/usr-local.overlay/upper/hello-from-user-data",
            ".state/usr-local.overlay/upper/runcmd-saw",
        ],
    );
    assert_eq!(p[0].as_deref(), Some("hello from cidata\n"));
    assert_eq!(p[1].as_deref(), Some("slot=a\n"));
    let s = clb::json(&kit, &["--disk", &disk.display().to_string(), "status"]);
    assert_eq!(s["active"], "a", "{s}");
    assert_eq!(s["good"], true, "{s}");
    assert_eq!(
        run(Command::new("losetup").arg("-j").arg(&disk)),
        "",
        "loop devices left behind"
    );

    // 4. The same image on a cloud without a config drive: the user data comes from the
    //    metadata service (AWS IMDSv2, tokens required) at 169.254.169.254, forwarded by
    //    QEMU to a server on the host.
    metadata_deploy(&kit, &image, work);
}

const METADATA_USER_DATA: &str = r#"#cloud-config
write_files:
  - path: /usr/local/hello-from-user-data
    content: "hello from the metadata service\n"
runcmd:
  - echo "slot=$(cat /run/clb/booted_slot)" > /usr/local/runcmd-saw
stages:
  boot:
    - name: azure custom data
      datasource:
        providers: [azure]
        path: /usr/local/azure
"#;

/// Azure's `customData`, as its provisioning CD carries it (base64 in ovf-env.xml).
const AZURE_CUSTOM_DATA: &str = "#cloud-config\nruncmd:\n  - echo azure > /usr/local/azure-ran\n";

/// An Azure provisioning CD: ISO 9660 with `ovf-env.xml` holding `customData`.
fn azure_provisioning_iso(work: &Path) -> PathBuf {
    let dir = work.join("azure-cd");
    std::fs::create_dir_all(&dir).unwrap();
    // coreutils' base64 encodes it: an encoder independent of clb's decoder.
    let raw = work.join("custom-data");
    std::fs::write(&raw, AZURE_CUSTOM_DATA).unwrap();
    let encoded = run(Command::new("base64").arg("-w0").arg(&raw));
    let ovf = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ns0:Environment xmlns:ns0=\"http://schemas.dmtf.org/ovf/environment/1\" xmlns:ns1=\"http://schemas.microsoft.com/windowsazure\">\n<ns1:ProvisioningSection><ns1:LinuxProvisioningConfigurationSet>\n<ns1:HostName>azure-vm</ns1:HostName>\n<ns1:CustomData>{}</ns1:CustomData>\n</ns1:LinuxProvisioningConfigurationSet></ns1:ProvisioningSection></ns0:Environment>\n",
        encoded.trim()
    );
    std::fs::write(dir.join("ovf-env.xml"), ovf).unwrap();
    let iso = work.join("azure.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-V", "rd_rdfe_stable", "-J", "-r", "-o"])
        .arg(&iso)
        .arg(&dir));
    iso
}

/// A fresh disk from `image` booted with no CD and a metadata service: boot 1 (recovery)
/// fetches the user data, hostname and key, deploys and reboots; boot 2 (slot a) applies the
/// user data, whose own `datasource` step then reads Azure: the instance document from an
/// Azure IMDS (no `userData`) and `customData` from a real ISO 9660 provisioning CD.
fn metadata_deploy(kit: &Kit, image: &str, work: &Path) {
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0J3mKv8m2cloudimagetestkeyxxxxxxxxxxxx test@clb";
    let service = MetadataServer::start(
        Cloud::Aws { required: true },
        Instance {
            user_data: Some(METADATA_USER_DATA.as_bytes().to_vec()),
            hostname: "node-meta".to_string(),
            ssh_keys: vec![key.to_string()],
            broken_keys: false,
            network: None,
        },
    );
    let port: u16 = service
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let disk = work.join("disk-metadata.raw");
    build_disk(kit, image, &disk);

    let c = boot(&disk, None, Some(port), work, "metadata-recovery");
    if let Some(e) = c.lines().find(|l| l.contains("clb-initrd: error:")) {
        panic!("the recovery boot failed in the hook: {e}\n{c}");
    }
    assert!(c.contains("clb-initrd: booting slot recovery"), "{c}");
    assert!(
        c.contains("CLB-CLOUD-IMAGE net=169.254.0.15") && c.contains("CLB-CLOUD-IMAGE cidata=none"),
        "a network card and no config drive:\n{c}"
    );
    assert!(
        c.contains("user data from a config drive or the cloud's metadata service: Ran")
            && c.contains("deploy from recovery on first boot: Ran"),
        "{c}"
    );
    let line = summary(&c);
    assert!(
        line.contains("slot=recovery mode=recovery run_stage_exit=0 reboot_requested=yes")
            && !line.contains("state=none")
            && line.contains("oem_userdata=yes")
            && line.contains("host=node-meta ")
            && line.contains("hello=none"),
        "the user data fetched from the metadata service, the hostname applied: {line}\n{c}"
    );
    // The service saw IMDSv2: a token PUT with a TTL, then GETs carrying the token, the
    // user data among them.
    let requests = service.requests();
    let aws: Vec<_> = requests
        .iter()
        .filter(|q| q.path.starts_with("/latest/"))
        .collect();
    assert!(
        aws.first().is_some_and(
            |q| q.method == "PUT" && q.header("X-aws-ec2-metadata-token-ttl-seconds").is_some()
        ),
        "{requests:?}"
    );
    assert!(
        aws.iter().any(
            |q| q.path == "/latest/user-data" && q.header("X-aws-ec2-metadata-token").is_some()
        ),
        "{requests:?}"
    );
    let s = clb::json(kit, &["--disk", &disk.display().to_string(), "status"]);
    assert_eq!(s["active"], "a", "{s}");
    assert_eq!(s["slots"]["a"]["complete"], true, "{s}");
    let oem = read_from_partition(&disk, "COS_OEM", work, &["99_userdata.yaml", "userdata"]);
    assert_eq!(oem[0].as_deref(), Some(METADATA_USER_DATA));
    assert_eq!(oem[1].as_deref(), Some(METADATA_USER_DATA));

    // Boot 2: slot a, the AWS service gone; the user data applies from COS_OEM, and its
    // datasource step finds Azure.
    let seen = service.requests().len();
    let azure = MetadataServer::start(
        Cloud::Azure,
        Instance {
            hostname: "azure-vm".to_string(),
            ..Instance::default()
        },
    );
    let azure_port: u16 = azure
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let cd = azure_provisioning_iso(work);
    let c = boot(
        &disk,
        Some(&cd),
        Some(azure_port),
        work,
        "metadata-installed",
    );
    if let Some(e) = c.lines().find(|l| l.contains("clb-initrd: error:")) {
        panic!("the installed system's boot failed in the hook: {e}\n{c}");
    }
    assert!(c.contains("clb-initrd: booting slot a"), "{c}");
    let line = summary(&c);
    assert!(
        line.contains("slot=a mode=active run_stage_exit=0 reboot_requested=no")
            && line.contains("host=azure-vm ")
            && line.contains("hello=hello from the metadata service runcmd=slot=a"),
        "the user data applied; Azure's computerName set the hostname: {line}\n{c}"
    );
    assert!(
        c.contains("azure custom data: Ran"),
        "the user data's datasource step read Azure:\n{c}"
    );
    assert_eq!(
        service.requests().len(),
        seen,
        "the installed system asked the AWS service again"
    );
    let asked = azure.requests();
    assert!(
        asked.iter().any(
            |q| q.path.starts_with("/metadata/instance/compute/userData")
                && q.header("Metadata") == Some("true")
        ),
        "{asked:?}"
    );
    let p = read_from_partition(
        &disk,
        "COS_PERSISTENT",
        work,
        &[
            ".state/usr-local.overlay/upper/hello-from-user-data",
            ".state/usr-local.overlay/upper/azure/userdata.yaml",
        ],
    );
    assert_eq!(p[0].as_deref(), Some("hello from the metadata service\n"));
    assert_eq!(
        p[1].as_deref(),
        Some(AZURE_CUSTOM_DATA),
        "customData read from ovf-env.xml on the ISO 9660 CD"
    );
    assert_eq!(
        run(Command::new("losetup").arg("-j").arg(&disk)),
        "",
        "loop devices left behind"
    );
}
