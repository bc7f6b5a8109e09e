//! xattrs a real Debian tree carries: POSIX ACLs (systemd puts them on /var/log/journal),
//! which SquashFS cannot store, and values holding a newline byte (a file capability can),
//! which a newline-splitting PAX parser cannot read. Checked with independent tools: GNU tar
//! reading what `tar_from_dir` wrote, and getfattr/getfacl/getcap on a kernel mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use clb_convert::ConvertError;
use common::{E, RawTar, convert, mount_squashfs, require, run};

/// `getfattr` lines `name=0xHEX` of one path (not following symlinks), sorted.
fn xattr_dump(path: &Path) -> Vec<String> {
    require("getfattr");
    let out = run(Command::new("getfattr")
        .args(["--absolute-names", "-h", "-d", "-m", "-", "-e", "hex"])
        .arg(path));
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn is_acl(line: &str) -> bool {
    line.starts_with("system.posix_acl_")
}

fn setfattr(path: &Path, name: &str, hex: &str) {
    require("setfattr");
    run(Command::new("setfattr")
        .args(["-n", name, "-v", hex])
        .arg(path));
}

fn setfacl(path: &Path, args: &[&str]) {
    require("setfacl");
    run(Command::new("setfacl").args(args).arg(path));
}

fn setcap(path: &Path, caps: &str) {
    require("setcap");
    run(Command::new("setcap").arg(caps).arg(path));
}

/// Extracts a tar with GNU tar, xattrs and ACLs included, and compares each path's xattrs
/// with the tree it was made from.
fn assert_gnu_tar_restores(tar: &[u8], dir: &Path, src: &Path, paths: &[&str]) {
    let file = dir.with_extension("tar");
    fs::write(&file, tar).unwrap();
    fs::create_dir_all(dir).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&file)
        .arg("-C")
        .arg(dir));
    for p in paths {
        assert_eq!(xattr_dump(&dir.join(p)), xattr_dump(&src.join(p)), "{p}");
    }
}

