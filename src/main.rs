//! The `lowrank` binary: parse the command line, run it, print the error chain once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lowrank::cli::Cli::parse();
    match lowrank::cli::run(cli) {
        Ok(code) => code,
        // `lowrank inspect | head`: the reader has what it wanted.
        Err(e) if lowrank::cli::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lowrank: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
