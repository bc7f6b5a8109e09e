//! What the bridge's tests share.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `clb-node-bridge` for `node` on the bus at `bus_address`, talking to the API server of
/// `kubeconfig`, resyncing every 2 s, with nothing taken from the test's own environment.
pub fn bridge_command(node: &str, bus_address: &str, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clb-node-bridge"));
    cmd.args(["--node-name", node, "--bus-address", bus_address])
        .args(["--resync", "2s"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,clb_node_bridge=debug")
        .env_remove("NODE_NAME")
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS");
    cmd
}

/// A binary of this workspace's target directory (built beforehand).
pub fn workspace_bin(name: &str, build: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| clb_testsupport::workspace_root().join("target"));
    let bin = target.join("debug").join(name);
    assert!(
        bin.is_file(),
        "missing test prerequisite: {} (run `{build}`)",
        bin.display()
    );
    bin
}

/// Fails loudly unless the test runs as root.
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "missing test prerequisite: root (the private system bus's policy and the daemon)"
    );
}

#[track_caller]
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "clb failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
