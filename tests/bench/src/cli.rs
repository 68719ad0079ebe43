//! Command-line arguments of `ferry-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench",
    version,
    about = "Drives ferryd with simulated agents speaking the real protocol over TLS on loopback",
    long_about = "Drives a ferry server with many simulated agents that speak the real protocol \
                  over TLS (ferry-client, ferry-envelope): register, GetListenerToken, long-poll \
                  PollJob, open the sealed job, StreamLogs (carrying the step states and the job's end). By default \
                  it starts `ferryd all` itself on a fresh temporary data directory for every \
                  run; with --url it drives a server that is already running.\n\n\
                  Every figure is printed as a markdown table row for BENCHMARKS.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Runs per figure; the report shows the median run (per statistic).
    #[arg(long, global = true, default_value_t = 1)]
    pub runs: usize,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dispatch latency: QueueJob sent → the idle agent has opened the job.
    Dispatch(DispatchArgs),
    /// Jobs queued, dispatched and completed per second by busy agents.
    Throughput(ThroughputArgs),
    /// Server memory per connected, long-polling, idle agent.
    Idle(IdleArgs),
    /// Log lines streamed, masked and stored per second.
    Logs(LogsArgs),
    /// The floor: gRPC calls over TLS per second and their CPU time, with
    /// nothing behind them (Health/Check).
    Calls(CallsArgs),
    /// Every figure above with its default settings.
    All(AllArgs),
}

/// Where the server is, or how to start one.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Drive this running server (`https://host:port`) instead of starting
    /// ferryd; needs --token and --ca-cert. Loopback addresses only.
    #[arg(long, global = true, env = "FERRY_URL", requires = "token")]
    pub url: Option<String>,
    /// PAT of an administrator of --pool (with --url).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Certificate to trust (with --url).
    #[arg(long, global = true, env = "FERRY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Process id of the server given with --url, for its memory figures.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Pool the agents join and the jobs run in.
    #[arg(long, global = true, default_value = "default")]
    pub pool: String,
    /// The ferryd binary to start [default: next to ferry-bench].
    #[arg(long, global = true)]
    pub ferryd: Option<PathBuf>,
    /// Run the started ferryd on this database instead of SQLite.
    #[arg(long, global = true, conflicts_with = "postgres")]
    pub database_url: Option<String>,
    /// Run the started ferryd on a throwaway PostgreSQL cluster.
    #[arg(long, global = true)]
    pub postgres: bool,
    /// FERRY_LOG of the started ferryd (its log goes to a file).
    #[arg(long, global = true, default_value = "info")]
    pub server_log: String,
    /// Give up on a run after this long.
    #[arg(long, global = true, default_value = "10m", value_parser = humantime_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct DispatchArgs {
    /// Idle agents (comma-separated list: one figure each).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub agents: Vec<usize>,
    /// Measured jobs, queued one at a time.
    #[arg(long, default_value_t = 2000)]
    pub jobs: usize,
    /// Jobs queued first and not measured.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Agents running jobs.
    #[arg(long, value_delimiter = ',', default_value = "200")]
    pub agents: Vec<usize>,
    /// Jobs to queue and run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent queueing clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// QueueJob calls each client keeps in flight.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Log lines each job streams (ferry-agent sends 2 for a one-step job
    /// that prints nothing: the step's start and exit lines, which carry
    /// its state); 0 reports the step with ReportStep and skips StreamLogs.
    #[arg(long, default_value_t = 2, value_parser = log_lines)]
    pub log_lines: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CallsArgs {
    /// Connections, each its own TLS/HTTP/2 connection (as an agent's).
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Calls each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Calls in all.
    #[arg(long, default_value_t = 100_000)]
    pub calls: usize,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connected agents (comma-separated list: one figure each).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub agents: Vec<usize>,
    /// Longest wait for the server's memory to settle once every agent polls.
    #[arg(long, default_value = "20s", value_parser = humantime_duration)]
    pub settle: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Concurrent jobs streaming (comma-separated list: one figure each).
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub jobs: Vec<usize>,
    /// Lines per run, split evenly across the jobs.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// One line in this many prints the job's secret (masked by the agent).
    #[arg(long, default_value_t = 100)]
    pub secret_every: u64,
}

#[derive(Debug, Clone, Args)]
pub struct AllArgs {
    /// Skip the 10,000-agent idle figure (it needs ~20k file descriptors).
    #[arg(long)]
    pub quick: bool,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration like 30s, 10m or 500ms"))
}

/// `500ms`, `30s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number * 60)),
        "h" => Some(Duration::from_secs(number * 3600)),
        _ => None,
    }
}

/// `--log-lines`: 0, or at least the step's start and exit lines.
fn log_lines(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(1) => Err("a step streams at least 2 lines (its start and exit lines), or 0".to_owned()),
        Ok(lines) => Ok(lines),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("1d"), None);
    }

    #[test]
    fn a_step_streams_no_line_or_at_least_its_start_and_exit() {
        assert_eq!(log_lines("0"), Ok(0));
        assert_eq!(log_lines("2"), Ok(2));
        assert!(log_lines("1").is_err());
        assert!(log_lines("x").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
