//! Kernel-level checks: convert two layers, mount them with squashfs + overlayfs, and look.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{E, RawTar, convert, mount_overlay, mount_squashfs, require, run, run_bytes};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The lower layer as Docker would ship it: GNU tar of a real tree, `./` prefixes, a file
/// capability in SCHILY.xattr, a hard link, a symlink, odd ownership.
fn lower_layer(src: &Path) -> Vec<u8> {
    for d in ["etc", "opq/sub", "opq2", "opq3", "bin", "data"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (f, c) in [
        ("etc/keep", "keep"),
        ("etc/gone", "gone"),
        ("opq/old1", "1"),
        ("opq/sub/old2", "2"),
        ("opq2/old", "o"),
        ("opq3/old", "o"),
        ("bin/ping", "ping"),
        ("data/h1", "linked"),
        ("data/owned", "owned"),
    ] {
        fs::write(src.join(f), c).unwrap();
    }
    fs::hard_link(src.join("data/h1"), src.join("data/h2")).unwrap();
    std::os::unix::fs::symlink("h1", src.join("data/sym")).unwrap();
    let owned = src.join("data/owned");
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&owned, Some(1234), Some(5678)).unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "@1500000000"])
        .arg(&owned));
    require("setcap");
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("bin/ping")));
    let out = run_bytes(
        Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-cf",
                "-",
                "-C",
            ])
            .arg(src)
            .arg("."),
    );
    assert!(
        out.windows(32)
            .any(|w| w == b"SCHILY.xattr.security.capability"),
        "GNU tar did not record the capability"
    );
    out
}

fn upper_layer() -> Vec<u8> {
    let mut t = RawTar::default();
    t.add(E::dir("etc/"))
        .add(E::file("etc/.wh.gone", b""))
        // Usual order: directory, then its opaque marker, then contents.
        .add(E::dir("opq/"))
        .add(E::file("opq/.wh..wh..opq", b""))
        .add(E::file("opq/new", b"new"))
        // Marker before its directory entry.
        .add(E::file("opq2/.wh..wh..opq", b""))
        .add(E::dir("opq2/"))
        .add(E::file("opq2/new2", b"new2"))
        // Marker for a directory the layer never lists.
        .add(E::file("opq3/.wh..wh..opq", b""));
    t.finish()
}

#[test]
fn layers_stack_under_overlayfs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let lower_img = t.join("lower.sqfs");
    let upper_img = t.join("upper.sqfs");
    convert(&common::gzip(&lower_layer(&t.join("src"))), &lower_img).unwrap();
    convert(&common::zstd(&upper_layer()), &upper_img).unwrap();

    let lower = mount_squashfs(&lower_img, &t.join("lower"));
    let upper = mount_squashfs(&upper_img, &t.join("upper"));
    let root = mount_overlay(&[&upper.dir, &lower.dir], &t.join("root"));
    let r = &root.dir;

    // Whiteout: the upper layer holds a 0/0 char device, and the file is gone.
    let wh = fs::symlink_metadata(upper.dir.join("etc/gone")).unwrap();
    assert_eq!((wh.file_type().is_char_device(), wh.rdev()), (true, 0));
    assert_eq!(names(&r.join("etc")), ["keep"]);
    assert_eq!(fs::read_to_string(r.join("etc/keep")).unwrap(), "keep");

    // Opaque directories hide everything below them, whatever the marker's position.
    assert_eq!(names(&r.join("opq")), ["new"]);
    assert_eq!(names(&r.join("opq2")), ["new2"]);
    assert!(names(&r.join("opq3")).is_empty());

    // Capability kept.
    require("getcap");
    let caps = run(Command::new("getcap").arg(r.join("bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "getcap: {caps:?}");

    // Hard link: one inode, two names, both in the image and through the overlay.
    for base in [&lower.dir, r] {
        let (h1, h2) = (
            fs::metadata(base.join("data/h1")).unwrap(),
            fs::metadata(base.join("data/h2")).unwrap(),
        );
        assert_eq!((h1.nlink(), h2.nlink()), (2, 2), "in {}", base.display());
        assert_eq!(h1.ino(), h2.ino());
    }
    assert_eq!(fs::read_link(r.join("data/sym")).unwrap(), Path::new("h1"));
    assert_eq!(fs::read_to_string(r.join("data/sym")).unwrap(), "linked");

    let owned = fs::metadata(r.join("data/owned")).unwrap();
    assert_eq!(owned.mode() & 0o7777, 0o640);
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert_eq!(owned.mtime(), 1_500_000_000);
}
