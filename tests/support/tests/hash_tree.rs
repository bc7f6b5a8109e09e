//! hash_tree must see every change that matters and nothing else.

// Test code: panicking with a message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use clb_testsupport::{hash_tree, require_tool, tree_manifest};

fn build(root: &Path) {
    fs::create_dir_all(root.join("etc/empty")).expect("mkdir");
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    fs::write(root.join("etc/hostname"), "clb\n").expect("write");
    fs::write(root.join("usr/bin/tool"), vec![7u8; 100_000]).expect("write");
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
    symlink("../etc/hostname", root.join("usr/link")).expect("symlink");
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn stable_and_independent_of_location() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    build(a.path());
    build(b.path());
    chmod(
        b.path(),
        fs::metadata(a.path()).expect("stat").permissions().mode(),
    );
    let h = hash_tree(a.path());
    assert_eq!(h.len(), 64);
    assert_eq!(h, hash_tree(a.path()), "stable");
    assert_eq!(
        h,
        hash_tree(b.path()),
        "same content elsewhere:\n{}\n{}",
        tree_manifest(a.path()),
        tree_manifest(b.path())
    );
    assert!(
        tree_manifest(a.path()).contains("etc/empty dir"),
        "{}",
        tree_manifest(a.path())
    );
}

#[test]
fn detects_content_mode_symlink_and_structure_changes() {
    let t = tempfile::tempdir().expect("tempdir");
    let r = t.path();
    build(r);
    let orig = hash_tree(r);
    let check = |what: &str, change: &dyn Fn(), undo: &dyn Fn()| {
        change();
        assert_ne!(hash_tree(r), orig, "{what} must change the hash");
        undo();
        assert_eq!(hash_tree(r), orig, "undoing {what} restores the hash");
    };
    let tool = r.join("usr/bin/tool");
    check(
        "one byte",
        &|| {
            let mut d = fs::read(&tool).expect("read");
            d[50_000] = 8;
            fs::write(&tool, d).expect("write");
        },
        &|| fs::write(&tool, vec![7u8; 100_000]).expect("write"),
    );
    check("a mode bit", &|| chmod(&tool, 0o754), &|| {
        chmod(&tool, 0o755)
    });
    check("setuid", &|| chmod(&tool, 0o4755), &|| chmod(&tool, 0o755));
    let link = r.join("usr/link");
    let relink = |target: &str| {
        fs::remove_file(&link).expect("rm link");
        symlink(target, &link).expect("symlink");
    };
    check("a symlink target", &|| relink("../etc/hostnamE"), &|| {
        relink("../etc/hostname")
    });
    check(
        "an empty dir",
        &|| fs::create_dir(r.join("new")).expect("mkdir"),
        &|| fs::remove_dir(r.join("new")).expect("rmdir"),
    );
    check(
        "a rename",
        &|| fs::rename(r.join("etc/hostname"), r.join("etc/hostnamf")).expect("mv"),
        &|| fs::rename(r.join("etc/hostnamf"), r.join("etc/hostname")).expect("mv"),
    );
    check(
        "a file replaced by a symlink to the same content",
        &|| {
            fs::remove_file(r.join("etc/hostname")).expect("rm");
            fs::write(r.join("hn"), "clb\n").expect("write");
            symlink("../hn", r.join("etc/hostname")).expect("symlink");
        },
        &|| {
            fs::remove_file(r.join("etc/hostname")).expect("rm");
            fs::remove_file(r.join("hn")).expect("rm");
            fs::write(r.join("etc/hostname"), "clb\n").expect("write");
        },
    );
}

#[test]
fn does_not_follow_symlinks() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(outside.path().join("f"), "1").expect("write");
    symlink(outside.path(), t.path().join("out")).expect("symlink");
    let h = hash_tree(t.path());
    fs::write(outside.path().join("f"), "2").expect("write");
    fs::write(outside.path().join("g"), "new").expect("write");
    assert_eq!(
        hash_tree(t.path()),
        h,
        "content behind a symlink is not part of the tree"
    );
}

#[test]
fn require_tool_finds_sh() {
    assert!(require_tool("sh").is_absolute());
}

#[test]
#[should_panic(
    expected = "missing test prerequisite: clb-no-such-tool (run scripts/install-test-deps)"
)]
fn require_tool_panics_when_missing() {
    require_tool("clb-no-such-tool");
}
