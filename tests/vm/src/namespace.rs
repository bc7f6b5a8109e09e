//! Distribution initramfs builders (dracut, mkinitramfs) read the kernel from fixed host paths
//! (/lib/modules/VER, /boot/config-VER) and take `clb-initrd` from /usr/lib/clb, where the
//! package installs it. The tests' Debian kernel is only unpacked in its cache, so the builder runs in
//! a private mount namespace (`unshare -m --propagation private`) where overlays put the
//! kernel, extra files and the static hook into /usr/lib and /boot: the host sees
//! nothing, and nothing is left to clean up when the namespace ends, whatever happened.

use std::path::Path;
use std::process::Command;

use crate::kit::Kit;

/// Runs "$@" in the namespace: $1 work dir (its `extra/` appears in /usr/lib), $2 the unpacked
/// kernel's lib dir (holding modules/VER), $3 its boot dir (config-VER), $4 the static
/// clb-initrd, $5 the kernel version; the command follows.
const NAMESPACE: &str = r#"
w=$1 klib=$2 kboot=$3 hook=$4 kver=$5
shift 5
mkdir -p "$w/extra/clb" "$w/lib-upper" "$w/lib-work"
cp "$hook" "$w/extra/clb/clb-initrd"
# Writable (depmod writes modules.dep), the writes land in $w, not in the kernel cache.
mount -t overlay clb-test -o "lowerdir=$w/extra:/usr/lib:$klib,upperdir=$w/lib-upper,workdir=$w/lib-work" /usr/lib
mount -t overlay clb-test -o "lowerdir=$kboot:/boot" /boot
# The unpacked kernel has no modules.dep; kmod lookups need one.
depmod "$kver"
exec "$@"
"#;

/// Run `command`'s program and arguments (not its environment or directory) in the
/// namespace, with `ns` as its work dir (files put in `ns/extra` beforehand appear in
/// /usr/lib). Prints and returns its output; panics if it fails or if a mount leaked to the
/// host.
pub fn run_with_kernel_installed(kit: &Kit, ns: &Path, command: &Command) -> String {
    std::fs::create_dir_all(ns).unwrap();
    let name = command.get_program().to_string_lossy().into_owned();
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-euc",
            NAMESPACE,
            "sh",
        ])
        .arg(ns)
        .arg(kit.kernel_lib_dir())
        .arg(kit.kernel_boot_dir())
        .arg(&kit.hook)
        .arg(&kit.kernel_version)
        .arg(command.get_program())
        .args(command.get_args())
        .output()
        .expect("run unshare");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("---- {name} ----\n{log}");
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{log}",
        out.status
    );
    assert_no_leaked_mounts(ns);
    log
}

/// Every path in `wants` ends a line of the initramfs `listing` (lsinitrd, lsinitramfs).
pub fn assert_listed(listing: &str, wants: &[&str]) {
    for want in wants {
        assert!(
            listing.lines().any(|l| l.ends_with(want)),
            "{want} missing from the initramfs:\n{listing}"
        );
    }
}

/// Our mounts must not have leaked out of the namespace.
pub fn assert_no_leaked_mounts(work: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(" clb-test ") || l.contains(&*work.to_string_lossy()))
        .collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:#?}");
}
