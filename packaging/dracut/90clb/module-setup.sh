#!/bin/bash
# dracut module for clb: `root=clb` on the kernel command line makes the mount hook assemble
# the active slot with `clb-initrd assemble --sysroot $NEWROOT` (see docs/boot.md).
# Install into /usr/lib/dracut/modules.d/90clb/ and add `clb` to dracut's add_dracutmodules.

check() {
    require_binaries clb-initrd || return 1
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
    inst_binary "$(command -v clb-initrd)" /usr/bin/clb-initrd
    inst_hook cmdline 90 "$moddir/parse-clb.sh"
    inst_hook mount 90 "$moddir/mount-clb.sh"
}
