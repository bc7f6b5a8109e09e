#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Slot roots: SquashFS layers stacked read-only with overlayfs.

mod common;

use std::path::{Path, PathBuf};

use common::*;

use clb_disk::{DiskError, is_mount_point, mount_layer_stack_in, unmount_stack_in};

/// Build a SquashFS layer from (path, contents) pairs; a `None` content is an overlayfs
/// whiteout (char device 0/0), as the converter writes for deleted files.
fn layer(scratch: &mut Scratch, name: &str, files: &[(&str, Option<&str>)]) -> PathBuf {
    let src = scratch.path(&format!("{name}.d"));
    for (path, content) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match content {
            Some(c) => std::fs::write(&p, c).unwrap(),
            None => {
                tool("mknod", &[s(&p), "c", "0", "0"]);
            }
        }
    }
    let out = scratch.path(&format!("{name}.sqfs"));
    tool(
        "mksquashfs",
        &[
            s(&src),
            s(&out),
            "-noappend",
            "-quiet",
            "-no-progress",
            "-comp",
            "gzip",
        ],
    );
    scratch.track(&out);
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_erofs(target: &Path) {
    let err = std::fs::write(target.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "expected EROFS, got {err}");
}

#[test]
fn three_layers_persist_and_unmount() {
    let mut scratch = Scratch::new();
    let bottom = layer(
        &mut scratch,
        "bottom",
        &[
            ("etc/os-release", Some("bottom")),
            ("usr/bottom-only", Some("b")),
            ("usr/deleted-later", Some("gone")),
        ],
    );
    let middle = layer(
        &mut scratch,
        "middle",
        &[("etc/os-release", Some("middle")), ("usr/mid", Some("m"))],
    );
    let top = layer(
        &mut scratch,
        "top",
        &[("etc/os-release", Some("top")), ("usr/deleted-later", None)],
    );
    let run = scratch.path("run");
    let target = scratch.path("root");
    std::fs::create_dir(&target).unwrap();
    let layers = [bottom.clone(), middle.clone(), top.clone()];

    let stack = mount_layer_stack_in(&run, &layers, &target).unwrap();
    assert_eq!(read(&target.join("etc/os-release")), "top");
    assert_eq!(read(&target.join("usr/bottom-only")), "b");
    assert_eq!(read(&target.join("usr/mid")), "m");
    assert!(
        !target.join("usr/deleted-later").exists(),
        "whiteout ignored"
    );
    assert_erofs(&target);
    let layer_dirs = stack.layer_dirs().to_vec();
    assert_eq!(layer_dirs.len(), 3);
    assert_eq!(read(&layer_dirs[0].join("etc/os-release")), "bottom");

    // Mounting the same target again is refused while the first one is there... after persist.
    let record = stack.persist().unwrap();
    assert!(record.exists());
    assert!(is_mount_point(&target));
    for l in &layers {
        assert_eq!(loops_of(l).len(), 1, "{}", l.display());
    }
    match mount_layer_stack_in(&run, &layers, &target) {
        Err(DiskError::Busy { .. }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }

    // A different process would do exactly this (`clb umount DIR`).
    unmount_stack_in(&run, &target).unwrap();
    assert!(!is_mount_point(&target));
    assert!(mounted_under(scratch.dir.path()).is_empty());
    for l in &layers {
        assert!(loops_of(l).is_empty(), "loop left for {}", l.display());
    }
    for d in &layer_dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!record.exists());
    match unmount_stack_in(&run, &target) {
        Err(DiskError::NotMounted { .. }) => {}
        other => panic!("expected NotMounted, got {other:?}"),
    }
}

#[test]
fn two_layers_unmount_on_drop() {
    let mut scratch = Scratch::new();
    let lower = layer(
        &mut scratch,
        "lower",
        &[("a", Some("lower")), ("only-lower", Some("l"))],
    );
    let upper = layer(&mut scratch, "upper", &[("a", Some("upper"))]);
    let target = scratch.path("root");
    std::fs::create_dir(&target).unwrap();
    let run = scratch.path("run");

    let stack = mount_layer_stack_in(&run, &[lower.clone(), upper.clone()], &target).unwrap();
    assert_eq!(read(&target.join("a")), "upper");
    assert_eq!(read(&target.join("only-lower")), "l");
    assert_erofs(&target);
    drop(stack);
    assert!(mounted_under(scratch.dir.path()).is_empty());
    assert!(loops_of(&lower).is_empty() && loops_of(&upper).is_empty());
    assert!(
        std::fs::read_dir(run.join("layers"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn single_layer_is_a_read_only_bind() {
    let mut scratch = Scratch::new();
    let only = layer(&mut scratch, "only", &[("etc/hostname", Some("one"))]);
    let target = scratch.path("root");
    std::fs::create_dir(&target).unwrap();
    let run = scratch.path("run");

    let stack = mount_layer_stack_in(&run, std::slice::from_ref(&only), &target).unwrap();
    assert_eq!(read(&target.join("etc/hostname")), "one");
    assert_erofs(&target);
    stack.persist().unwrap();
    unmount_stack_in(&run, &target).unwrap();
    assert!(mounted_under(scratch.dir.path()).is_empty());
    assert!(loops_of(&only).is_empty());
}

#[test]
fn bad_layer_unwinds_what_was_mounted() {
    let mut scratch = Scratch::new();
    let good = layer(&mut scratch, "good", &[("f", Some("x"))]);
    let bad = scratch.path("bad.sqfs");
    std::fs::write(&bad, vec![0u8; 64 * 1024]).unwrap();
    scratch.track(&bad);
    let target = scratch.path("root");
    std::fs::create_dir(&target).unwrap();
    let run = scratch.path("run");

    let err = mount_layer_stack_in(&run, &[good.clone(), bad.clone()], &target).unwrap_err();
    assert!(matches!(err, DiskError::Io { .. }), "{err:?}");
    assert!(mounted_under(scratch.dir.path()).is_empty());
    assert!(loops_of(&good).is_empty() && loops_of(&bad).is_empty());
    assert!(matches!(
        mount_layer_stack_in(&run, &[], &target),
        Err(DiskError::Invalid(_))
    ));
}
