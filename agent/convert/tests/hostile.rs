#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use clb_convert::ConvertError;
use common::{E, RawTar, convert};

/// A layer with a good entry first, so output has really started when the bad one arrives.
fn layer_with(bad: E<'_>) -> Vec<u8> {
    let mut t = RawTar::default();
    t.add(E::dir("ok/"))
        .add(E::file("ok/file", &[7u8; 5000]))
        .add(bad);
    t.add(E::file("after", b"x"));
    t.finish()
}

fn assert_refused(bad: E<'_>, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    let err = convert(&layer_with(bad), &out).unwrap_err();
    assert!(
        matches!(err, ConvertError::HostilePath { .. }),
        "{why}: expected HostilePath, got {err:?}"
    );
    assert!(err.is_invalid_input());
    assert!(!out.exists(), "{why}: output left behind");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn dotdot_name() {
    assert_refused(E::file("../x", b"x"), "../x");
}

#[test]
fn dotdot_inside_name() {
    assert_refused(E::file("a/../../x", b"x"), "a/../../x");
}

#[test]
fn absolute_name() {
    assert_refused(E::file("/etc/passwd", b"x"), "/etc/passwd");
}

#[test]
fn hardlink_escaping() {
    assert_refused(
        E::link("a/shadow", b'1', "../../etc/shadow"),
        "hard link ../../etc/shadow",
    );
}

#[test]
fn hardlink_absolute() {
    assert_refused(
        E::link("a/shadow", b'1', "/etc/shadow"),
        "hard link /etc/shadow",
    );
}

#[test]
fn symlink_escaping() {
    assert_refused(
        E::link("a/b", b'2', "../../../x"),
        "symlink a/b -> ../../../x",
    );
}

#[test]
fn nul_in_pax_path() {
    let mut e = E::file("short", b"x");
    e.pax.push(("path", b"evil\0name".to_vec()));
    assert_refused(e, "NUL in name");
}

#[test]
fn unknown_type() {
    assert_refused(E::new("weird", b'V'), "volume label");
}

#[test]
fn absolute_symlink_is_fine_and_dot_slash_is_normal() {
    let mut t = RawTar::default();
    t.add(E::dir("./usr/"))
        .add(E::link("./usr/abs", b'2', "/etc/os-release"))
        .add(E::link("./usr/rel", b'2', "../etc/os-release"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    convert(&t.finish(), &out).unwrap();
    assert_eq!(common::list(&out), ["usr", "usr/abs", "usr/rel"]);
}

fn assert_corrupt(input: &[u8], why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    let err = convert(input, &out).unwrap_err();
    assert!(
        matches!(err, ConvertError::Corrupt(_)),
        "{why}: expected Corrupt, got {err:?}"
    );
    assert!(!out.exists(), "{why}: output left behind");
}

fn big_layer() -> Vec<u8> {
    // Incompressible, distinct data: truncation cuts into entry data and the image cannot
    // shrink below the input (no dedup, no compression).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    };
    let (a, b) = (noise(300_000), noise(300_000));
    let mut t = RawTar::default();
    t.add(E::file("a", &a)).add(E::file("b", &b));
    t.finish()
}

#[test]
fn truncated_gzip() {
    let gz = common::gzip(&big_layer());
    assert_corrupt(&gz[..gz.len() / 2], "gzip cut in half");
    assert_corrupt(&gz[..gz.len() - 4], "gzip without its trailer");
}

#[test]
fn truncated_zstd() {
    let z = common::zstd(&big_layer());
    assert_corrupt(&z[..z.len() / 2], "zstd cut in half");
}

#[test]
fn truncated_plain() {
    let tar = big_layer();
    assert_corrupt(&tar[..1000], "inside entry data");
    // Cut exactly after the first entry: no end-of-archive marker.
    assert_corrupt(
        &tar[..512 + 300_000usize.div_ceil(512) * 512],
        "at an entry boundary",
    );
    assert_corrupt(b"", "empty input");
    assert_corrupt(&[0x55u8; 2048], "garbage");
}

#[test]
fn tool_failure_is_reported_and_cleaned_up() {
    // A hard link to an entry that does not exist passes our rules but tar2sqfs rejects it.
    let mut t = RawTar::default();
    t.add(E::link("dangling", b'1', "nowhere"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    let err = convert(&t.finish(), &out).unwrap_err();
    assert!(is_failed_tar2sqfs(&err), "{err:?}");
    assert!(!out.exists());

    let missing_dir = dir.path().join("no/such/dir/out.sqfs");
    let err = convert(&common::zstd(&big_layer()), &missing_dir).unwrap_err();
    assert!(is_failed_tar2sqfs(&err), "{err:?}");
    assert!(!err.is_invalid_input());
}

/// A non-zero tar2sqfs exit is the shared `CommandError::Failed`, so callers' `says_no_space`
/// and exit-code mapping apply to it like to any other program.
fn is_failed_tar2sqfs(err: &ConvertError) -> bool {
    matches!(err, ConvertError::Command(c @ clb_command::CommandError::Failed { program, command, .. })
        if program == "tar2sqfs" && command.starts_with("tar2sqfs -q -f --no-skip") && !c.says_no_space())
}

#[test]
fn bad_level() {
    let opts = clb_convert::ConvertOptions {
        level: Some(30),
        ..clb_convert::ConvertOptions::host()
    };
    let dir = tempfile::tempdir().unwrap();
    let err =
        clb_convert::tar_layer_to_squashfs(&b""[..], &dir.path().join("o"), &opts).unwrap_err();
    assert!(matches!(err, ConvertError::InvalidOptions(_)), "{err:?}");
}

#[test]
fn failing_reader_is_io() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(0x41);
            self.0 -= n;
            Ok(n)
        }
    }
    let tar = big_layer();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    let gz = common::gzip(&tar);
    let input = std::io::Read::chain(&gz[..gz.len() / 2], Failing(0));
    let err = convert_reader(input, &out);
    assert!(matches!(err, ConvertError::Io { .. }), "{err:?}");
    assert!(!out.exists());
}

fn convert_reader(r: impl std::io::Read, out: &std::path::Path) -> ConvertError {
    common::require("tar2sqfs");
    clb_convert::tar_layer_to_squashfs(r, out, &common::opts()).unwrap_err()
}

#[test]
fn late_opaque_marker_is_unsupported() {
    let mut t = RawTar::default();
    t.add(E::dir("a/"))
        .add(E::file("a/x", b"x"))
        .add(E::dir("b/"))
        .add(E::file("a/.wh..wh..opq", b""));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sqfs");
    let err = convert(&t.finish(), &out).unwrap_err();
    assert!(matches!(err, ConvertError::Unsupported { .. }), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn tool_error_carries_stderr() {
    let mut t = RawTar::default();
    t.add(E::link("dangling", b'1', "nowhere"));
    let dir = tempfile::tempdir().unwrap();
    let err = convert(&t.finish(), &dir.path().join("o")).unwrap_err();
    let msg = err.to_string();
    let prefix = "tar2sqfs failed (exit status: 1): ";
    assert!(msg.starts_with(prefix), "{msg}");
    assert!(msg.len() > prefix.len() + 5, "{msg}");
    assert!(!msg.contains("no error output"), "{msg}");
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn full_disk_is_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    common::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&small),
    );
    let _guard = common::Mounted { dir: small.clone() };
    let out = small.join("out.sqfs");
    let err = convert(&big_layer(), &out).unwrap_err();
    assert!(matches!(err, ConvertError::NoSpace(_)), "{err:?}");
    assert!(!out.exists());
}
