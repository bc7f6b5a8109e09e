//! `clb-node-bridge`: the clb node bridge (see the library's doc).

use anyhow::{Context, Result};
use clap::Parser;
use clb_operator_api::Duration;

/// The clb node bridge: reports the host agent (`clb daemon`, D-Bus dev.clb.Agent1) in this
/// node's NodeUpdate and carries out the clb operator's Stage and Reboot requests. Runs as a
/// DaemonSet pod with the host's system bus socket mounted. The Kubernetes API is reached
/// in-cluster (the pod's service account) or through $KUBECONFIG / ~/.kube/config.
#[derive(Parser, Debug)]
#[command(name = "clb-node-bridge", version)]
struct Args {
    /// The node this pod runs on (from the downward API: spec.nodeName); the NodeUpdate is
    /// named after it.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: String,

    /// D-Bus address of the host's system bus, where the agent owns dev.clb.Agent (mount the
    /// host's /run/dbus into the pod).
    #[arg(
        long,
        env = "DBUS_SYSTEM_BUS_ADDRESS",
        value_name = "ADDRESS",
        default_value = "unix:path=/run/dbus/system_bus_socket"
    )]
    bus_address: String,

    /// How often to read the agent and compare everything again, whatever it signalled
    /// (`30s`, `2m`, `1h`). Changes are reported as they are signalled; this catches what a
    /// lost signal would hide.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive)]
    resync: Duration,

    /// How often to write the status when nothing changed (only `lastReported` moves), so the
    /// operator can tell a quiet node from a dead bridge. At least the resync period.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_positive)]
    heartbeat: Duration,
}

fn parse_positive(text: &str) -> Result<Duration, String> {
    let d: Duration = text.parse().map_err(|e| format!("{e}"))?;
    if d.as_secs() == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or $KUBECONFIG)")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            r = tokio::signal::ctrl_c() => {
                if r.is_ok() {
                    tracing::info!("SIGINT");
                }
            }
        }
    };
    let resync: std::time::Duration = args.resync.into();
    let heartbeat: std::time::Duration = args.heartbeat.into();
    clb_node_bridge::run(
        client,
        clb_node_bridge::Options {
            node_name: args.node_name.clone(),
            bus_address: args.bus_address,
            resync,
            heartbeat: heartbeat.max(resync),
        },
        shutdown,
    )
    .await
    .with_context(|| format!("the node bridge of {}", args.node_name))
}
