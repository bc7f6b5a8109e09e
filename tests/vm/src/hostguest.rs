//! A QEMU guest on the kit's Debian kernel that runs a shell script with this host's own
//! programs: the host's root is shared read-only over 9p (virtio), the guest chroots into it
//! with fresh `/dev`, `/proc`, `/sys` and `/run` (`TMPDIR` is `/run/tmp`), and a work directory
//! of the test is shared read-write at `/run/work`. The host's `/tmp` stays visible, read-only:
//! a checkout there (CI's clean clone) holds the programs the guest runs. It is how a test uses kernel features the host lacks
//! (device-mapper targets) with the same clb, dmsetup and e2fsprogs it tests on the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::kit::Kit;
use crate::qemu::Qemu;

/// The guest's init (busybox sh): modules, the two 9p shares, the chroot, then power off.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do
    case "$m" in ''|'#'*) ;; *) insmod "$m" 2>/dev/null ;; esac
done < /etc/clb/modules
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host
mount -t devtmpfs dev /host/dev
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t tmpfs run /host/run
mkdir -p /host/run/work /host/run/tmp
export TMPDIR=/run/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /host/run/work
echo "HOSTGUEST start"
chroot /host /bin/sh /run/work/guest.sh
echo "HOSTGUEST exit=$?"
sync
poweroff -f
"#;

/// Where [`INIT`] sits in the initramfs.
const GUEST_INIT: &str = "/hostguest-init";

/// Modules the guest needs besides `extra`: virtio disks and network, 9p, loop, ext4,
/// SquashFS and OverlayFS (the kit's defaults).
const MODULES: &[&str] = &["9p", "9pnet_virtio", "virtio_net"];

/// Build the guest's initramfs in `work` with `extra` modules (e.g. `dm_log_writes`).
pub fn initramfs(kit: &Kit, work: &Path, extra: &[&str]) -> PathBuf {
    let init = work.join("hostguest-init");
    std::fs::write(&init, INIT).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = work.join("hostguest-initrd.img");
    // mkinitrd wants a static ELF as /init: the hook sits there unused, the kernel runs
    // the script (`rdinit=`).
    let mut opts = clb_mkinitrd::MkinitrdOptions::new(&kit.hook, &out);
    opts.extra_files.push((init.clone(), GUEST_INIT.into()));
    opts.modules_dir = Some(kit.modules_dir.clone());
    opts.busybox = Some(clb_mkinitrd::find_busybox().expect("a static busybox"));
    opts.add_modules(MODULES.iter().chain(extra).copied());
    let stats = clb_mkinitrd::build(&opts).expect("mkinitrd");
    for m in MODULES.iter().chain(extra) {
        assert!(
            stats.modules.iter().any(|n| n == m),
            "{m} missing from the guest's initramfs: {:?}",
            stats.modules
        );
    }
    out
}

/// A guest that runs `share/guest.sh` (written by the caller) in the host's root; `share` is
/// its `/run/work`. Add disks and a network with the returned builder.
pub fn qemu(kit: &Kit, initrd: &Path, share: &Path) -> Qemu {
    Qemu::new()
        .arg("-kernel")
        .arg(&kit.kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 loglevel=4 rdinit={GUEST_INIT}"
        ))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=work,security_model=none,multidevs=remap",
            share.display()
        ))
}
