//! ferryctl: the administration command line of ferry, and the pieces of it
//! other programs reuse.
//!
//! ferryctl talks to a ferry server over gRPC/TLS with a personal access
//! token (PAT): it creates and lists pools, lists, disables and removes
//! agents, manages administrators, queues jobs described by YAML pipeline
//! files ([`pipeline`], documented in `docs/pipeline-format.md`) with their
//! source packed by [`archive`], cancels them, follows their logs
//! ([`follow_logs`]) and downloads their artifacts. The commands are
//! documented in `docs/ferryctl.md`.
//!
//! ```no_run
//! # async fn demo(client: &mut ferryctl::Client) -> anyhow::Result<()> {
//! let spec = ferryctl::pipeline::parse("name: hi\nsteps:\n  - run: echo hi\n")?;
//! let job = client
//!     .jobs
//!     .queue_job(ferry_proto::v1::QueueJobRequest { spec: Some(spec) })
//!     .await?
//!     .into_inner()
//!     .job
//!     .unwrap_or_default();
//! let state = ferryctl::follow_logs(client, &job.id, 0, &mut std::io::stdout(), false).await?;
//! println!("{state:?}");
//! # Ok(())
//! # }
//! ```

mod admin;
pub mod archive;
mod cli;
mod client;
pub mod config;
pub mod format;
mod jobs;
mod logs;
mod output;
pub mod pipeline;
mod resources;
pub mod telemetry;
pub mod views;

use std::process::ExitCode;

pub use cli::{
    AdminCommand, AgentCommand, ArtifactCommand, Cli, Command, GlobalArgs, JobCommand, LogsArgs,
    OutputFormat, PoolCommand, StateFilter,
};
pub use client::{Client, resources, status_message};
pub use config::Settings;
pub use jobs::{exit_code, load_spec};
pub use logs::{follow_logs, render_line};
pub use output::is_broken_pipe;
pub use resources::{CHUNK_SIZE, Destination, destination, progress_line, receive};

/// Runs one invocation: resolves the settings (flags, then `FERRY_*`
/// environment variables, then the config file), connects and runs the
/// command. Returns the exit code: 0 on success, 1 when a followed job
/// failed or was canceled; errors are returned as one readable message.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { global, command } = cli;
    // A bad pipeline, or a source that cannot be packed, fails before any
    // connection is made.
    let prepared = match &command {
        Command::Job(JobCommand::Queue {
            file,
            pool,
            vars,
            source,
            source_include_git,
            ..
        }) => Some(
            jobs::prepare(
                file,
                pool.as_deref(),
                vars,
                source.as_deref(),
                *source_include_git,
            )
            .await?,
        ),
        _ => None,
    };
    let settings = config::resolve(&global, &|name| std::env::var(name).ok())?;
    let mut client = Client::connect(&settings).await?;
    let format = global.output;
    match command {
        Command::Pool(command) => admin::pool(&mut client, command, format).await,
        Command::Agent(command) => admin::agent(&mut client, command, format).await,
        Command::Admin(command) => admin::admin(&mut client, command, format).await,
        Command::Job(command) => jobs::job(&mut client, command, prepared, format).await,
        Command::Logs(args) => jobs::logs(&mut client, args, format).await,
        Command::Artifact(command) => resources::artifact(&mut client, command, format).await,
    }
}
