#!/bin/sh
# Fetch a Debian kernel once and print two lines: the vmlinuz path and the modules directory.
#   fetch-kernel.sh [CACHE_DIR]        (default /var/cache/clb-test-kernel)
# The versioned package (linux-image-<ver>-amd64) is the one linux-image-amd64 depends on;
# it is downloaded with apt-get download and unpacked with dpkg -x, so reruns are instant.
set -eu
cache=${1:-/var/cache/clb-test-kernel}
die() { echo "fetch-kernel: $*" >&2; exit 1; }
command -v apt-cache >/dev/null || die "apt-cache missing"
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | sed -n 1p
}
pkg=$(kernel_package)
# An image whose package lists were cleaned knows no kernel package until apt-get update.
if [ -z "$pkg" ]; then
    apt-get update -qq >&2 || die "apt-get update failed"
    pkg=$(kernel_package)
fi
[ -n "$pkg" ] || die "cannot find the versioned package of linux-image-amd64 (apt-get update?)"
dir=$cache/$pkg
if [ ! -f "$dir/.complete" ]; then
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
    rm -rf "$dir"
    dpkg -x "$tmp"/*.deb "$tmp/root" || die "dpkg -x failed"
    mv "$tmp/root" "$dir"
    touch "$dir/.complete"
fi
vmlinuz=$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$vmlinuz" ] || die "no vmlinuz in $dir"
ver=${vmlinuz##*/vmlinuz-}
mods=$dir/lib/modules/$ver
[ -d "$mods" ] || mods=$dir/usr/lib/modules/$ver
[ -d "$mods" ] || die "no modules directory for $ver in $dir"
echo "$vmlinuz"
echo "$mods"
