//! The `lowrank` binary: parse the command line, run it, print the error chain once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lowrank::cli::Cli::parse();
    match lowrank::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lowrank: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
