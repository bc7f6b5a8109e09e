#!/bin/sh
# Make a raw disk image with a GPT: COS_STATE (ext4) and COS_PERSISTENT (ext4).
#   make-disk.sh DISK [STATE_MIB] [PERSISTENT_MIB]
# Filesystems are made in place with mkfs.ext4 -E offset= (no loop devices needed).
set -eu
disk=$1; state=${2:-256}; pers=${3:-64}
die() { echo "make-disk: $*" >&2; exit 1; }
rm -f "$disk"
truncate -s $(( (state + pers + 2) * 1024 * 1024 )) "$disk"
sgdisk -o \
    -n 1:2048:+${state}M -c 1:COS_STATE -t 1:8300 \
    -n 2:0:+${pers}M -c 2:COS_PERSISTENT -t 2:8300 "$disk" >/dev/null || die "sgdisk failed"
mkfs_part() {  # number label
    start=$(sgdisk -i "$1" "$disk" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
    end=$(sgdisk -i "$1" "$disk" | sed -n 's/^Last sector: \([0-9]*\).*/\1/p')
    size=$(( (end - start + 1) * 512 ))
    mkfs.ext4 -q -F -L "$2" -E offset=$((start * 512)) "$disk" $((size / 1024))k ||
        die "mkfs.ext4 $2 failed"
}
mkfs_part 1 COS_STATE
mkfs_part 2 COS_PERSISTENT
