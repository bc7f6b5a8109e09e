//! The kernel arguments of a deployed machine: `clb_cmdline` in the GRUB environment block
//! `clb.env` that `clb deploy` writes next to clb's `grub.cfg` (EFI: `COS_GRUB:/EFI/BOOT/`,
//! BIOS: `COS_OEM:/grub/`). `clb bootloader` reads and changes it on the host or, with
//! `--disk`, on an image; GRUB reads it at every boot. The block is read and written by
//! `clb_ondisk::EnvBlock` (no GRUB tools needed on a host); the ESP through mtools.
//!
//! GRUB itself passes `root=clb boot=clb` (the words dracut's and initramfs-tools' clb modules
//! answer to) and `clb.slot=`/`clb.mode=` per boot: the arguments a user gives may not
//! override those, or the image's initrd would no longer find its slot.

use std::path::{Path, PathBuf};
use std::process::Command;

use clb_ondisk::EnvBlock;

use crate::error::{ClbError, Result};
use crate::partitions::{ESP_LABEL, OEM_LABEL};

/// The key of the kernel arguments in `clb.env`.
const CMDLINE_KEY: &str = "clb_cmdline";
/// Arguments GRUB sets before the user's (see `packaging/grub/grub.cfg`).
pub const GRUB_FIXED_ARGS: &str = "root=clb boot=clb panic=5";
/// Keys GRUB owns: a user's value would take the boot away from clb's initrd hook.
const RESERVED_KEYS: [&str; 4] = ["root", "boot", "clb.slot", "clb.mode"];

/// Where a machine's `clb.env` lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// On the ESP, written with mtools (`target` is an mtools image spec).
    Efi { target: String },
    /// On COS_OEM, a mounted filesystem.
    Bios { file: PathBuf },
}

impl Location {
    pub fn describe(&self) -> String {
        match self {
            Location::Efi { .. } => format!("{ESP_LABEL}:/EFI/BOOT/clb.env (GRUB, EFI)"),
            Location::Bios { .. } => format!("{OEM_LABEL}:/grub/clb.env (GRUB, BIOS)"),
        }
    }
}

/// Refuses arguments GRUB cannot store or that would break the boot.
pub fn check_args(args: &str) -> Result<()> {
    if args.contains(['\n', '\r']) {
        return Err(ClbError::Invalid(
            "kernel arguments must be one line".into(),
        ));
    }
    for word in args.split_whitespace() {
        let key = word.split_once('=').map_or(word, |(k, _)| k);
        if RESERVED_KEYS.contains(&key) {
            return Err(ClbError::Invalid(format!(
                "kernel argument {word:?}: GRUB passes {key}= itself (it boots the image's own \
                 initrd whatever its flavour); leave it out"
            )));
        }
    }
    Ok(())
}

/// A new machine's `clb.env` holding `args` (checked), for the bootloader installers.
pub fn machine_env(args: &str) -> Result<Vec<u8>> {
    check_args(args)?;
    with_args(EnvBlock::default(), args)
}

/// `env` with `clb_cmdline` = `args`, as a block (too long arguments are refused).
fn with_args(mut env: EnvBlock, args: &str) -> Result<Vec<u8>> {
    env.set(CMDLINE_KEY, args);
    env.to_block()
        .map_err(|e| ClbError::Invalid(format!("kernel arguments: {e}")))
}

