//! The `ferry-agent` binary: sets up logging to stderr (and, when an OTLP
//! endpoint is configured, trace and metric export), parses the command
//! line and runs it; errors become one `error: …` line and exit code 1.

use std::process::ExitCode;

use clap::Parser as _;
use ferry_observability::LogFormat;

#[tokio::main]
async fn main() -> ExitCode {
    // FERRY_LOG_FORMAT=json for JSON lines with trace and span ids.
    let format = std::env::var("FERRY_LOG_FORMAT")
        .ok()
        .and_then(|format| format.parse::<LogFormat>().ok())
        .unwrap_or_default();
    let telemetry = ferry_observability::init("ferry-agent", format, "info");
    let cli = ferry_agent::Cli::parse();
    let result = ferry_agent::run(cli).await;
    // Export the last spans before the process ends.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
