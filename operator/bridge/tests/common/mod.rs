//! What the bridge's tests share.

use std::path::Path;
use std::process::Command;

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
