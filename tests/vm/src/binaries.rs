//! The programs under test, built once per test process: the `clb` agent (debug build) and
//! the static `clb-initrd` hook that goes into the initramfs.
//!
//! `env!("CARGO_BIN_EXE_…")` only exists inside the package that owns a binary, and the target
//! directory may be anywhere (`CARGO_TARGET_DIR`, `build.target-dir`), so the kit asks cargo:
//! `cargo build --message-format=json` builds what is stale and names every executable, fresh
//! or not. Running it each time (not only when a file is missing) keeps a test from booting
//! yesterday's binaries.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cmd::{run, workspace};

pub struct Binaries {
    pub clb: PathBuf,
    /// Static (`+crt-static`) `clb-initrd` from `initrd-hook/build-static.sh`, or
    /// `CLB_TEST_HOOK` (a hook built elsewhere).
    pub hook: PathBuf,
}

static BINARIES: OnceLock<Binaries> = OnceLock::new();

/// Build (if stale) and locate the binaries; panics if one cannot be built or is missing.
pub fn binaries() -> &'static Binaries {
    BINARIES.get_or_init(|| Binaries {
        clb: cargo_bin("clb", "clb"),
        hook: static_hook(),
    })
}

/// `cargo build -p PACKAGE --bin BIN` and the executable cargo reports for it.
fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Diagnostics rendered on stderr as usual, artifacts as JSON lines on stdout.
    let out = Command::new(&cargo)
        .args(["build", "-q", "--message-format=json-render-diagnostics"])
        .args(["-p", package, "--bin", bin])
        .current_dir(workspace())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} --bin {bin} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build -p {package} named no executable {bin}"));
    assert!(
        exe.is_file(),
        "cargo built {} but it is missing",
        exe.display()
    );
    exe
}

fn static_hook() -> PathBuf {
    let hook = match std::env::var_os("CLB_TEST_HOOK") {
        Some(h) => PathBuf::from(h),
        None => {
            let script = workspace().join("initrd-hook/build-static.sh");
            PathBuf::from(run(&mut Command::new(script)).trim())
        }
    };
    assert!(
        hook.is_file(),
        "the static hook {} is missing",
        hook.display()
    );
    hook
}
