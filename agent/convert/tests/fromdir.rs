//! tar_from_dir / squashfs_from_dir: a tree survives the trip to SquashFS unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{mount_squashfs, require, run};

fn xattrs(p: &Path) -> Vec<String> {
    let mut list = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut list[..]).unwrap();
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut v = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        out.push(format!("{name}={:?}", &v[..len]));
    }
    out.sort();
    out
}

/// Everything that must survive, per path, except the root itself.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let extra = if ft.is_file() {
                format!("data={:?}", fs::read(&p).unwrap())
            } else if ft.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev={}", md.rdev())
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let nlink = if ft.is_dir() { 0 } else { md.nlink() };
            out.insert(
                rel,
                format!(
                    "mode={:o} uid={} gid={} mtime={} nlink={nlink} {extra} xattrs={:?}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.mtime(),
                    xattrs(&p)
                ),
            );
        }
    }
    out
}

fn build_tree(src: &Path) {
    fs::create_dir_all(src.join("etc/empty")).unwrap();
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::create_dir_all(src.join("hidden")).unwrap();
    fs::write(src.join("etc/a"), "alpha").unwrap();
    fs::write(src.join("etc/zero"), "").unwrap();
    fs::write(src.join("usr/bin/ping"), "ping").unwrap();
    fs::write(src.join("usr/bin/suid"), "s").unwrap();
    fs::set_permissions(src.join("usr/bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(src.join("etc/a"), Some(42), Some(43)).unwrap();
    fs::hard_link(src.join("etc/a"), src.join("usr/a-again")).unwrap();
    std::os::unix::fs::symlink("../etc/a", src.join("usr/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/a", src.join("usr/abs")).unwrap();
    run(Command::new("mkfifo").arg(src.join("usr/fifo")));
    run(Command::new("mknod")
        .arg(src.join("usr/null"))
        .args(["c", "1", "3"]));
    require("setcap");
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("usr/bin/ping")));
    rustix::fs::lsetxattr(
        src.join("hidden"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::write(src.join(format!("usr/{}", "L".repeat(200))), "long").unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "@1234567890"])
        .arg(src.join("usr/rel")));
    run(Command::new("touch")
        .args(["-d", "@1234567890"])
        .arg(src.join("etc")));
}

#[test]
fn directory_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let img = tmp.path().join("dir.sqfs");
    require("tar2sqfs");
    let stats = clb_convert::squashfs_from_dir(&src, &img, &common::opts()).unwrap();
    assert_eq!(stats.entries, 15);
    let m = mount_squashfs(&img, &tmp.path().join("mnt"));
    let want = snapshot(&src);
    let got = snapshot(&m.dir);
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k}");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{:?}",
        got.keys().collect::<Vec<_>>()
    );
    assert!(want["usr/bin/ping"].contains("security.capability"));
    assert!(want["usr/a-again"].contains("nlink=2"));
    let root = fs::metadata(&m.dir).unwrap();
    assert_eq!(
        (root.mode() & 0o7777, root.uid(), root.gid()),
        (0o755, 0, 0)
    );
}

#[test]
fn tar_is_reproducible_and_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let stats = clb_convert::tar_from_dir(&src, &mut a).unwrap();
    clb_convert::tar_from_dir(&src, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(stats.bytes, a.len() as u64);
    let mut ar = tar::Archive::new(&a[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
        if e.path_bytes().as_ref() == b"usr/a-again" {
            assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            assert_eq!(e.link_name_bytes().unwrap().as_ref(), b"etc/a");
        }
    }
    assert_eq!(names.len() as u64, stats.entries);
    assert_eq!(names[..4], ["etc", "etc/a", "etc/empty", "etc/zero"]);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with('.') || n.starts_with('/'))
    );
}

#[test]
fn hostile_symlink_in_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), vec![1u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("../../x", src.join("a/evil")).unwrap();
    let img = tmp.path().join("o.sqfs");
    require("tar2sqfs");
    let err = clb_convert::squashfs_from_dir(&src, &img, &common::opts()).unwrap_err();
    assert!(
        matches!(err, clb_convert::ConvertError::HostilePath { .. }),
        "{err:?}"
    );
    assert!(!img.exists());

    let err = clb_convert::squashfs_from_dir(&tmp.path().join("nope"), &img, &common::opts())
        .unwrap_err();
    assert!(
        matches!(err, clb_convert::ConvertError::Io { .. }),
        "{err:?}"
    );
    assert!(!img.exists());
}
