//! `strata`: the command-line entry point. Parsing and dispatch only; the work lives in `cli`.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_tracing(args.log_format);
    cli::run(args)
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings and errors only), so that
/// stdout carries nothing but a command's output.
fn init_tracing(format: cli::LogFormat) {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Err(_) => EnvFilter::new("warn"),
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG={directives:?}: {e}");
            EnvFilter::new("warn")
        }),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
