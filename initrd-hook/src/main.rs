//! clb-initrd: the boot hook of clb (the library holds the parts; see its docs and docs/boot.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clb_initrd::cmdline::Config;
use clb_initrd::{Fatal, assemble, modules, say, switchroot};

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
