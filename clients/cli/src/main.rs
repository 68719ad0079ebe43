//! The `ferryctl` binary: parses the command line, runs it and turns the
//! outcome into an exit code (0 success, 1 failure or a failed job, 2 usage).
//! With an OTLP endpoint configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), each
//! invocation is a trace that the server's spans join.

use std::process::ExitCode;

use clap::Parser;
use ferry_observability::LogFormat;
use tracing::Instrument as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = ferryctl::Cli::parse();
    // ferryctl prints what it has to say itself; FERRY_LOG shows more.
    let telemetry = ferry_observability::init("ferryctl", LogFormat::Human, "off");
    let span = ferryctl::telemetry::span(&cli.command);
    let result = ferryctl::run(cli).instrument(span).await;
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        // `ferryctl … | head`: the reader is gone, there is no one to tell.
        Err(error) if ferryctl::is_broken_pipe(&error) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
