#!/bin/bash
# dracut module for clb: `root=clb` on the kernel command line makes the mount hook assemble
# the active slot with `clb-initrd assemble --sysroot $NEWROOT` (see docs/boot.md).
# Installed into /usr/lib/dracut/modules.d/90clb/ by the clb package; add `clb` to dracut's
# add_dracutmodules. The hook binary stays at the path the package installs it to,
# /usr/lib/clb/clb-initrd, inside the initramfs too.

check() {
    require_binaries /usr/lib/clb/clb-initrd || return 1
    # Only when asked for (add_dracutmodules+=" clb ").
    return 255
}

depends() {
    return 0
}

installkernel() {
    hostonly='' instmods loop squashfs overlay ext4
}

install() {
    inst_binary /usr/lib/clb/clb-initrd
    inst_hook cmdline 90 "$moddir/parse-clb.sh"
    inst_hook mount 90 "$moddir/mount-clb.sh"
}