fn gnu_tar_list(tar: &[u8], file: &Path) -> Vec<String> {
    fs::write(file, tar).unwrap();
    let mut v: Vec<String> = run(Command::new("tar").arg("-tf").arg(file))
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

const PATHS: [&str; 5] = [
    "var/log/journal",
    "var/log/journal/system.journal",
    "usr/bin/ping",
    "etc/note",
    "etc",
];

/// The shape systemd and a capability-carrying package leave on a Debian root.
fn acl_tree(src: &Path) {
    for d in ["var/log/journal", "usr/bin", "etc"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("var/log/journal/system.journal"), "j").unwrap();
    fs::write(src.join("usr/bin/ping"), "ping").unwrap();
    fs::write(src.join("etc/note"), "n").unwrap();
    let journal = src.join("var/log/journal");
    setfacl(&journal, &["-m", "u:1234:rx,g:4:rx"]);
    setfacl(&journal, &["-d", "-m", "u:1234:rwx"]);
    setfacl(&journal.join("system.journal"), &["-m", "u:1234:r"]);
    setfattr(&journal, "user.origin", "journald");
    setcap(&src.join("usr/bin/ping"), "cap_net_raw+ep");
    setfattr(&src.join("etc/note"), "user.note", "0x68656c6c6f");
}

/// Every path of the tree is in the image with its xattrs, ACLs excepted.
fn assert_image_without_acls(img: &Path, src: &Path, mnt: &Path) {
    require("unsquashfs");
    let lls = run(Command::new("unsquashfs").arg("-lls").arg(img));
    for p in PATHS {
        assert!(lls.contains(&format!("squashfs-root/{p}\n")), "{p}: {lls}");
    }
    let m = mount_squashfs(img, mnt);
    for p in PATHS {
        let want: Vec<String> = xattr_dump(&src.join(p))
            .into_iter()
            .filter(|l| !is_acl(l))
            .collect();
        assert_eq!(xattr_dump(&m.dir.join(p)), want, "{p}");
    }
    assert!(
        xattr_dump(&m.dir.join("var/log/journal"))
            .contains(&"user.origin=0x6a6f75726e616c64".to_string())
    );
    require("getfacl");
    let acl = run(Command::new("getfacl")
        .args(["-n", "--absolute-names"])
        .arg(m.dir.join("var/log/journal")));
    assert!(!acl.contains("1234"), "{acl}");
    require("getcap");
    let caps = run(Command::new("getcap").arg(m.dir.join("usr/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "getcap: {caps:?}");
}

#[test]
fn acls_stay_in_the_tar_and_are_dropped_from_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    acl_tree(&src);
    let journal = xattr_dump(&src.join("var/log/journal"));
    assert_eq!(
        journal.iter().filter(|l| is_acl(l)).count(),
        2,
        "{journal:?}"
    );

    // `clb push` (tar+gzip): the layer keeps the ACLs, valid OCI that GNU tar restores.
    let mut tar = Vec::new();
    clb_convert::tar_from_dir(&src, &mut tar).unwrap();
    assert_gnu_tar_restores(&tar, &t.join("gnu"), &src, &PATHS);

    // `clb deploy`/`upgrade` staging that layer: converts, without the ACLs.
    let img = t.join("layer.sqfs");
    convert(&common::gzip(&tar), &img).unwrap();
    assert_image_without_acls(&img, &src, &t.join("mnt"));

    // `clb push --format squashfs` and `clb convert --merged`: straight from the directory.
    let img = t.join("dir.sqfs");
    clb_convert::squashfs_from_dir(&src, &img, &common::opts()).unwrap();
    assert_image_without_acls(&img, &src, &t.join("mnt2"));
}

#[test]
fn acl_records_in_a_foreign_layer_are_dropped() {
    // The ACL xattr as the kernel hands it out: version 2, then (tag, perm, id) entries.
    let acl: Vec<u8> = [
        &[2u8, 0, 0, 0][..],
        &[1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff],
        &[2, 0, 5, 0, 0xd2, 0x04, 0, 0],
        &[4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff],
        &[0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff],
        &[0x20, 0, 5, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut tagged = E::file("var/log/journal/x", b"x")
        .xattr("system.posix_acl_access", &acl)
        .xattr("security.capability", &cap);
    tagged
        .pax
        .push(("SCHILY.acl.access", b"user::rw-\nuser:1234:r--\n".to_vec()));
    let mut libarchive = E::file("var/log/other", b"o");
    libarchive.pax.push((
        "LIBARCHIVE.xattr.system.posix_acl_access",
        b"AgAAAA".to_vec(),
    ));
    libarchive
        .pax
        .push(("LIBARCHIVE.xattr.user.kept", b"eWVz".to_vec()));
    let mut t = RawTar::default();
    t.add(E::dir("var/"))
        .add(E::dir("var/log/"))
        .add(
            E::dir("var/log/journal/")
                .xattr("system.posix_acl_default", &acl)
                .xattr("system.posix_acl_access", &acl)
                .xattr("user.keep", b"1"),
        )
        .add(tagged)
        .add(libarchive);

    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("o.sqfs");
    convert(&t.finish(), &img).unwrap();
    assert_eq!(
        common::list(&img),
        [
            "var",
            "var/log",
            "var/log/journal",
            "var/log/journal/x",
            "var/log/other"
        ]
    );
    let m = mount_squashfs(&img, &tmp.path().join("mnt"));
    let r = &m.dir;
    assert_eq!(xattr_dump(&r.join("var/log/journal")), ["user.keep=0x31"]);
    assert_eq!(
        xattr_dump(&r.join("var/log/journal/x")),
        ["security.capability=0x0100000200200000000000000000000000000000"]
    );
    assert_eq!(xattr_dump(&r.join("var/log/other")), ["user.kept=0x796573"]);
}

#[test]
fn newline_bytes_in_xattr_values_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for f in ["a", "ping", "b"] {
        fs::write(src.join(f), f).unwrap();
    }
    setfattr(&src.join("a"), "user.test", "0x610a62");
    // CAP_DAC_OVERRIDE (1) and CAP_FOWNER (3): the permitted word's first byte is 0x0a.
    setcap(&src.join("ping"), "cap_dac_override,cap_fowner+ep");
    setfattr(&src.join("d"), "user.multi", "0x0a0a3d0a");
    // Split on newlines, this value would read as a record "13 path=evil".
    setfattr(
        &src.join("b"),
        "user.smuggle",
        "0x780a313320706174683d6576696c",
    );
    let cap = xattr_dump(&src.join("ping"));
    assert_eq!(
        cap,
        ["security.capability=0x010000020a000000000000000000000000000000"]
    );
    let paths = ["a", "b", "d", "ping"];

    let mut tar = Vec::new();
    clb_convert::tar_from_dir(&src, &mut tar).unwrap();
    // What `clb push` wrote is correct PAX: GNU tar reads the same names and bytes back.
    assert_eq!(gnu_tar_list(&tar, &t.join("list.tar")), paths);
    assert_gnu_tar_restores(&tar, &t.join("gnu"), &src, &paths);

    let check = |img: &Path, mnt: &str| {
        assert_eq!(common::list(img), paths);
        let m = mount_squashfs(img, &t.join(mnt));
        for p in paths {
            assert_eq!(xattr_dump(&m.dir.join(p)), xattr_dump(&src.join(p)), "{p}");
        }
    };
    let img = t.join("layer.sqfs");
    convert(&tar, &img).unwrap();
    check(&img, "mnt");
    let img = t.join("dir.sqfs");
    clb_convert::squashfs_from_dir(&src, &img, &common::opts()).unwrap();
    check(&img, "mnt2");
}

#[test]
fn pax_size_after_a_newline_value_frames_the_entry() {
    // Writers put `size` in PAX for files over 8 GiB and leave 0 in the header; a parser
    // that gives up at the newline would read the data as the next header.
    let mut big = E::file("big", b"hello, pax");
    big.pax.push(("SCHILY.xattr.user.nl", b"1\n2".to_vec()));
    big.pax.push(("size", b"10".to_vec()));
    big.header_size = Some(0);
    let mut t = RawTar::default();
    t.add(big).add(E::file("after", b"x"));
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("o.sqfs");
    convert(&t.finish(), &img).unwrap();
    assert_eq!(common::list(&img), ["after", "big"]);
    let m = mount_squashfs(&img, &tmp.path().join("mnt"));
    assert_eq!(fs::read(m.dir.join("big")).unwrap(), b"hello, pax");
    assert_eq!(fs::read(m.dir.join("after")).unwrap(), b"x");
    assert_eq!(xattr_dump(&m.dir.join("big")), ["user.nl=0x310a32"]);
}

fn convert_err(tar: &[u8]) -> ConvertError {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.sqfs");
    let err = convert(tar, &out).unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(!out.exists());
    err
}

#[test]
fn malformed_pax_headers_are_corrupt_input() {
    for (body, want) in [
        (&b"99 path=x\n"[..], "runs past the end"),
        (b"8 path=xy\n", "does not end on a newline"),
        (b"path=x\n", "decimal length"),
        (b"10 pathxy\n", "no keyword=value"),
        (b"12 size=1x2\n", "PAX record size: bad value"),
    ] {
        let mut t = RawTar::default();
        t.add(E::file("ok", b"ok"))
            .raw(b'x', body)
            .add(E::file("f", b"f"));
        let err = convert_err(&t.finish());
        assert!(
            matches!(&err, ConvertError::Corrupt(m) if m.contains(want)),
            "{want}: {err:?}"
        );
    }
    // Two PAX headers for one entry, and one that describes nothing.
    let mut t = RawTar::default();
    t.raw(b'x', b"10 path=a\n")
        .raw(b'x', b"10 path=b\n")
        .add(E::file("f", b"f"));
    assert!(matches!(convert_err(&t.finish()), ConvertError::Corrupt(_)));
    let mut t = RawTar::default();
    t.add(E::file("f", b"f")).raw(b'x', b"10 path=a\n");
    assert!(matches!(convert_err(&t.finish()), ConvertError::Corrupt(_)));
}

#[test]
fn pax_header_too_large_for_tar2sqfs_is_unsupported() {
    // tar2sqfs reads PAX headers of at most 64 KiB; Linux allows a 64 KiB value on its own.
    let big = vec![b'a'; 60_000];
    let mut t = RawTar::default();
    t.add(E::file("fits", b"f").xattr("user.big", &big));
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("o.sqfs");
    convert(&t.finish(), &img).unwrap();
    let m = mount_squashfs(&img, &tmp.path().join("mnt"));
    require("getfattr");
    let value = common::run_bytes(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.big"])
            .arg(m.dir.join("fits")),
    );
    assert_eq!(value, big);

    let mut t = RawTar::default();
    t.add(E::file("ok", b"ok"))
        .add(E::file("huge", b"h").xattr("user.big", &[b'a'; 65_536]));
    let err = convert_err(&t.finish());
    assert!(
        matches!(&err, ConvertError::Unsupported { path, .. } if path == "huge"),
        "{err:?}"
    );
}
