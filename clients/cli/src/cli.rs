//! The command line: global flags, commands and their arguments.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry_proto::v1::JobState;

const LONG_ABOUT: &str = "\
ferryctl talks to a ferry server over gRPC/TLS with a personal access token
(PAT). It manages pools, agents and administrators, queues jobs described by
YAML pipeline files (uploading their source), cancels them, follows their
logs and downloads their artifacts.

Settings come from flags, then environment variables (FERRY_URL, FERRY_TOKEN,
FERRY_CA_CERT), then the config file ($FERRY_CONFIG, else
$XDG_CONFIG_HOME/ferry/ferryctl.toml or ~/.config/ferry/ferryctl.toml) with
the keys `url`, `token` and `ca-cert`.

Exit codes: 0 success; 1 an error, or a followed job that failed or was
canceled; 2 a usage error.";

const GLOBAL: &str = "Global Options";

/// ferryctl's command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferryctl",
    version,
    about = "Administer a ferry server: pools, agents, administrators, jobs, logs and artifacts",
    long_about = LONG_ABOUT,
    propagate_version = true
)]
pub struct Cli {
    /// Connection and output settings, accepted before or after the command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts. `Debug` hides the token.
#[derive(Clone, Default, Args)]
pub struct GlobalArgs {
    /// Server URL (`https://host:port`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "URL",
        help = "Server URL, like https://ferry.example.com:8443 [env: FERRY_URL]"
    )]
    pub url: Option<String>,
    /// Personal access token [env: FERRY_TOKEN]. Prefer the environment or
    /// the config file: other users can see command lines
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PAT")]
    pub token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust instead of
    /// the public web PKI [env: FERRY_CA_CERT]
    #[arg(long = "ca-cert", global = true, help_heading = GLOBAL, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Config file [env: FERRY_CONFIG] [default:
    /// ~/.config/ferry/ferryctl.toml]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: aligned tables for people, or JSON for scripts
    #[arg(long, short = 'o', global = true, help_heading = GLOBAL, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl fmt::Debug for GlobalArgs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GlobalArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("ca_cert", &self.ca_cert)
            .field("config", &self.config)
            .field("output", &self.output)
            .finish()
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, times relative to now.
    #[default]
    Table,
    /// JSON (newline-delimited for log lines), times in RFC 3339 UTC.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and list pools of agents
    #[command(subcommand)]
    Pool(PoolCommand),
    /// List, disable, enable and remove agents
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Create, list and remove administrators (server owners only)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Queue, inspect, list and cancel jobs
    #[command(subcommand)]
    Job(JobCommand),
    /// Print a job's log, optionally following it until the job ends
    Logs(LogsArgs),
    /// List and download the artifacts jobs uploaded
    #[command(subcommand)]
    Artifact(ArtifactCommand),
}

/// `ferryctl pool …`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool; you become one of its administrators (server owners only)
    Create {
        /// Pool name: letters, digits, '.', '_', '-'
        name: String,
    },
    /// List the pools you administer (every pool for an owner)
    List,
}

/// `ferryctl agent …`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents with their status and capabilities
    List {
        /// Only agents of this pool
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
    },
    /// Remove an agent; its listener tokens stop working
    Remove {
        /// The agent's id, as `agent list` shows it
        agent_id: String,
    },
    /// Disable an agent: its listener tokens stop working and it gets no job
    /// until it is enabled (a job it runs is not interrupted)
    Disable {
        /// The agent's id, as `agent list` shows it
        agent_id: String,
    },
    /// Enable a disabled agent again
    Enable {
        /// The agent's id, as `agent list` shows it
        agent_id: String,
    },
}

/// `ferryctl admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an administrator and print its PAT, which is shown only once
    Create {
        /// Administrator name, unique on the server
        name: String,
        /// A pool the administrator administers; repeat for several
        #[arg(long = "pool", value_name = "POOL")]
        pools: Vec<String>,
        /// Make it a server owner: every pool, and other administrators
        #[arg(long)]
        owner: bool,
    },
    /// List administrators
    List,
    /// Remove an administrator and revoke its PATs; agents it registered keep working
    Remove {
        /// The administrator's id, as `admin list` shows it
        admin_id: String,
    },
}

