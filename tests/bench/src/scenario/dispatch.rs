//! Dispatch latency.
//!
//! Definition: for one job, the time on this process's monotonic clock
//! from just before the QueueJob call is made (the client then encodes,
//! encrypts and sends it) to the moment a simulated agent that was
//! long-polling has received the PollJob answer, opened the sealed AgentJob
//! with its key and decoded it. The queueing client and the agents are in
//! this one process, so one clock measures both ends.
//!
//! Jobs are queued one at a time, each after the previous one has completed,
//! so every measurement sees `N` idle long polls and no other load. The
//! first `--warmup` jobs are not measured.

use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::{Bench, Errors, launch, run_label};
use crate::cli::DispatchArgs;
use crate::fleet::{Behaviour, Event};
use crate::jobs::{self, Ledger};
use crate::report::{Percentiles, Row, ms};

/// How long one job may take from queue to completion.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run measured.
#[derive(Debug)]
struct Measured {
    latency: Percentiles,
    queue_call: Percentiles,
}

/// One row per agent count.
pub async fn run(bench: &Bench, args: &DispatchArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &agents in &args.agents {
        let what = format!("dispatch latency, {agents} idle agents");
        let runs = bench
            .repeat(&what, async |target, _run| {
                let measured = one_run(target, agents, args).await?;
                eprintln!(
                    "  dispatch p50/p95/p99/max {}; QueueJob call p50 {} ms",
                    measured.latency.display(),
                    ms(measured.queue_call.p50)
                );
                Ok(measured)
            })
            .await?;
        let latency: Vec<Percentiles> = runs.iter().map(|run| run.latency).collect();
        let queue_call: Vec<Percentiles> = runs.iter().map(|run| run.queue_call).collect();
        let median = Percentiles::median_of(&latency);
        let queue_call = Percentiles::median_of(&queue_call);
        let goal_applies = agents == 100 && bench.database() == "SQLite";
        let met = goal_applies.then(|| {
            median.p50 <= Duration::from_millis(1) && median.p99 <= Duration::from_millis(2)
        });
        let runs_note = if runs.len() > 1 {
            format!("median of {} runs (per statistic)", runs.len())
        } else {
            "1 run".to_owned()
        };
        rows.push(Row {
            figure: "Dispatch latency p50 / p95 / p99 / max".to_owned(),
            setup: format!(
                "{agents} idle long-polling agents, {}, {} jobs queued one at a time (+{} warm-up), {runs_note}; QueueJob call alone p50 {} ms",
                bench.database(),
                args.jobs,
                args.warmup,
                ms(queue_call.p50),
            ),
            result: median.display(),
            goal: if agents == 100 {
                "p50 ≤ 1 ms, p99 ≤ 2 ms (100 agents, SQLite)".to_owned()
            } else {
                "none (the goal is set at 100 agents)".to_owned()
            },
            met,
        });
    }
    Ok(rows)
}

async fn one_run(
    target: &crate::server::Target,
    agents: usize,
    args: &DispatchArgs,
) -> anyhow::Result<Measured> {
    let label = run_label();
    let mut fleet = launch(target, agents, &label, &Behaviour::Empty { log_lines: 0 }).await?;
    let mut client = jobs::client(target).await?;
    let mut ledger = Ledger::default();
    let mut errors = Errors::default();
    let mut latencies = Vec::with_capacity(args.jobs);
    let mut queue_calls = Vec::with_capacity(args.jobs);
    let result = async {
        for index in 0..args.warmup + args.jobs {
            let spec = jobs::spec(&target.pool, &label, "dispatch", None);
            let sent = Instant::now();
            let job_id = jobs::queue(&mut client, spec).await?;
            let returned = Instant::now();
            ledger.queued.push(job_id.clone());
            let mut opened_at = None;
            let deadline = Instant::now() + JOB_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match fleet.next_event(left).await? {
                    Event::Opened { job_id: id, at } => {
                        if id == job_id {
                            opened_at = Some(at);
                        }
                        *ledger.opened.entry(id).or_default() += 1;
                    }
                    Event::Completed { job_id: id, .. } => {
                        let done = id == job_id;
                        *ledger.completed.entry(id).or_default() += 1;
                        if done {
                            break;
                        }
                    }
                    Event::Error(error) => errors.note(&error),
                    Event::Ready | Event::Streamed { .. } => {}
                }
            }
            let Some(opened_at) = opened_at else {
                bail!("job {job_id} completed without being opened");
            };
            if index >= args.warmup {
                latencies.push(opened_at.saturating_duration_since(sent));
                queue_calls.push(returned.saturating_duration_since(sent));
            }
        }
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    result?;
    ledger.check()?;
    jobs::check_listing(target, &ledger.queued).await?;
    if errors.count > 0 {
        bail!("{} agent calls failed", errors.count);
    }
    Ok(Measured {
        latency: Percentiles::of(&mut latencies),
        queue_call: Percentiles::of(&mut queue_calls),
    })
}
