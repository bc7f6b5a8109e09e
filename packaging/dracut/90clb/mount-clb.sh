#!/bin/sh
# Assemble the clb slot on $NEWROOT. clb-initrd prints one "clb-initrd: error: ..." line on
# failure; die then ends the boot (with panic=N on the command line the machine reboots and
# the failed try is already counted).
type die >/dev/null 2>&1 || . /lib/dracut-lib.sh
if [ "${root}" = "clb" ] && ! ismounted "$NEWROOT"; then
    /usr/bin/clb-initrd assemble --sysroot "$NEWROOT" || die "clb-initrd could not assemble the root"
fi
