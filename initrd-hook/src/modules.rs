//! Kernel modules listed in `/etc/clb/modules` of the initramfs (written by `clb mkinitrd` in
//! dependency order), loaded with `finit_module(2)`: no busybox or kmod needed.

use std::fs::File;
use std::path::Path;

use rustix::io::Errno;

use crate::{Fatal, say};

pub const MODULES_LIST: &str = "/etc/clb/modules";

/// Load every module file listed (one absolute path a line, `#` comments), in order. A module
/// that is already loaded (or built in) is fine. A module the kernel refuses is a warning, not
/// a failure: a driver for hardware this machine lacks fails with ENODEV, and a missing
/// device or filesystem shows up as a clear error later. A missing list means "nothing to
/// load" (kernels with everything built in).
pub fn load_listed(list: &Path, debug: bool) -> Result<(), Fatal> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Fatal(format!("read {}: {e}", list.display()))),
    };
    for path in parse_list(&text) {
        match load(Path::new(path)) {
            Ok(()) => {
                if debug {
                    say(format_args!("loaded {path}"));
                }
            }
            Err(e) => say(format_args!("warning: module {path}: {e}")),
        }
    }
    Ok(())
}

fn parse_list(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn load(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    match rustix::system::finit_module(&f, c"", 0) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_comments_and_blanks() {
        let v: Vec<_> = parse_list("# dep order\n/lib/a.ko\n\n  /lib/b.ko  \n#x\n").collect();
        assert_eq!(v, ["/lib/a.ko", "/lib/b.ko"]);
    }
}
