//! Log ingest: `--lines` lines per run, split evenly over `J` concurrent
//! jobs. Each job's agent masks every line with ferry-agent's own `Masker`
//! (the job carries a secret; one line in `--secret-every` prints it),
//! numbers it, and streams it in batches of 500 over one StreamLogs call,
//! until the server has acknowledged (stored) the last line.
//!
//! The clock starts when every agent holds its job and has reported the
//! step running (all start together) and stops at the last job's final
//! acknowledgement. Lines/s = lines / that time. The server's stored count
//! (GetJob `log_line_count`) must equal what was sent, and the stored text
//! must be masked.

use std::time::Duration;

use anyhow::{Context, bail};
use ferry_proto::v1::{FollowLogsRequest, JobState};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Bench, Errors, launch, run_label};
use crate::cli::LogsArgs;
use crate::fleet::{Behaviour, Event};
use crate::jobs::{self, Ledger};
use crate::report::{Row, median, ms_note, runs_note, thousands};
use crate::server::{Target, cpu_now};

const GOAL: f64 = 1_000_000.0;
/// Longest pause in the agents' activity before the run is abandoned.
const STALL: Duration = Duration::from_secs(60);

/// One row per job count.
pub async fn run(bench: &Bench, args: &LogsArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &count in &args.jobs {
        let count = count.max(1);
        let per_job = args.lines / count as u64;
        let what = format!("log ingest, {count} jobs × {per_job} lines");
        let runs = bench
            .repeat(&what, async |target, _run| {
                let (rate, cpu) = one_run(target, count, per_job, args.secret_every).await?;
                eprintln!(
                    "  {} lines/s stored, every line acknowledged and counted; CPU per 1,000 lines: {}",
                    thousands(rate),
                    cpu_note(cpu),
                );
                Ok((rate, cpu))
            })
            .await?;
        let cpu = median_cpu(&runs);
        let rates: Vec<f64> = runs.iter().map(|(rate, _)| *rate).collect();
        let result = median(&rates);
        rows.push(Row {
            figure: "Log ingest, lines/s streamed, masked, stored".to_owned(),
            setup: format!(
                "{count} concurrent job(s) × {} lines (~90 B, 1 in {} masked) in batches of 500, {}, {}; CPU per 1,000 lines: {}",
                thousands(per_job as f64),
                args.secret_every,
                bench.database(),
                runs_note(&rates, "/s"),
                cpu_note(cpu),
            ),
            result: format!("{}/s", thousands(result)),
            goal: format!("≥ {}/s", thousands(GOAL)),
            met: Some(result >= GOAL),
        });
    }
    Ok(rows)
}

/// ferryd's and ferry-bench's CPU time per 1,000 lines, in ms.
type Cpu = (Option<f64>, Option<f64>);

fn median_cpu(runs: &[(f64, Cpu)]) -> Cpu {
    let pick = |get: fn(&Cpu) -> Option<f64>| {
        let values: Option<Vec<f64>> = runs.iter().map(|(_, cpu)| get(cpu)).collect();
        values.map(|values| median(&values))
    };
    (pick(|cpu| cpu.0), pick(|cpu| cpu.1))
}

fn cpu_note((server, bench): Cpu) -> String {
    format!("ferryd {}, ferry-bench {}", ms_note(server), ms_note(bench))
}

/// The rate in lines per second, and the CPU time per 1,000 lines.
async fn one_run(
    target: &Target,
    count: usize,
    per_job: u64,
    secret_every: u64,
) -> anyhow::Result<(f64, Cpu)> {
    let label = run_label();
    let secret = format!("s3cr3t-{}", run_label());
    let (go, started) = watch::channel(false);
    let behaviour = Behaviour::Logs {
        go: started,
        lines: per_job,
        secret_every,
    };
    let mut fleet = launch(target, count, &label, &behaviour).await?;
    let mut client = jobs::client(target).await?;
    let mut ledger = Ledger::default();
    let mut errors = Errors::default();
    let result = async {
        for _ in 0..count {
            let spec = jobs::spec(&target.pool, &label, "logs", Some(&secret));
            ledger.queued.push(jobs::queue(&mut client, spec).await?);
        }
        let mut ready = 0;
        while ready < count {
            match fleet.next_event(STALL).await? {
                Event::Opened { job_id, .. } => *ledger.opened.entry(job_id).or_default() += 1,
                Event::Ready => ready += 1,
                Event::Error(error) => errors.note(&error),
                other => bail!("unexpected before the start: {other:?}"),
            }
        }
        let cpu_before = cpu_now(target);
        let started = Instant::now();
        let _ = go.send(true);
        let (mut streamed, mut completed, mut lines) = (0, 0, 0u64);
        let mut last = started;
        while completed < count {
            match fleet.next_event(STALL).await? {
                Event::Streamed { lines: acked, at } => {
                    streamed += 1;
                    lines += acked;
                    last = last.max(at);
                }
                Event::Completed { job_id, .. } => {
                    completed += 1;
                    *ledger.completed.entry(job_id).or_default() += 1;
                }
                Event::Error(error) => {
                    errors.note(&error);
                    bail!("a job failed: {error}");
                }
                other => bail!("unexpected while streaming: {other:?}"),
            }
        }
        let cpu_after = cpu_now(target);
        if streamed != count || lines != per_job * count as u64 {
            bail!("{streamed} of {count} jobs streamed {lines} lines in all");
        }
        // ms per 1,000 lines
        let cpu = cpu_before.per(&cpu_after, lines as f64 / 1000.0, 1000.0);
        anyhow::Ok((
            lines as f64 / last.duration_since(started).as_secs_f64().max(1e-9),
            cpu,
        ))
    }
    .await;
    fleet.stop().await;
    let (rate, cpu) = result?;
    ledger.check()?;
    if errors.count > 0 {
        bail!("{} agent calls failed", errors.count);
    }
    for job in jobs::get_all(target, &ledger.queued).await? {
        if job.state != JobState::Succeeded as i32 || job.log_line_count != per_job {
            bail!(
                "job {} ended {:?} with {} stored lines, {per_job} sent",
                job.id,
                JobState::try_from(job.state).unwrap_or_default(),
                job.log_line_count
            );
        }
    }
    check_masked(
        target,
        &ledger.queued[0],
        &secret,
        secret_every.min(per_job),
    )
    .await?;
    Ok((rate, cpu))
}

/// Reads the first stored lines of a job: they must be numbered from 1,
/// and the ones that printed the secret must show `***` instead.
async fn check_masked(
    target: &Target,
    job_id: &str,
    secret: &str,
    secret_every: u64,
) -> anyhow::Result<()> {
    let channel = target.address.connect().await?;
    let mut stream = ferry_client::logs(channel, target.owner.clone())
        .follow_logs(FollowLogsRequest {
            job_id: job_id.to_owned(),
            from_sequence: 1,
            follow: false,
        })
        .await
        .context("FollowLogs")?
        .into_inner();
    let first = stream
        .message()
        .await
        .context("FollowLogs")?
        .context("no stored lines")?;
    if first.lines.first().map(|line| line.sequence) != Some(1) {
        bail!("the stored log does not start at sequence 1");
    }
    if first.lines.iter().any(|line| line.text.contains(secret)) {
        bail!("a stored line shows the secret");
    }
    let masked = first
        .lines
        .iter()
        .filter(|line| line.text.contains("***"))
        .count();
    if secret_every > 0 && first.lines.len() as u64 >= secret_every && masked == 0 {
        bail!("no stored line was masked");
    }
    Ok(())
}