/// `ferryctl job …`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Queue a job described by a YAML pipeline file
    #[command(
        long_about = "Queue a job described by a YAML pipeline file (see docs/pipeline-format.md).\n\nWith --follow, stream the job's log and exit with 0 if it succeeded, 1 if it failed or was canceled."
    )]
    Queue {
        /// The pipeline file; `-` reads standard input
        file: PathBuf,
        /// Run in this pool instead of the pipeline's `pool`
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
        /// Set a variable, overriding the pipeline's; repeat for several
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Stream the log until the job ends; the exit code is the job's result
        #[arg(long, short = 'f')]
        follow: bool,
        /// Pack this directory and upload it as the job's source, unpacked
        /// into the workspace before the first step (overrides the
        /// pipeline's `source`)
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Pack the source's `.git` directories too (left out by default)
        #[arg(long)]
        source_include_git: bool,
    },
    /// Cancel a job: a queued job ends at once, a running one is stopped by its agent
    Cancel {
        /// The job's id
        job_id: String,
        /// Why, recorded in the job's message
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Show a job: state, agent, times, dispatch latency, tests and steps
    Get {
        /// The job's id
        job_id: String,
    },
    /// List jobs, newest first
    List {
        /// Only jobs of this pool
        #[arg(long, value_name = "POOL")]
        pool: Option<String>,
        /// Only jobs in this state
        #[arg(long, value_enum, value_name = "STATE")]
        state: Option<StateFilter>,
        /// At most this many jobs
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
}

/// `ferryctl artifact …`
#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// List a job's artifacts: name, size, SHA-256 and when they were stored
    List {
        /// The job's id
        job_id: String,
    },
    /// Download an artifact, verifying its size and SHA-256
    #[command(
        long_about = "Download an artifact, verifying its size and SHA-256.\n\nThe artifact is written to a temporary file beside the destination and renamed into place only once its size and SHA-256 match what the server announced, so a failed download leaves nothing behind. `-O -` writes it to standard output, again only once it is verified."
    )]
    Download {
        /// The job that uploaded it
        job_id: String,
        /// The artifact's name, as `artifact list` shows it
        name: String,
        /// Where to write it: a file, a directory to put it in, or `-` for
        /// standard output [default: the name's last part, in the current
        /// directory]
        #[arg(long = "output-file", short = 'O', value_name = "FILE")]
        output_file: Option<PathBuf>,
        /// Replace the file if it exists
        #[arg(long)]
        force: bool,
    },
}

/// `ferryctl logs …`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job's id
    pub job_id: String,
    /// Keep printing new lines until the job ends; the exit code is the job's result
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at this line number (from 1; 0 is the start)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from: u64,
    /// Begin each line with its time, RFC 3339 UTC
    #[arg(long, short = 't')]
    pub timestamps: bool,
}

/// A job state `job list --state` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Waiting for an agent
    Queued,
    /// Handed to an agent, no step started yet
    Assigned,
    /// A step has started
    Running,
    /// Every step succeeded
    Succeeded,
    /// A step failed, or the job could not run
    Failed,
    /// Canceled
    Canceled,
}

impl From<StateFilter> for JobState {
    fn from(filter: StateFilter) -> Self {
        match filter {
            StateFilter::Queued => Self::Queued,
            StateFilter::Assigned => Self::Assigned,
            StateFilter::Running => Self::Running,
            StateFilter::Succeeded => Self::Succeeded,
            StateFilter::Failed => Self::Failed,
            StateFilter::Canceled => Self::Canceled,
        }
    }
}

