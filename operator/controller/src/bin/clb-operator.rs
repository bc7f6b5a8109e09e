//! `clb-operator`: the fleet rollout controller (see the crate documentation and
//! docs/operator.md).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Rolls Kubernetes nodes that run the clb host agent to the OS image a Rollout names: canary
/// first, then waves within maxUnavailable, halted by a failure budget. Runs as a Deployment
/// with leader election: only the replica holding the Lease acts.
#[derive(Parser, Debug)]
#[command(name = "clb-operator", version)]
struct Args {
    /// The namespace of the leader Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "clb-system")]
    namespace: String,

    /// This replica's identity in the leader Lease; must differ between replicas (the pod
    /// name from the downward API).
    #[arg(long, env = "POD_NAME")]
    identity: String,

    /// The name of the leader Lease.
    #[arg(long, default_value = clb_operator_api::LEADER_LEASE_NAME)]
    lease_name: String,

    /// Seconds the Lease stays valid without a renewal: how long a dead leader blocks the
    /// others before one takes over.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_seconds: u64,

    /// Where to serve /metrics (Prometheus) and /healthz; "off" serves nothing.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: String,

    /// A registry (host:port) to resolve image tags from over plain HTTP instead of HTTPS;
    /// repeat for several. For test registries only.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,

    /// Step every rollout at least this often (seconds), even when no watch reports a change.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    resync_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clb-operator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics_address =
        match args.metrics_address.as_str() {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().with_context(|| {
                format!("--metrics-address {text:?}: expected HOST:PORT or off")
            })?),
        };
    let options = clb_operator::Options {
        namespace: args.namespace,
        identity: args.identity,
        lease_name: args.lease_name,
        lease_seconds: args.lease_seconds,
        metrics_address,
        insecure_registries: args.insecure_registries,
        resync: Duration::from_secs(args.resync_seconds),
    };
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let client = clb_operator::client(config).context("building the Kubernetes client")?;
    clb_operator::run(client, options, shutdown())
        .await
        .context("controller")?;
    Ok(())
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
}
