//! Shared fixture of the agent's end-to-end tests: a real `docker-registry` on 127.0.0.1,
//! the real `clb` binary, image trees built from directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The daemon harness (private system bus, fake logind, `clb daemon`), shared with the node
/// bridge's tests.
#[allow(unused_imports)]
pub use clb_testsupport::bus;

#[allow(unused_imports)]
pub use clb_testsupport::{Registry, RegistryOptions};
#[allow(unused_imports)]
pub use clb_testsupport::{hash_tree, require_tool};

pub const PASSWORD: &str = clb_testsupport::COSIGN_PASSWORD;

pub fn clb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_clb")
}

pub struct Fixture {
    pub reg: Registry,
    pub work: tempfile::TempDir,
    pub key: PathBuf,
    pub pubkey: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_registry(Registry::start_plain())
    }

    pub fn with_registry(reg: Registry) -> Self {
        let work = tempfile::tempdir().unwrap();
        let prefix = work.path().join("cosign");
        let out = clb(&["keygen", "--output-key-prefix", prefix.to_str().unwrap()]);
        assert_ok(&out);
        Fixture {
            reg,
            key: prefix.with_extension("key"),
            pubkey: prefix.with_extension("pub"),
            work,
        }
    }

    pub fn image(&self, repo_tag: &str) -> String {
        self.reg.image_ref(repo_tag)
    }

    /// Registry flags for a TLS/auth registry (none for a plain one).
    pub fn registry_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ca) = self.reg.ca_cert_path() {
            flags.push("--ca-file".to_string());
            flags.push(ca.display().to_string());
        }
        if let Some((u, p)) = self.reg.credentials() {
            flags.push("--creds".to_string());
            flags.push(format!("{u}:{p}"));
        }
        flags
    }

    /// `clb push DIRS... IMAGE`; returns the manifest digest.
    pub fn push(&self, dirs: &[&Path], repo_tag: &str, extra: &[&str]) -> String {
        let mut args: Vec<String> = vec!["--json".into(), "push".into()];
        args.extend(dirs.iter().map(|d| d.display().to_string()));
        args.push(self.image(repo_tag));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.registry_flags());
        let out = clb_owned(&args);
        assert_ok(&out);
        json(&out)["digest"].as_str().unwrap().to_string()
    }

    /// Signs as `clb sign` does by default: a cosign v3 bundle attached as a referrer.
    pub fn sign(&self, repo_tag: &str) {
        self.sign_as(repo_tag, "bundle");
    }

    /// Signs with `clb sign --format FORMAT` (`bundle` or `sig`).
    pub fn sign_as(&self, repo_tag: &str, format: &str) {
        let mut args: Vec<String> = vec![
            "sign".into(),
            "--key".into(),
            self.key.display().to_string(),
            "--format".into(),
            format.into(),
            self.image(repo_tag),
        ];
        args.extend(self.registry_flags());
        assert_ok(&clb_owned(&args));
    }

    pub fn new_state_dir(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `clb --state-dir STATE upgrade -d IMAGE --key PUB [extra]`.
    pub fn upgrade(&self, state: &Path, repo_tag: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "upgrade".into(),
            "-d".into(),
            self.image(repo_tag),
            "--key".into(),
            self.pubkey.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.registry_flags());
        clb_owned(&args)
    }

    /// `clb --json --state-dir STATE upgrade -d IMAGE ARGS...`, without the fixture's `--key`.
    pub fn upgrade_image(&self, state: &Path, image: &str, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![
            "--json".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "upgrade".into(),
            "-d".into(),
            image.into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(self.registry_flags());
        clb_owned(&all)
    }

    pub fn status(&self, state: &Path) -> serde_json::Value {
        let out = clb(&["--json", "--state-dir", state.to_str().unwrap(), "status"]);
        assert_ok(&out);
        json(&out)
    }
}

/// Runs the independent cosign signer (`tests/cosign_signer.py`); returns its stdout.
pub fn run_signer(args: &[&str]) -> String {
    run_script("cosign_signer.py", args)
}

