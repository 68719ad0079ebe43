//! ferryctl's span: one per invocation, the root of the trace of what it
//! does (queueing a job starts the job's trace under it).

use crate::cli::{AdminCommand, AgentCommand, ArtifactCommand, Command, JobCommand, PoolCommand};

/// The command's name as its span shows it, e.g. `job queue`.
pub fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Pool(PoolCommand::Create { .. }) => "pool create",
        Command::Pool(PoolCommand::List) => "pool list",
        Command::Agent(AgentCommand::List { .. }) => "agent list",
        Command::Agent(AgentCommand::Remove { .. }) => "agent remove",
        Command::Agent(AgentCommand::Disable { .. }) => "agent disable",
        Command::Agent(AgentCommand::Enable { .. }) => "agent enable",
        Command::Admin(AdminCommand::Create { .. }) => "admin create",
        Command::Admin(AdminCommand::List) => "admin list",
        Command::Admin(AdminCommand::Remove { .. }) => "admin remove",
        Command::Job(JobCommand::Queue { .. }) => "job queue",
        Command::Job(JobCommand::Cancel { .. }) => "job cancel",
        Command::Job(JobCommand::Get { .. }) => "job get",
        Command::Job(JobCommand::List { .. }) => "job list",
        Command::Logs(_) => "logs",
        Command::Artifact(ArtifactCommand::List { .. }) => "artifact list",
        Command::Artifact(ArtifactCommand::Download { .. }) => "artifact download",
    }
}

/// The invocation's span (disabled unless traces are exported).
pub fn span(command: &Command) -> tracing::Span {
    tracing::info_span!(
        target: ferry_observability::SPAN_TARGET,
        "ferryctl",
        otel.name = %format_args!("ferryctl {}", command_name(command)),
        otel.kind = "client",
    )
}
