#!/bin/sh
# Assemble the clb slot on $NEWROOT. clb-initrd prints one "clb-initrd: error: ..." line on
# failure; the boot then ends like one through clb's own /init: a kernel panic, which
# `panic=N` on the command line turns into a reboot (the failed try is already counted).
type die >/dev/null 2>&1 || . /lib/dracut-lib.sh
if [ "${root}" = "clb" ] && ! ismounted "$NEWROOT"; then
    if ! /usr/lib/clb/clb-initrd assemble --sysroot "$NEWROOT"; then
        # dracut's `die` alone would not reboot: its exit trap drops into the emergency shell
        # (rd.shell defaults to on there) or, with rd.shell=0, halts; either keeps an A/B
        # machine from ever trying again. So `die` (and its shell) only when a shell was asked
        # for, or under systemd, where this hook is not PID 1 (untested).
        if [ -n "$DRACUT_SYSTEMD" ] || getargbool 0 rd.shell || getarg rd.break >/dev/null; then
            die "clb-initrd could not assemble the root"
        fi
        echo "<24>dracut: FATAL: clb-initrd could not assemble the root" >/dev/kmsg
        # This hook is sourced by dracut's /init, PID 1: leaving it panics the kernel
        # ("Attempted to kill init"), once its "Signal caught" trap is gone.
        trap - 0
        exit 1
    fi
fi
