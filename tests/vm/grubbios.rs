//! Reading the boot state GRUB wrote, for the BIOS GRUB test (clb itself installs GRUB:
//! `clb deploy --bootloader bios`, agent/src/bootloader.rs).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use crate::vmkit::{StateMount, run};

/// `grub-editenv COS_STATE/grubenv list`, as key/value pairs.
pub fn grubenv(disk: &Path, work: &Path) -> Vec<(String, String)> {
    let mnt = StateMount::open(disk, &work.join("grubenv-read"), false);
    let out = run(Command::new("grub-editenv")
        .arg(mnt.path().join("grubenv"))
        .arg("list"));
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {env:?}"))
}
