//! Runs the fake API server on its own, for scripts (the fleet benchmark, manual runs of the
//! operator): `clb-fake-apiserver [--kubeconfig PATH] [--history CHANGES]`. Prints the URL on
//! stdout, writes the kubeconfig if asked, and serves until killed.

use std::path::PathBuf;
use std::process::ExitCode;

use clb_fake_apiserver::FakeApiServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut kubeconfig: Option<PathBuf> = None;
    let mut history: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--kubeconfig", Some(path)) => kubeconfig = Some(path.into()),
            ("--history", Some(n)) if n.parse::<usize>().is_ok() => history = n.parse().ok(),
            _ => {
                eprintln!("usage: clb-fake-apiserver [--kubeconfig PATH] [--history CHANGES]");
                return ExitCode::from(2);
            }
        }
    }
    let server = match FakeApiServer::start().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clb-fake-apiserver: cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = history {
        server.set_history_limit(n);
    }
    if let Some(path) = &kubeconfig
        && let Err(e) = server.kubeconfig(path)
    {
        eprintln!("clb-fake-apiserver: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", server.url().unwrap_or_default());
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
