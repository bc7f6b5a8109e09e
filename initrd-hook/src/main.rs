//! clb-initrd: the boot hook of clb. See docs/boot.md.
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

mod assemble;
mod cmdline;
mod http;
mod loopdev;
mod modules;
mod mounts;
mod netboot;
mod network;
mod persist;
mod plan;
mod record;
mod switchroot;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cmdline::Config;

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

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("assemble") => run_assemble(&args[2..]),
        Some("--version") => {
            println!("clb-initrd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("--help") | Some("-h") => {
            println!(
                "usage: clb-initrd               (as /init of an initramfs)\n       \
                 clb-initrd assemble --sysroot DIR [--cmdline FILE]\n\
                 See docs/boot.md for the clb.* kernel command line options."
            );
            Ok(())
        }
        _ if std::process::id() == 1 => run_init(started),
        _ => Err(Fatal(
            "not PID 1: run as /init of an initramfs, or `clb-initrd assemble --sysroot DIR`"
                .into(),
        )),
    };
    if let Err(e) = result {
        say(format_args!("error: {e}"));
        // As PID 1 this exit panics the kernel ("Attempted to kill init"), and `panic=N`
        // reboots: the boot state already counts this try.
        std::process::exit(1);
    }
}

/// `/init` of a clb initramfs.
fn run_init(started: Instant) -> Result<(), Fatal> {
    switchroot::mount_api_filesystems()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| Fatal(format!("read /proc/cmdline: {e}")))?;
    let cfg = Config::parse(&cmdline).map_err(|e| Fatal(e.to_string()))?;
    modules::load_listed(Path::new(modules::MODULES_LIST), cfg.debug)?;
    let sysroot = PathBuf::from(switchroot::SYSROOT);
    std::fs::create_dir_all(&sysroot)
        .map_err(|e| Fatal(format!("create {}: {e}", sysroot.display())))?;
    let booted = assemble::assemble(&cfg, &sysroot)?;
    switchroot::check_init(&sysroot, &cfg.init)?;
    let ms = started.elapsed().as_millis();
    say(format_args!(
        "booting slot {} ({}), switch_root after {ms} ms",
        booted.slot, booted.image
    ));
    switchroot::switch_root(&sysroot, &cfg.init, &booted.slot)
}

/// `clb-initrd assemble --sysroot DIR [--cmdline FILE]` for dracut and initramfs-tools.
fn run_assemble(args: &[String]) -> Result<(), Fatal> {
    let mut sysroot = None;
    let mut cmdline_file = PathBuf::from("/proc/cmdline");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sysroot" => sysroot = it.next().map(PathBuf::from),
            "--cmdline" => {
                cmdline_file = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| Fatal("--cmdline needs a file".into()))?;
            }
            other => return Err(Fatal(format!("assemble: unknown argument {other}"))),
        }
    }
    let sysroot = sysroot.ok_or_else(|| Fatal("assemble: --sysroot DIR is required".into()))?;
    let cmdline = std::fs::read_to_string(&cmdline_file)
        .map_err(|e| Fatal(format!("read {}: {e}", cmdline_file.display())))?;
    let cfg = Config::parse(&cmdline).map_err(|e| Fatal(e.to_string()))?;
    let booted = assemble::assemble(&cfg, &sysroot)?;
    say(format_args!(
        "assembled slot {} ({}) on {}",
        booted.slot,
        booted.image,
        sysroot.display()
    ));
    Ok(())
}
