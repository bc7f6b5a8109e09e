//! Which Debian package provides each program clb runs, so a missing tool is reported with
//! what to install.

const PACKAGES: &[(&str, &str)] = &[
    ("tar2sqfs", "squashfs-tools-ng"),
    ("sqfs2tar", "squashfs-tools-ng"),
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("losetup", "mount"),
    ("blockdev", "util-linux"),
    ("blkid", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("partprobe", "parted"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mke2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("tune2fs", "e2fsprogs"),
    ("mkfs.xfs", "xfsprogs"),
    ("xfs_growfs", "xfsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mkfs.fat", "dosfstools"),
    ("mkswap", "util-linux"),
    ("grub-mkimage", "grub-common"),
    ("grub-editenv", "grub-common"),
    ("grub-install", "grub2-common"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("mdir", "mtools"),
    ("qemu-img", "qemu-utils"),
    ("systemctl", "systemd"),
    ("systemd-sysusers", "systemd"),
    ("openssl", "openssl"),
    ("useradd", "passwd"),
    ("usermod", "passwd"),
    ("groupadd", "passwd"),
    ("chpasswd", "passwd"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("sysctl", "procps"),
    ("curl", "curl"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("zstd", "zstd"),
    ("growpart", "cloud-guest-utils"),
    ("genisoimage", "genisoimage"),
    // The stage engine (layout, commands) and the initramfs builder.
    ("mkfs.ext2", "e2fsprogs"),
    ("mkfs.ext3", "e2fsprogs"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("partx", "util-linux"),
    ("chroot", "coreutils"),
    ("sh", "dash"),
    ("xz", "xz-utils"),
];

/// The Debian package that provides `program`, when clb knows it.
pub fn package_of(program: &str) -> Option<&'static str> {
    PACKAGES
        .iter()
        .find(|(name, _)| *name == program)
        .map(|(_, pkg)| *pkg)
}
