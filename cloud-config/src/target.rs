//! Facts about the target root that conditions and template data both read.

use std::path::Path;

/// The hostname of the target: `<root>/etc/hostname` for an offline root, else the kernel's.
pub(crate) fn current_hostname(root: &Path) -> String {
    let from_file = std::fs::read_to_string(root.join("etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let live = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if root == Path::new("/") {
        let l = live();
        if l.is_empty() {
            from_file.unwrap_or_default()
        } else {
            l
        }
    } else {
        from_file.unwrap_or_else(live)
    }
}

/// `/etc/os-release` (or `/usr/lib/os-release`) of the root as key/value pairs.
pub(crate) fn read_os_release(root: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}