/// Runs a Python test script of `tests/`, which must succeed; returns its stdout.
pub fn run_script(name: &str, args: &[&str]) -> String {
    let script = format!("{}/../tests/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(clb_testsupport::PYTHON)
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The manifest digest `repo_tag` points at, read with skopeo.
pub fn skopeo_digest(reg: &Registry, repo_tag: &str) -> String {
    reg.skopeo_inspect(repo_tag, false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn clb(args: &[&str]) -> Output {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    clb_owned(&owned)
}

pub fn clb_owned(args: &[String]) -> Output {
    Command::new(clb_bin())
        .args(args)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", "/nonexistent-clb-test-home")
        .output()
        .expect("running clb")
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "clb failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the exit code and that the error is one line naming `needle`.
/// Asserts the exit code and one error line mentioning `needle`; returns that line.
pub fn assert_fails(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("clb: error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "one error line expected: {stderr}");
    assert!(
        error_lines[0]
            .to_lowercase()
            .contains(&needle.to_lowercase()),
        "error line should mention {needle:?}: {}",
        error_lines[0]
    );
    assert_no_repeated_cause(error_lines[0]);
    error_lines[0].to_string()
}

/// Each cause of an error is printed once: no part of the chain repeats another.
pub fn assert_no_repeated_cause(line: &str) {
    let parts: Vec<&str> = line
        .trim_start_matches("clb: error:")
        .split(": ")
        .map(str::trim)
        .filter(|p| p.len() >= 12)
        .collect();
    // Equal parts, or a long one inside another: a short phrase may recur in different
    // causes ("signature verification failed" / "SCT signature verification failed").
    let repeats = |a: &str, b: &str| a == b || (a.len() >= 40 && b.contains(a));
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            assert!(
                !repeats(a, b) && !repeats(b, a),
                "a cause is printed twice ({a:?} / {b:?}): {line}"
            );
        }
    }
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Writes files (`path`, `content`) under `root`.
pub fn tree(root: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    root.to_path_buf()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The layer digests of an image as skopeo (an independent client) sees them.
pub fn skopeo_layers(reg: &Registry, repo_tag: &str) -> Vec<String> {
    let raw = reg.skopeo_inspect(repo_tag, true).expect("skopeo inspect");
    raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A release tree: a shared base plus a top layer carrying the release name.
pub struct Releases {
    pub base: PathBuf,
    pub tops: Vec<PathBuf>,
}

/// Corrupts a blob in the registry's storage, flipping the byte `pick(len)` picks: the
/// registry then serves bytes that no longer match the digest.
pub fn corrupt_blob(reg: &Registry, digest: &str, pick: impl FnOnce(usize) -> usize) {
    let hex = digest.trim_start_matches("sha256:");
    let blob = reg.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = pick(bytes.len());
    bytes[at] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
}

pub fn releases(root: &Path, names: &[&str]) -> Releases {
    let base = tree(
        &root.join("base"),
        &[
            ("etc/os-release", b"NAME=clb-test\n"),
            ("usr/lib/big.bin", &noise(600_000, 1)),
            ("usr/bin/hello", b"#!/bin/sh\necho hello\n"),
        ],
    );
    let tops = names
        .iter()
        .map(|n| {
            tree(
                &root.join(format!("top-{n}")),
                &[("etc/clb-release", format!("{n}\n").as_bytes())],
            )
        })
        .collect();
    Releases { base, tops }
}

/// Runs a shell command, panics with its stderr on failure, returns trimmed stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Byte offset and size of partition `n` of a disk image, as `sgdisk -i` reports them.
pub fn partition_range(disk: &str, n: u32) -> (u64, u64) {
    let info = sh(&format!("sgdisk -i {n} {disk}"));
    let field = |k: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no {k} in {info}"))
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, last) = (field("First sector:"), field("Last sector:"));
    (first * 512, (last - first + 1) * 512)
}

/// A state with v1 staged, plus the fixture; v2 is pushed (and signed) too.
pub fn staged() -> (Fixture, std::path::PathBuf, Releases) {
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));
    (fx, state, r)
}

/// A tmpfs of `size` bytes mounted at `dir`, unmounted on drop.
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(dir: &Path, size: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a {size}-byte tmpfs at {}", dir.display());
        Self(dir.to_path_buf())
    }

    pub fn available(&self) -> u64 {
        let out = sh(&format!(
            "df --output=avail -B1 {} | tail -n 1",
            self.0.display()
        ));
        out.trim().parse().unwrap()
    }

    /// Fills the filesystem until `free` bytes are left (page-rounded by tmpfs).
    pub fn leave_free(&self, free: u64) {
        let filler = self.0.join("filler");
        let _ = std::fs::remove_file(&filler);
        let available = self.available();
        if available > free {
            sh(&format!(
                "fallocate -l {} {}",
                available - free,
                filler.display()
            ));
        }
    }

    pub fn unfill(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
