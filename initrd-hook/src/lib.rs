//! clb-initrd: the boot hook of clb. See docs/boot.md.
//!
//! A library so that its parsers can be fuzzed (fuzz/) and its binary stays a thin `main`.
//!
//! Two ways to run:
//! - as `/init` (PID 1) of a minimal initramfs (`clb mkinitrd`): mounts the API filesystems,
//!   loads the modules listed in `/etc/clb/modules`, assembles the root and switches to it;
//! - `clb-initrd assemble --sysroot DIR` from dracut or initramfs-tools, which own PID 1,
//!   module loading and the switch themselves.
//!
//! With `clb.source=` + `clb.digest=` (netboot, `netboot.rs`) the layers come from a pinned
//! layer-set manifest over HTTP or on a labelled filesystem instead of a slot on COS_STATE.
//!
//! Every failure prints one line `clb-initrd: error: ...` on the console and, as PID 1,
//! exits: the kernel panics and `panic=N` reboots, which spends one try of a new release.

pub mod assemble;
pub mod cmdline;
pub mod http;
mod loopdev;
pub mod modules;
mod mounts;
pub mod netboot;
mod network;
mod persist;
mod plan;
mod record;
pub mod switchroot;

use std::io::Write;

/// A boot-stopping error: one line for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Print a console line (never panics when the console is gone).
pub fn say(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "clb-initrd: {msg}");
}
