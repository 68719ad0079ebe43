//! ferry-agent: the build agent of ferry, a pull-model CI system.
//!
//! The agent registers once with a pool (`ferry-agent configure`), then
//! (`ferry-agent run`) long-polls the server for jobs sealed to its X25519
//! key, runs each job's steps as shell scripts in a fresh workspace, streams
//! their masked log lines back and reports each step and the job's result.
//! It only ever makes outbound gRPC/TLS calls; the server never connects to
//! it.
//!
//! While a job runs the agent keeps its lease, listens for cancellation on
//! the job's log stream, downloads its source and uploads its test results
//! and artifacts; see `docs/agent.md`.
//!
//! The binary is a thin wrapper around [`run`]; `ferryd` embeds the same
//! entry point for its demo.

pub mod backoff;
pub mod cli;
pub mod configure;
pub mod job;
pub mod joblog;
pub mod lease;
pub mod lines;
pub mod listener;
pub mod logs;
pub mod masking;
pub mod rpc;
pub mod settings;
pub mod source;
pub mod spool;
pub mod step;
pub mod stop;
pub mod telemetry;
pub mod upload;
pub mod workspace;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod testserver;

pub use cli::{Cli, Command, ConfigureArgs, DirArgs, RunArgs, Token};

/// Runs the command line: `configure` or `run`. Tracing is the caller's to
/// set up.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Configure(args) => configure::configure(args).await,
        Command::Run(args) => listener::run(args).await,
    }
}