/// The key of one argument (`console=ttyS0` → `console`, `quiet` → `quiet`).
fn key_of(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// `current` with each of `add` appended, replacing arguments with the same key.
pub fn add_args(current: &str, add: &[String]) -> String {
    let mut words: Vec<&str> = current.split_whitespace().collect();
    for new in add.iter().flat_map(|a| a.split_whitespace()) {
        words.retain(|w| key_of(w) != key_of(new));
        words.push(new);
    }
    words.join(" ")
}

/// `current` without `remove`: a bare key removes every argument with that key, `key=value`
/// only that exact argument.
pub fn remove_args(current: &str, remove: &[String]) -> String {
    let gone: Vec<&str> = remove.iter().flat_map(|a| a.split_whitespace()).collect();
    current
        .split_whitespace()
        .filter(|w| {
            !gone.iter().any(|g| {
                if g.contains('=') {
                    w == g
                } else {
                    key_of(w) == *g
                }
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds `clb.env` on `disk` (an image or a whole block device), or on the host's disks.
/// `_mounts` keeps what had to be mounted for BIOS's COS_OEM until the caller is done.
pub fn locate(disk: Option<&Path>) -> Result<(Location, Option<clb_disk::StateDisk>)> {
    if let Some(target) = crate::partitions::esp_target(disk)? {
        return Ok((Location::Efi { target }, None));
    }
    let oem = match disk {
        Some(d) => Some(clb_disk::StateDisk::open(d, OEM_LABEL, true).map_err(ClbError::from)?),
        None => {
            let dev = clb_disk::host_partition_by_label(OEM_LABEL).map_err(ClbError::from)?;
            match clb_disk::find_mounted(&dev) {
                Some(dir) => {
                    return Ok((
                        Location::Bios {
                            file: dir.join("grub/clb.env"),
                        },
                        None,
                    ));
                }
                None => Some(clb_disk::StateDisk::open_device(&dev, true).map_err(ClbError::from)?),
            }
        }
    };
    let file = oem
        .as_ref()
        .map(|d| d.path().join("grub/clb.env"))
        .unwrap_or_default();
    if !file.exists() {
        return Err(ClbError::State(format!(
            "no clb GRUB here: neither a {ESP_LABEL} partition nor {OEM_LABEL}:/grub/clb.env \
             (deployed with --bootloader none?)"
        )));
    }
    Ok((Location::Bios { file }, oem))
}

/// Runs an mtools program (it must not refuse an image over its geometry checks).
fn mtools(cmd: &mut Command) -> Result<()> {
    clb_command::run(cmd.env("MTOOLS_SKIP_CHECK", "1"))?;
    Ok(())
}

/// The bytes of `clb.env` at `loc`.
fn fetch(loc: &Location) -> Result<Vec<u8>> {
    match loc {
        Location::Efi { target } => {
            let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
            let local = work.path().join("clb.env");
            mtools(
                Command::new("mcopy")
                    .args(["-o", "-i", target, "::/EFI/BOOT/clb.env"])
                    .arg(&local),
            )?;
            std::fs::read(&local).map_err(ClbError::io("reading clb.env"))
        }
        Location::Bios { file } => {
            std::fs::read(file).map_err(ClbError::io(format!("reading {}", file.display())))
        }
    }
}

fn parse(loc: &Location, bytes: &[u8]) -> Result<EnvBlock> {
    EnvBlock::parse(bytes).map_err(|e| ClbError::State(format!("{}: {e}", loc.describe())))
}

/// The kernel arguments stored at `loc`.
pub fn read(loc: &Location) -> Result<String> {
    let env = parse(loc, &fetch(loc)?)?;
    Ok(env.get(CMDLINE_KEY).unwrap_or_default().to_string())
}

/// Stores `args` at `loc`, keeping the block's other keys. The new block is built aside and
/// then replaces the old one (an atomic rename on COS_OEM; one mcopy of 1 KiB on the ESP).
pub fn write(loc: &Location, args: &str) -> Result<()> {
    check_args(args)?;
    let block = with_args(parse(loc, &fetch(loc)?)?, args)?;
    match loc {
        Location::Efi { target } => {
            let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
            let local = work.path().join("clb.env");
            std::fs::write(&local, &block).map_err(ClbError::io("writing the new clb.env"))?;
            mtools(
                Command::new("mcopy")
                    .args(["-o", "-i", target])
                    .arg(&local)
                    .arg("::/EFI/BOOT/clb.env"),
            )?;
        }
        Location::Bios { file } => {
            clb_ondisk::atomic::write_atomic(file, &block)
                .map_err(ClbError::io(format!("writing {}", file.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn add_replaces_same_key_and_remove_by_key_or_exact() {
        let s = add_args("console=tty0 quiet", &["console=ttyS0,115200".into()]);
        assert_eq!(s, "quiet console=ttyS0,115200");
        let s = add_args(&s, &["quiet loglevel=3".into()]);
        assert_eq!(s, "console=ttyS0,115200 quiet loglevel=3");
        assert_eq!(remove_args(&s, &["console".into()]), "quiet loglevel=3");
        assert_eq!(
            remove_args(&s, &["loglevel=4".into(), "quiet".into()]),
            "console=ttyS0,115200 loglevel=3"
        );
    }

    #[test]
    fn reserved_and_multiline_arguments_are_refused() {
        for bad in ["root=/dev/sda2", "boot=local", "clb.slot=a", "a\nb"] {
            assert!(
                matches!(check_args(bad), Err(ClbError::Invalid(_))),
                "{bad}"
            );
        }
        check_args("console=ttyS0 clb.debug rootwait").unwrap();
    }
}
