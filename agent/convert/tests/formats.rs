#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use common::{E, RawTar, convert, list, require, run};

fn sample() -> Vec<u8> {
    let long = format!("deep/{}", "n".repeat(180));
    let mut t = RawTar::default();
    t.add(E::dir("./"))
        .add(E::dir("./etc/"))
        .add(E::file("./etc/hostname", b"clb\n"))
        .add(E::link("./etc/link", b'2', "hostname"))
        .add(E::file(Box::leak(long.into_boxed_str()), b"long"))
        .add(E::file("empty", b""));
    t.finish()
}

fn expected() -> Vec<String> {
    let mut v: Vec<String> = ["deep", "empty", "etc", "etc/hostname", "etc/link"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(format!("deep/{}", "n".repeat(180)));
    v.sort();
    v
}

fn check(input: &[u8], tar_len: usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layer.sqfs");
    let stats = convert(input, &out).unwrap();
    assert_eq!(list(&out), expected());
    assert_eq!(stats.entries, 6);
    assert_eq!(stats.input_bytes, input.len() as u64);
    assert_eq!(stats.tar_bytes, tar_len as u64);
    assert_eq!(stats.output_bytes, std::fs::metadata(&out).unwrap().len());
    // The digest a store names the layer by, against coreutils' own hash of the file.
    let sum = run(Command::new("sha256sum").arg(&out));
    let hex = sum.split_whitespace().next().unwrap();
    assert_eq!(stats.output_digest, format!("sha256:{hex}"));
    require("unsquashfs");
    let lls = run(Command::new("unsquashfs").arg("-lls").arg(&out));
    assert!(lls.contains("etc/link -> hostname"), "{lls}");
    run(Command::new("unsquashfs").arg("-stat").arg(&out));
}

#[test]
fn plain_tar() {
    let tar = sample();
    check(&tar, tar.len());
}

#[test]
fn gzip_tar() {
    let tar = sample();
    check(&common::gzip(&tar), tar.len());
}

#[test]
fn zstd_tar() {
    let tar = sample();
    check(&common::zstd(&tar), tar.len());
}

#[test]
fn gnu_longname_from_tar_crate() {
    // tar::Builder writes GNU long-name entries, the other way long names arrive.
    let name = format!("a/{}/file", "x".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, &name, &b"abc"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.sqfs");
    convert(&tar, &out).unwrap();
    assert!(list(&out).contains(&name), "{:?}", list(&out));
}

#[test]
fn every_compressor() {
    let tar = sample();
    let dir = tempfile::tempdir().unwrap();
    for (c, level) in [
        (clb_convert::Compressor::Gzip, Some(1)),
        (clb_convert::Compressor::Xz, None),
        (clb_convert::Compressor::Lz4, Some(1)),
        (clb_convert::Compressor::Zstd, Some(19)),
    ] {
        let out = dir.path().join(format!("{c}.sqfs"));
        let opts = clb_convert::ConvertOptions {
            compressor: c,
            level,
            jobs: 1,
            max_tar_bytes: None,
        };
        require("tar2sqfs");
        clb_convert::tar_layer_to_squashfs(&tar[..], &out, &opts).unwrap();
        let stat = run(Command::new("unsquashfs").arg("-stat").arg(&out));
        assert!(stat.contains(&format!("Compression {c}")), "{stat}");
    }
}

#[test]
fn reproducible() {
    let tar = sample();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    convert(&tar, &a).unwrap();
    convert(&tar, &b).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn pax_metadata_survives() {
    let mut e = E::file("meta", b"m");
    e.pax.push(("uid", b"5000000".to_vec()));
    e.pax.push(("gid", b"6000000".to_vec()));
    e.pax.push(("mtime", b"1700000000.75".to_vec()));
    e.pax.push((
        "LIBARCHIVE.xattr.user.from%2Dlibarchive",
        b"aGVsbG8".to_vec(),
    ));
    let e = e.xattr("user.schily", b"v\0bin");
    let mut t = RawTar::default();
    t.add(e);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.sqfs");
    convert(&t.finish(), &out).unwrap();
    let m = common::mount_squashfs(&out, &dir.path().join("mnt"));
    let md = std::fs::metadata(m.dir.join("meta")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (md.uid(), md.gid(), md.mtime()),
        (5_000_000, 6_000_000, 1_700_000_000)
    );
    let mut v = [0u8; 64];
    let n = rustix::fs::getxattr(m.dir.join("meta"), "user.from-libarchive", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"hello");
    let n = rustix::fs::getxattr(m.dir.join("meta"), "user.schily", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"v\0bin");
}

/// A file with ten data islands between holes: more chunks than a GNU header holds (4), so
/// GNU tar writes sparse extension blocks too.
fn sparse_file(path: &std::path::Path) -> Vec<u8> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    let size = 11 * 64 * 1024 + 123;
    f.set_len(size).unwrap();
    for i in 0..10u64 {
        f.seek(SeekFrom::Start((i + 1) * 64 * 1024 - 700)).unwrap();
        f.write_all(&vec![b'a' + i as u8; 900]).unwrap();
    }
    f.sync_all().unwrap();
    std::fs::read(path).unwrap()
}

fn gnu_tar(dir: &std::path::Path, format: &str) -> Vec<u8> {
    common::run_bytes(
        Command::new("tar")
            .args(["--sparse", &format!("--format={format}"), "-cf", "-", "-C"])
            .arg(dir)
            .arg("sparse"),
    )
}

#[test]
fn gnu_sparse_files_are_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let want = sparse_file(&dir.path().join("sparse"));
    let tar = gnu_tar(dir.path(), "gnu");
    assert_eq!(tar[156], b'S', "GNU tar did not write a sparse entry");
    assert_eq!(tar[482], 1, "no sparse extension block");
    let out = dir.path().join("s.sqfs");
    convert(&tar, &out).unwrap();
    let m = common::mount_squashfs(&out, &dir.path().join("mnt"));
    assert!(std::fs::read(m.dir.join("sparse")).unwrap() == want);
}

#[test]
fn gnu_pax_sparse_files_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    sparse_file(&dir.path().join("sparse"));
    let tar = gnu_tar(dir.path(), "posix");
    assert!(tar.windows(11).any(|w| w == b"GNU.sparse."));
    let out = dir.path().join("s.sqfs");
    let err = convert(&tar, &out).unwrap_err();
    assert!(
        matches!(err, clb_convert::ConvertError::Unsupported { .. }),
        "{err:?}"
    );
    assert!(err.is_invalid_input());
    assert!(!out.exists());
}
