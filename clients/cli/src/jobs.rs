//! `job` and `logs` commands.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_proto::time::now_micros;
use ferry_proto::v1::{
    CancelJobRequest, Job, JobSpec, JobState, ListJobsRequest, QueueJobRequest, StepStatus,
};

use crate::archive::{self, PackedSource};
use crate::cli::{JobCommand, LogsArgs, OutputFormat};
use crate::client::Client;
use crate::format::{self, Table};
use crate::logs::{LogPrinter, get_job, stream_logs};
use crate::output;
use crate::pipeline::{self, Pipeline};
use crate::resources;
use crate::views::{CanceledView, FinalStateView, JobView};

/// The exit code for a job's final state: 0 if it succeeded, else 1.
pub fn exit_code(state: JobState) -> ExitCode {
    if state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads and parses a pipeline file (`-` for standard input) and applies
/// `--pool` and `--var`. A relative `source` is resolved against the
/// pipeline file's directory (the current directory for standard input).
pub fn load_spec(
    file: &Path,
    pool: Option<&str>,
    vars: &[(String, String)],
) -> anyhow::Result<Pipeline> {
    let yaml = if file == Path::new("-") {
        let mut yaml = String::new();
        std::io::stdin()
            .read_to_string(&mut yaml)
            .context("cannot read the pipeline from standard input")?;
        yaml
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read pipeline {}", file.display()))?
    };
    let name = if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let mut pipeline = pipeline::parse_pipeline(&yaml, |name| std::env::var(name).ok())
        .with_context(|| format!("invalid pipeline {name}"))?;
    apply_overrides(&mut pipeline.spec, pool, vars)?;
    if file != Path::new("-")
        && let Some(source) = &mut pipeline.source
        && source.is_relative()
    {
        let base = file.parent().unwrap_or(Path::new(""));
        *source = base.join(&*source);
    }
    Ok(pipeline)
}

/// A job ready to queue: the spec, and the packed source to upload first.
/// No `Debug`: the spec holds the secrets.
pub(crate) struct Prepared {
    pub(crate) spec: JobSpec,
    pub(crate) source: Option<(PathBuf, PackedSource)>,
}

/// Reads the pipeline and packs its source (`--source` wins over the
/// pipeline's `source`), before any connection is made.
pub(crate) async fn prepare(
    file: &Path,
    pool: Option<&str>,
    vars: &[(String, String)],
    source: Option<&Path>,
    include_git: bool,
) -> anyhow::Result<Prepared> {
    let pipeline = load_spec(file, pool, vars)?;
    let Some(directory) = source.map(Path::to_path_buf).or(pipeline.source) else {
        return Ok(Prepared {
            spec: pipeline.spec,
            source: None,
        });
    };
    let packing = directory.clone();
    let packed = tokio::task::spawn_blocking(move || archive::pack(&packing, include_git))
        .await
        .context("packing the source stopped")??;
    for skipped in &packed.skipped {
        output::note(&format!(
            "source: skipped {}: not a file, directory or symbolic link",
            skipped.display()
        ));
    }
    Ok(Prepared {
        spec: pipeline.spec,
        source: Some((directory, packed)),
    })
}

/// Applies `--pool` and `--var` to a parsed pipeline.
pub fn apply_overrides(
    spec: &mut JobSpec,
    pool: Option<&str>,
    vars: &[(String, String)],
) -> anyhow::Result<()> {
    if let Some(pool) = pool {
        if pool.trim().is_empty() {
            bail!("--pool must not be empty");
        }
        pool.clone_into(&mut spec.pool);
    }
    for (key, value) in vars {
        if spec.secrets.contains_key(key) {
            bail!("--var {key}: `{key}` is a secret of the pipeline");
        }
        spec.variables.insert(key.clone(), value.clone());
    }
    Ok(())
}

/// Runs a `job` command; `prepared` is the pipeline (and source) `job
/// queue` read.
pub(crate) async fn job(
    client: &mut Client,
    command: JobCommand,
    prepared: Option<Prepared>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Queue { follow, .. } => {
            let Prepared { mut spec, source } =
                prepared.ok_or_else(|| anyhow::anyhow!("no pipeline was read"))?;
            if let Some((directory, packed)) = source {
                spec.source_id = upload(client, &directory, packed, &spec.pool).await?;
            }
            queue(client, spec, follow, format).await
        }
        JobCommand::Cancel { job_id, reason } => {
            let response = client
                .jobs
                .cancel_job(CancelJobRequest {
                    job_id: job_id.clone(),
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(|status| client.error(&status))?;
            let state = response.into_inner().state();
            match format {
                OutputFormat::Json => output::json(&CanceledView {
                    state: format::job_state(state).to_owned(),
                    job_id,
                })?,
                OutputFormat::Table => {
                    output::text(&format!("{}\n", cancel_summary(&job_id, state)))?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Get { job_id } => {
            let job = get_job(client, &job_id).await?;
            match format {
                OutputFormat::Json => output::json(&JobView::from(&job))?,
                OutputFormat::Table => output::text(&job_details(&job, now_micros()))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { pool, state, limit } => {
            let jobs = list(
                client,
                pool.unwrap_or_default(),
                state.map(JobState::from),
                limit,
            )
            .await?;
            match format {
                OutputFormat::Json => {
                    output::json(&jobs.iter().map(JobView::from).collect::<Vec<_>>())?
                }
                OutputFormat::Table => output::text(&job_table(&jobs, now_micros()))?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Uploads a packed source for jobs of `pool` and returns its id.
async fn upload(
    client: &mut Client,
    directory: &Path,
    packed: PackedSource,
    pool: &str,
) -> anyhow::Result<String> {
    let (files, size) = (packed.files, packed.size);
    let name = format!("{}.tar.gz", archive_stem(directory));
    let response = resources::upload_source(client, packed, pool, &name).await?;
    output::note(&format!(
        "uploaded source {} ({} file{}, {}) as {}",
        directory.display(),
        files,
        if files == 1 { "" } else { "s" },
        format::size(size),
        response.source_id
    ));
    Ok(response.source_id)
}

/// The archive's name without `.tar.gz`: the directory's name, or `source`.
fn archive_stem(directory: &Path) -> String {
    let name = directory
        .canonicalize()
        .ok()
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if name.is_empty() {
        "source".to_owned()
    } else {
        name
    }
}

/// `job cancel`'s line for the state the server answered with.
pub fn cancel_summary(job_id: &str, state: JobState) -> String {
    match state {
        JobState::Canceled => format!("job {job_id} canceled"),
        JobState::Queued | JobState::Assigned | JobState::Running => {
            format!("job {job_id}: cancel requested; the agent is stopping it")
        }
        JobState::Succeeded | JobState::Failed => {
            format!("job {job_id} already ended: {}", format::job_state(state))
        }
        JobState::Unspecified => format!("job {job_id}: cancel requested"),
    }
}

async fn queue(
    client: &mut Client,
    spec: JobSpec,
    follow: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let step_names: Vec<String> = spec.steps.iter().map(|step| step.name.clone()).collect();
    let response = client
        .jobs
        .queue_job(QueueJobRequest { spec: Some(spec) })
        .await
        .map_err(|status| client.error(&status))?;
    let mut job = response
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the server returned no job"))?;
    let summary = format!(
        "queued job {} ({}) in pool {}: {}",
        job.id,
        job.name,
        job.pool,
        format::job_state(job.state())
    );
    match (format, follow) {
        (OutputFormat::Json, false) => output::json(&JobView::from(&job))?,
        (OutputFormat::Json, true) => output::json_line(&JobView::from(&job))?,
        (OutputFormat::Table, false) => output::text(&format!("{summary}\n"))?,
        (OutputFormat::Table, true) => output::note(&summary),
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Log lines name their step: take the names from the pipeline when the
    // server's answer lists no steps.
    if job.steps.is_empty() {
        job.steps = step_names
            .into_iter()
            .zip(0..)
            .map(|(name, index)| StepStatus {
                index,
                name,
                ..StepStatus::default()
            })
            .collect();
    }
    follow_to_end(client, &job, 0, false, format).await
}

/// Streams a job's log to standard output (standard-error lines to standard
/// error in table mode) until it ends, reports the end and returns the
/// exit code.
async fn follow_to_end(
    client: &mut Client,
    job: &Job,
    from: u64,
    timestamps: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let json = format == OutputFormat::Json;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut printer = LogPrinter::new(&mut out, Some(&mut err), job, timestamps, json);
    let state = stream_logs(client, &job.id, from, true, &mut printer)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the log of job {} ended before the job did", job.id))?;
    if json {
        output::json_line(&FinalStateView {
            job_id: job.id.clone(),
            final_state: format::job_state(state).to_owned(),
        })?;
    } else {
        // The job's message says why it failed; without it, the state alone.
        let ended = get_job(client, &job.id).await.ok();
        output::note(&final_summary(&job.id, state, ended.as_ref()));
    }
    Ok(exit_code(state))
}

/// `job ID succeeded in 4.2s` or `job ID failed: why`.
pub fn final_summary(job_id: &str, state: JobState, job: Option<&Job>) -> String {
    let mut summary = format!("job {job_id} {}", format::job_state(state));
    if let Some(job) = job {
        let started = format::micros(job.start_time.as_ref());
        let finished = format::micros(job.finish_time.as_ref());
        if let Some(duration) = format::between(started, finished) {
            summary.push_str(&format!(" in {}", format::short_duration(duration)));
        }
        if !job.message.is_empty() && state != JobState::Succeeded {
            summary.push_str(&format!(": {}", job.message));
        }
    }
    summary
}

/// Runs `logs`.
pub(crate) async fn logs(
    client: &mut Client,
    args: LogsArgs,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let job = get_job(client, &args.job_id).await?;
    if args.follow {
        return follow_to_end(client, &job, args.from, args.timestamps, format).await;
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut printer = LogPrinter::new(
        &mut out,
        Some(&mut err),
        &job,
        args.timestamps,
        format == OutputFormat::Json,
    );
    stream_logs(client, &job.id, args.from, false, &mut printer).await?;
    Ok(ExitCode::SUCCESS)
}

/// Lists up to `limit` jobs, following pages.
async fn list(
    client: &mut Client,
    pool: String,
    state: Option<JobState>,
    limit: u32,
) -> anyhow::Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut page_token = String::new();
    loop {
        let wanted = limit.saturating_sub(u32::try_from(jobs.len()).unwrap_or(u32::MAX));
        let request = ListJobsRequest {
            pool: pool.clone(),
            state: state.unwrap_or(JobState::Unspecified) as i32,
            page_size: wanted.min(1000),
            page_token,
        };
        let response = client
            .jobs
            .list_jobs(request)
            .await
            .map_err(|status| client.error(&status))?
            .into_inner();
        jobs.extend(response.jobs);
        jobs.truncate(limit as usize);
        if response.next_page_token.is_empty() || jobs.len() >= limit as usize {
            return Ok(jobs);
        }
        page_token = response.next_page_token;
    }
}

/// The `job list` table.
pub fn job_table(jobs: &[Job], now: i64) -> String {
    let mut table = Table::new(&["ID", "NAME", "POOL", "STATE", "AGENT", "QUEUED", "DURATION"]);
    for job in jobs {
        table.row(vec![
            job.id.clone(),
            job.name.clone(),
            job.pool.clone(),
            format::job_state(job.state()).to_owned(),
            format::or_dash(&job.agent_name),
            format::relative_cell(format::micros(job.queue_time.as_ref()), now),
            run_time(job.start_time.as_ref(), job.finish_time.as_ref(), now),
        ]);
    }
    table.render()
}

/// How long something ran: `1.5s`, `4.2s so far` while it runs, `-` before.
fn run_time(
    start: Option<&prost_types::Timestamp>,
    finish: Option<&prost_types::Timestamp>,
    now: i64,
) -> String {
    match (format::micros(start), format::micros(finish)) {
        (Some(start), Some(finish)) => format::short_duration(finish - start),
        (Some(start), None) => format!("{} so far", format::short_duration(now - start)),
        _ => "-".to_owned(),
    }
}

fn time_detail(timestamp: Option<&prost_types::Timestamp>, now: i64) -> String {
    format::micros(timestamp).map_or_else(
        || "-".to_owned(),
        |micros| {
            format!(
                "{} ({})",
                format::rfc3339_seconds(micros),
                format::relative(micros, now)
            )
        },
    )
}

/// The `job get` text: one `key: value` line per field, then the steps.
pub fn job_details(job: &Job, now: i64) -> String {
    let queued = format::micros(job.queue_time.as_ref());
    let assigned = format::micros(job.assign_time.as_ref());
    let agent = match (job.agent_name.as_str(), job.agent_id.as_str()) {
        ("", "") => "-".to_owned(),
        ("", id) => id.to_owned(),
        (name, id) => format!("{name} ({id})"),
    };
    let mut secrets = job.secret_names.clone();
    secrets.sort();
    let attempt = if job.max_attempts > 0 {
        format!("{}/{}", job.attempt, job.max_attempts)
    } else {
        job.attempt.to_string()
    };
    let holds_lease = matches!(job.state(), JobState::Assigned | JobState::Running);
    let mut fields = vec![
        ("id", job.id.clone()),
        ("name", job.name.clone()),
        ("project", job.project.clone()),
        ("pipeline", job.pipeline.clone()),
        ("pool", job.pool.clone()),
        ("state", format::job_state(job.state()).to_owned()),
        ("message", format::or_dash(&job.message)),
        ("agent", agent),
        ("attempt", attempt),
        ("demands", format::pairs(&job.demands)),
        ("secrets", format::or_dash(&secrets.join(","))),
        ("source", format::or_dash(&job.source_id)),
        ("trace id", format::or_dash(&job.trace_id)),
        ("queued", time_detail(job.queue_time.as_ref(), now)),
        ("assigned", time_detail(job.assign_time.as_ref(), now)),
        ("started", time_detail(job.start_time.as_ref(), now)),
        ("finished", time_detail(job.finish_time.as_ref(), now)),
    ];
    if format::micros(job.cancel_time.as_ref()).is_some() {
        fields.push((
            "cancel requested",
            time_detail(job.cancel_time.as_ref(), now),
        ));
    }
    if holds_lease && format::micros(job.lease_expire_time.as_ref()).is_some() {
        fields.push((
            "lease expires",
            time_detail(job.lease_expire_time.as_ref(), now),
        ));
    }
    fields.extend([
        (
            "dispatch latency",
            format::between(queued, assigned)
                .map_or_else(|| "-".to_owned(), |micros| format!("{} ms", micros / 1000)),
        ),
        (
            "duration",
            run_time(job.start_time.as_ref(), job.finish_time.as_ref(), now),
        ),
        ("log lines", job.log_line_count.to_string()),
        (
            "tests",
            job.test_summary
                .as_ref()
                .map_or_else(|| "-".to_owned(), format::test_counts),
        ),
    ]);
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in fields {
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        text.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    if let Some(summary) = job.test_summary.as_ref()
        && !summary.failed_tests.is_empty()
    {
        text.push_str("\nfailed tests:\n");
        for name in &summary.failed_tests {
            let name: String = name
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            text.push_str(&format!("  {name}\n"));
        }
        let unnamed = (summary.failed as usize).saturating_sub(summary.failed_tests.len());
        if unnamed > 0 {
            text.push_str(&format!("  … and {unnamed} more\n"));
        }
    }
    text.push('\n');
    let mut steps = Table::new(&["STEP", "NAME", "STATE", "EXIT", "DURATION"]);
    for step in &job.steps {
        steps.row(vec![
            step.index.to_string(),
            step.name.clone(),
            format::step_state(step.state()).to_owned(),
            step.exit_code
                .map_or_else(|| "-".to_owned(), |code| code.to_string()),
            run_time(step.start_time.as_ref(), step.finish_time.as_ref(), now),
        ]);
    }
    text.push_str(&steps.render());
    text
}

#[cfg(test)]
mod tests;
