//! `clb`: the host agent's command line. Parses arguments, calls the library, prints results
//! and errors (with their context chain) and exits with the documented code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clb: cannot start the async runtime: {e}");
            return ExitCode::from(clb::error::exit::FAILURE);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the outermost context, then each cause.
            let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
            eprintln!("clb: error: {}", dedup_chain(&chain).join(": "));
            ExitCode::from(clb::error::exit_code_of(err.as_ref()))
        }
    }
}

/// thiserror messages often repeat their source; print each piece once.
fn dedup_chain(chain: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in chain {
        if !out.iter().any(|p| p.contains(part.as_str())) {
            out.push(part.clone());
        }
    }
    out
}
