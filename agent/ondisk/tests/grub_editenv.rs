//! Cross-checks the boot state format with GRUB's own `grub-editenv` (package grub-common).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clb_ondisk::{BootState, SlotName};
use std::process::Command;

fn grub_editenv(args: &[&str]) -> String {
    let out = Command::new("grub-editenv")
        .args(args)
        .output()
        .expect("missing test prerequisite: grub-editenv (run scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "grub-editenv {args:?} failed: {out:?}"
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn grub_editenv_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut state = BootState::new(SlotName::A, 3);
    state.stage(SlotName::B);
    std::fs::write(&path, state.to_block().unwrap()).unwrap();
    let listed = grub_editenv(&[path.to_str().unwrap(), "list"]);
    assert!(listed.contains("clb_active=b\n"), "{listed}");
    assert!(listed.contains("clb_fallback=a\n"), "{listed}");
    assert!(listed.contains("clb_tries=3\n"), "{listed}");
    assert!(listed.contains("clb_good=0\n"), "{listed}");
}

#[test]
fn we_read_what_grub_editenv_writes_and_keep_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let p = path.to_str().unwrap();
    grub_editenv(&[p, "create"]);
    grub_editenv(&[
        p,
        "set",
        "saved_entry=clb",
        "clb_active=b",
        "clb_fallback=a",
        "clb_tries=1",
        "clb_good=0",
    ]);
    let mut state = BootState::parse(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state.active, SlotName::B);
    assert_eq!(state.tries_left, 1);
    state.decide_boot();
    std::fs::write(&path, state.to_block().unwrap()).unwrap();
    let listed = grub_editenv(&[p, "list"]);
    assert!(listed.contains("saved_entry=clb\n"), "{listed}");
    assert!(listed.contains("clb_tries=0\n"), "{listed}");
}
