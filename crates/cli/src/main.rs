//! The `orca` command line. Commands arrive with their issues; today it
//! parses its arguments and answers `--version` and `--help`.

use std::process::ExitCode;

use clap::Parser;

/// Move OCI images and artifacts between registries, image layouts and
/// object stores, verifying every byte.
#[derive(Debug, Parser)]
#[command(name = "orca", version, about)]
struct Cli {}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {}) => ExitCode::SUCCESS,
        Err(e) => {
            // Help and version are printed by clap and are not failures.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}
