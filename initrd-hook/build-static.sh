#!/bin/sh
# Build the static clb-initrd hook (glibc, +crt-static) and print the path of the binary.
# With an explicit --target, RUSTFLAGS apply to the target only, not to proc-macros.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
cd "$here"
RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
    cargo build --release -p clb-initrd --target "$target" >&2
out="${CARGO_TARGET_DIR:-$here/target}/$target/release/clb-initrd"
echo "$out"