/// Parses `--var KEY=VALUE`.
fn parse_var(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{text}`"))?;
    if !crate::pipeline::is_valid_env_name(key) {
        return Err(format!(
            "`{key}` is not a valid variable name: use letters, digits and `_`, not starting with a digit"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn vars_are_key_value_pairs() {
        assert_eq!(parse_var("A=b=c"), Ok(("A".to_owned(), "b=c".to_owned())));
        assert_eq!(parse_var("A="), Ok(("A".to_owned(), String::new())));
        assert!(parse_var("A").is_err());
        assert!(parse_var("1A=x").is_err());
    }

    #[test]
    fn job_queue_takes_repeated_options() {
        let cli = Cli::try_parse_from([
            "ferryctl", "job", "queue", "-", "--var", "A=1", "--var", "B=2", "--pool", "p", "-f",
        ])
        .expect("parse");
        let Command::Job(JobCommand::Queue {
            file,
            pool,
            vars,
            follow,
            source,
            source_include_git,
        }) = cli.command
        else {
            panic!("not job queue")
        };
        assert_eq!(file, PathBuf::from("-"));
        assert_eq!(pool.as_deref(), Some("p"));
        assert_eq!(vars.len(), 2);
        assert!(follow);
        assert_eq!((source, source_include_git), (None, false));
    }

    #[test]
    fn new_commands_parse() {
        let cli = Cli::try_parse_from([
            "ferryctl",
            "job",
            "queue",
            "p.yaml",
            "--source",
            "src",
            "--source-include-git",
        ])
        .expect("parse");
        let Command::Job(JobCommand::Queue {
            source,
            source_include_git,
            ..
        }) = cli.command
        else {
            panic!("not job queue")
        };
        assert_eq!(source, Some(PathBuf::from("src")));
        assert!(source_include_git);
        let cli = Cli::try_parse_from(["ferryctl", "job", "cancel", "j1", "--reason", "oops"])
            .expect("parse");
        let Command::Job(JobCommand::Cancel { job_id, reason }) = cli.command else {
            panic!("not job cancel")
        };
        assert_eq!((job_id.as_str(), reason.as_deref()), ("j1", Some("oops")));
        for (word, disable) in [("disable", true), ("enable", false)] {
            let cli = Cli::try_parse_from(["ferryctl", "agent", word, "a1"]).expect("parse");
            match (cli.command, disable) {
                (Command::Agent(AgentCommand::Disable { agent_id }), true)
                | (Command::Agent(AgentCommand::Enable { agent_id }), false) => {
                    assert_eq!(agent_id, "a1");
                }
                (other, _) => panic!("{other:?}"),
            }
        }
        // `-o` stays the output format; the destination is `-O`.
        let cli = Cli::try_parse_from([
            "ferryctl",
            "artifact",
            "download",
            "j1",
            "dist/app.tar",
            "-O",
            "-",
            "-o",
            "json",
            "--force",
        ])
        .expect("parse");
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Artifact(ArtifactCommand::Download {
            job_id,
            name,
            output_file,
            force,
        }) = cli.command
        else {
            panic!("not artifact download")
        };
        assert_eq!((job_id.as_str(), name.as_str()), ("j1", "dist/app.tar"));
        assert_eq!(output_file, Some(PathBuf::from("-")));
        assert!(force);
        assert!(Cli::try_parse_from(["ferryctl", "artifact", "list"]).is_err());
    }

    #[test]
    fn usage_errors_are_reported_by_clap() {
        assert!(Cli::try_parse_from(["ferryctl", "job", "list", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["ferryctl", "job", "list", "--state", "done"]).is_err());
        assert!(Cli::try_parse_from(["ferryctl", "logs"]).is_err());
        let cli = Cli::try_parse_from([
            "ferryctl", "-o", "json", "admin", "create", "x", "--pool", "a", "--pool", "b",
        ])
        .expect("parse");
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Admin(AdminCommand::Create { pools, owner, .. }) = cli.command else {
            panic!("not admin create")
        };
        assert_eq!(pools, ["a", "b"]);
        assert!(!owner);
    }

    #[test]
    fn debug_hides_the_token() {
        let cli = Cli::try_parse_from(["ferryctl", "--token", "very-secret", "pool", "list"])
            .expect("parse");
        assert!(!format!("{cli:?}").contains("very-secret"));
    }
}
