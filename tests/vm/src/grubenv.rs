//! The boot state as GRUB reads and writes it: `grub-editenv COS_STATE/grubenv list`, GRUB's
//! own environment block code, independent of clb's.

use std::path::Path;
use std::process::Command;

use crate::cmd::run;
use crate::disks::PartitionMount;

/// `grub-editenv COS_STATE/grubenv list`, as key/value pairs.
pub fn grubenv(disk: &Path, work: &Path) -> Vec<(String, String)> {
    let mnt = PartitionMount::state(disk, &work.join("grubenv-read"), false);
    let out = run(Command::new("grub-editenv")
        .arg(mnt.path().join("grubenv"))
        .arg("list"));
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of `key` in a [`grubenv`] listing; panics if it is not there.
pub fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {env:?}"))
}
