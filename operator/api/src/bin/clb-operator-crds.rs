//! Writes the CustomResourceDefinitions of the clb operator (generated from the types in
//! `clb-operator-api`) to `packaging/kubernetes/crds.yaml`, or checks that the file is current.
//!
//! ```text
//! clb-operator-crds [--check] [--stdout] [PATH]
//! ```
//!
//! PATH defaults to `packaging/kubernetes/crds.yaml` in the workspace. `--check` writes
//! nothing and exits 1 when the file differs from what the types generate; `--stdout` prints
//! the YAML instead of writing it.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: clb-operator-crds [--check] [--stdout] [PATH]";

fn main() -> ExitCode {
    let mut check = false;
    let mut stdout = false;
    let mut path = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "--stdout" => stdout = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with('-') => {
                eprintln!("clb-operator-crds: unknown option {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if path.is_none() => path = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("clb-operator-crds: more than one path\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let path = path.unwrap_or_else(clb_operator_api::crds_path);

    let yaml = match clb_operator_api::crds_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("clb-operator-crds: cannot write the CRDs as YAML: {err}");
            return ExitCode::FAILURE;
        }
    };
    if stdout {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    if check {
        return match std::fs::read_to_string(&path) {
            Ok(committed) if committed == yaml => ExitCode::SUCCESS,
            Ok(_) => {
                eprintln!(
                    "{} is stale: regenerate it with `{}`",
                    path.display(),
                    clb_operator_api::REGENERATE
                );
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!(
                    "cannot read {}: {err}; generate it with `{}`",
                    path.display(),
                    clb_operator_api::REGENERATE
                );
                ExitCode::FAILURE
            }
        };
    }
    match std::fs::write(&path, &yaml) {
        Ok(()) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("clb-operator-crds: cannot write {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}
