//! The `ferryctl` binary: parses the command line, runs it and turns the
//! outcome into an exit code (0 success, 1 failure or a failed job, 2 usage).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = ferryctl::Cli::parse();
    match ferryctl::run(cli).await {
        Ok(code) => code,
        // `ferryctl … | head`: the reader is gone, there is no one to tell.
        Err(error) if ferryctl::is_broken_pipe(&error) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
