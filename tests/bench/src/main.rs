//! `ferry-bench`: drives ferryd with simulated agents over the real
//! protocol on loopback and prints each figure as a markdown table row.
//! See BENCHMARKS.md at the repository root for what each figure means and
//! the measured results.

mod agent;
mod cli;
mod fleet;
mod jobs;
mod report;
mod scenario;
mod server;
mod stream;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser as _;

use crate::cli::{
    AllArgs, CallsArgs, Cli, Command, DispatchArgs, IdleArgs, LogsArgs, ThroughputArgs,
};
use crate::report::Row;
use crate::scenario::Bench;
use crate::server::{Mode, ServerPlan};

/// File descriptors per agent (its socket, and ferryd's end, which inherits
/// this limit) plus room for everything else.
const FDS_PER_AGENT: u64 = 1;
const FD_SLACK: u64 = 4096;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    check_loopback(cli.server.url.as_deref())?;
    let most_agents = most_agents(&cli.command);
    let nofile = raise_nofile_limit(most_agents as u64 * FDS_PER_AGENT + FD_SLACK)?;
    eprintln!("file descriptor limit (RLIMIT_NOFILE): {nofile}");
    let plan = ServerPlan::from_args(&cli.server)?;
    let ferryd_version = match &plan.mode {
        Mode::Spawn { ferryd, .. } => Some(version_of(ferryd)?),
        Mode::External { .. } => None,
    };
    let database = plan.database_label().to_owned();
    let bench = Bench {
        plan,
        runs: cli.runs.max(1),
        timeout: cli.server.timeout,
    };
    let command = report::command_line();
    let environment = report::environment(&command, ferryd_version, &database);
    eprintln!("{environment}");
    let rows = match &cli.command {
        Command::Dispatch(args) => scenario::dispatch::run(&bench, args).await?,
        Command::Throughput(args) => scenario::throughput::run(&bench, args).await?,
        Command::Idle(args) => scenario::idle::run(&bench, args).await?,
        Command::Logs(args) => scenario::logs::run(&bench, args).await?,
        Command::Calls(args) => scenario::calls::run(&bench, args).await?,
        Command::All(args) => all(&bench, args).await?,
    };
    println!("{environment}\n\n{}", report::HEADER);
    for row in &rows {
        println!("{}", row.markdown());
    }
    Ok(())
}

async fn all(bench: &Bench, args: &AllArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut print = |new: Vec<Row>| {
        for row in &new {
            eprintln!("{}", row.markdown());
        }
        rows.extend(new);
    };
    print(scenario::dispatch::run(bench, &defaults::<DispatchArgs>("dispatch")?).await?);
    print(scenario::throughput::run(bench, &defaults::<ThroughputArgs>("throughput")?).await?);
    let mut idle = defaults::<IdleArgs>("idle")?;
    if args.quick {
        idle.agents.retain(|agents| *agents < 10_000);
    }
    print(scenario::idle::run(bench, &idle).await?);
    print(scenario::logs::run(bench, &defaults::<LogsArgs>("logs")?).await?);
    print(scenario::calls::run(bench, &defaults::<CallsArgs>("calls")?).await?);
    Ok(rows)
}

/// A subcommand's arguments with every default.
fn defaults<T: clap::FromArgMatches>(name: &str) -> anyhow::Result<T> {
    let matches = <Cli as clap::CommandFactory>::command()
        .try_get_matches_from(["ferry-bench", name])
        .context("default arguments")?;
    let (_, sub) = matches.subcommand().context("no subcommand")?;
    Ok(T::from_arg_matches(sub)?)
}

/// The largest number of agents any figure of the command connects.
fn most_agents(command: &Command) -> usize {
    let max = |list: &[usize]| list.iter().copied().max().unwrap_or(0);
    match command {
        Command::Dispatch(args) => max(&args.agents),
        Command::Throughput(args) => max(&args.agents),
        Command::Idle(args) => max(&args.agents),
        Command::Logs(args) => max(&args.jobs),
        Command::Calls(args) => args.connections,
        Command::All(_) => 10_000,
    }
}

/// Raises the soft RLIMIT_NOFILE to at least `wanted` (and the hard limit
/// too when allowed, e.g. as root); the started ferryd inherits it.
fn raise_nofile_limit(wanted: u64) -> anyhow::Result<u64> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= wanted {
        return Ok(soft);
    }
    if hard >= wanted || Resource::NOFILE.set(wanted, wanted).is_err() {
        Resource::NOFILE
            .set(wanted.min(hard), hard)
            .context("setrlimit(RLIMIT_NOFILE)")?;
    }
    let (soft, _) = Resource::NOFILE.get().context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < wanted {
        eprintln!(
            "warning: RLIMIT_NOFILE is {soft}, below the {wanted} this run may need; raise the hard limit (ulimit -Hn) or run as root"
        );
    }
    Ok(soft)
}

/// Load goes to this machine only.
fn check_loopback(url: Option<&str>) -> anyhow::Result<()> {
    let Some(url) = url else { return Ok(()) };
    let uri: http_uri::Uri = url.parse().context("--url is not a URL")?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    if !loopback {
        bail!("--url must name this machine (localhost, 127.0.0.0/8 or ::1), not {host:?}");
    }
    Ok(())
}

mod http_uri {
    pub use tonic::codegen::http::Uri;
}

fn version_of(ferryd: &std::path::Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(ferryd)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", ferryd.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_goes_to_loopback_only() {
        for url in [
            "https://127.0.0.1:7443",
            "https://localhost:7443",
            "https://[::1]:7443",
        ] {
            assert!(check_loopback(Some(url)).is_ok(), "{url}");
        }
        for url in [
            "https://10.0.0.1:7443",
            "https://example.com",
            "https://192.168.1.2:1",
        ] {
            assert!(check_loopback(Some(url)).is_err(), "{url}");
        }
        assert!(check_loopback(None).is_ok());
    }

    #[test]
    fn every_subcommand_has_defaults() {
        assert!(defaults::<DispatchArgs>("dispatch").is_ok_and(|args| args.agents == [100, 1000]));
        assert!(defaults::<ThroughputArgs>("throughput").is_ok_and(|args| args.jobs == 20_000));
        assert!(defaults::<IdleArgs>("idle").is_ok_and(|args| args.agents.len() == 3));
        assert!(defaults::<LogsArgs>("logs").is_ok_and(|args| args.jobs == [1, 50]));
    }
}
