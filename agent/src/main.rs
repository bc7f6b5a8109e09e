//! `clb`: the host agent's command line. Parses arguments, calls the library, prints results
//! and errors (with their context chain) and exits with the documented code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    // A multi-threaded runtime with two workers (the hosts clb targets have few cores): the
    // network side (registry transfers, D-Bus) is async, and the library hands everything
    // that blocks — conversion, hooks, mounts, fsync'd state writes — to tokio's blocking
    // pool (`spawn_blocking`), so neither worker is ever held by a slow disk or a hook.
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
            // One line: the outermost context, then each cause. Error types in this tree never
            // repeat their source in their own message; sigstore-verify's do, so a cause whose
            // text is already printed is left out.
            eprintln!(
                "clb: error: {}",
                clb_command::one_line_deduplicated(err.as_ref())
            );
            ExitCode::from(clb::error::exit_code_of(err.as_ref()))
        }
    }
}
