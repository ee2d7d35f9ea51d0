//! `strata`: the command-line entry point. Parsing and dispatch only; the work lives in `cli`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Logs go to stderr (`cli/telemetry.rs`), so that stdout carries nothing but a command's
/// output.
fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
