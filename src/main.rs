//! `sluice`: one binary that runs any one service, or all of them in one process.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::init_tracing();
    match sluice::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}
