//! Running host commands and finding the workspace.

use std::path::Path;
use std::process::{Command, Stdio};

use clb_testsupport::run_cmd;

pub use clb_testsupport::workspace_root as workspace;

/// This crate's directory: the helper scripts (`scripts/`) and the kill shim's C source.
pub fn kit_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run a command, panic with its output if it fails, return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = run_cmd(cmd.stdin(Stdio::null())).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out).into_owned()
}
