//! Command-line interface.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// The agent's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferry-agent",
    version,
    about = "ferry's build agent: registers once, then long-polls the server for jobs and runs them",
    long_about = "ferry's build agent: registers once with a pool, then long-polls the server for \
jobs, runs their steps in a fresh workspace and streams their masked logs back.\n\n\
The agent only ever makes outbound gRPC/TLS calls: the server never connects to it, so it can run \
behind NAT or a firewall that allows outbound HTTPS.\n\n\
Set up an agent once with `ferry-agent configure`, then start it with `ferry-agent run`. \
Log verbosity is set with the FERRY_LOG environment variable (e.g. FERRY_LOG=debug)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Register this agent with a pool and write its configuration directory.
    #[command(
        long_about = "Register this agent with a pool and write its configuration directory.\n\n\
Generates the agent's X25519 key pair, registers its public key with the server using an \
administrator's personal access token (PAT), and writes agent.toml (settings), agent.key (the \
private key, mode 0600) and ca.pem (when --ca-cert is given) to the agent directory. The PAT is \
used for this one call and never stored."
    )]
    Configure(ConfigureArgs),
    /// Listen for jobs and run them until interrupted (or after one job with --once).
    #[command(
        long_about = "Listen for jobs and run them until interrupted (or after one job with --once).\n\n\
Each job runs in a fresh workspace under the work directory. While it runs, the agent renews the \
job's lease every third of the lease (30 s unless the job says otherwise) and switches to the fresh \
job token each renewal brings; if the server answers that the lease is lost, the job is stopped \
at once and not completed. Log lines are written to DIR/spool/<job id>.log (masked, mode 0600) \
until the server acknowledges them, so a server outage never holds up the steps.\n\n\
Stopping a step (cancellation from the server, the job's timeout, a lost lease, a second signal): \
its whole process group gets SIGINT, then SIGTERM 5 s later, then SIGKILL 5 s after that; \
processes left after the step's shell ends are killed at once.\n\n\
Signals: the first SIGINT or SIGTERM stops polling and lets running jobs finish, then the agent \
exits 0 (an idle agent exits at once); a second one cancels the running jobs (they complete as \
CANCELED) and exits.\n\n\
Proxies: HTTPS_PROXY (https servers) or HTTP_PROXY (http servers), e.g. \
http://user:password@proxy:3128, tunnel the connection with CONNECT; NO_PROXY lists hosts (and \
their subdomains, or * for all) to reach directly."
    )]
    Run(RunArgs),
}

/// Where the agent directory is; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The agent directory holding agent.toml, agent.key and ca.pem.
    #[arg(
        long,
        value_name = "DIR",
        env = "FERRY_AGENT_DIR",
        default_value = ".ferry-agent"
    )]
    pub dir: PathBuf,
}

/// `ferry-agent configure`.
#[derive(Debug, Clone, Args)]
pub struct ConfigureArgs {
    /// The server URL, e.g. https://ferry.example.com:8443.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The pool to join.
    #[arg(long, value_name = "POOL")]
    pub pool: String,
    /// This agent's name in the pool (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A personal access token of an administrator of the pool, used once to
    /// register and never stored. Prefer the FERRY_TOKEN environment
    /// variable: a command-line argument is visible to other users in `ps`.
    #[arg(long, value_name = "PAT", env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Token,
    /// PEM file of the CA (or self-signed certificate) that signed the
    /// server's certificate; copied to DIR/ca.pem. The public web PKI roots
    /// are trusted when omitted.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// A capability label offered to job demands, as key=value; repeat for
    /// more. os, arch and hostname are reported by the agent itself.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: DirArgs,
    /// Where job workspaces are created (default: DIR/work).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Overwrite an existing configuration in DIR, and replace an agent of the
    /// same name in the pool on the server.
    #[arg(long)]
    pub replace: bool,
}

/// `ferry-agent run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: DirArgs,
    /// Ephemeral agent: run one job, then deregister from the server, delete
    /// agent.key, agent.toml and ca.pem, and exit 0 whether the job succeeded
    /// or failed.
    #[arg(long)]
    pub once: bool,
    /// How many jobs to run at once, each with its own poll, lease,
    /// workspace and log stream (1 to 64).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        env = "FERRY_AGENT_MAX_JOBS",
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub max_jobs: u32,
}

/// A personal access token: `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Token(text.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Token(..)")
    }
}

/// Capability keys the agent sets itself.
pub const RESERVED_LABELS: [&str; 3] = ["os", "arch", "hostname"];

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    if RESERVED_LABELS.contains(&key) {
        return Err(format!("label {key:?} is set by the agent itself"));
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn configure_parses_labels_and_hides_the_token() {
        let cli = Cli::try_parse_from([
            "ferry-agent",
            "configure",
            "--url",
            "https://x:1",
            "--pool",
            "p",
            "--name",
            "n",
            "--token",
            "pat-secret-1",
            "--label",
            "gpu=a100",
            "--label",
            "zone = b",
            "--dir",
            "/tmp/a",
        ])
        .expect("parse");
        let Command::Configure(args) = cli.command else {
            panic!("not configure");
        };
        assert_eq!(
            args.labels,
            [("gpu".into(), "a100".into()), ("zone".into(), "b".into())]
        );
        assert_eq!(args.token.expose(), "pat-secret-1");
        assert_eq!(args.dir.dir, PathBuf::from("/tmp/a"));
        let debug = format!("{args:?}");
        assert!(!debug.contains("pat-secret-1"), "{debug}");
    }

    #[test]
    fn run_takes_max_jobs_within_bounds() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["ferry-agent", "run"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Run(args) => (args.once, args.max_jobs),
                Command::Configure(_) => panic!("not run"),
            })
        };
        assert_eq!(parse(&[]).expect("defaults"), (false, 1));
        assert_eq!(parse(&["--max-jobs", "4"]).expect("four"), (false, 4));
        assert_eq!(parse(&["--once"]).expect("once"), (true, 1));
        assert!(parse(&["--max-jobs", "0"]).is_err());
        assert!(parse(&["--max-jobs", "65"]).is_err());
        let help = Cli::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        for needle in [
            "SIGINT",
            "SIGTERM 5 s later",
            "SIGKILL 5 s after",
            "HTTPS_PROXY",
            "NO_PROXY",
            "--max-jobs",
            "lease",
        ] {
            assert!(help.contains(needle), "run --help lacks {needle:?}");
        }
    }

    #[test]
    fn bad_labels_are_refused() {
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
        assert!(parse_label("os=plan9").is_err());
        assert_eq!(parse_label("k=a=b"), Ok(("k".into(), "a=b".into())));
    }
}
