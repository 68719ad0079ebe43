//! Throughput: `--jobs` one-step jobs queued by `--clients` concurrent
//! clients (each on its own connection, `--in-flight` calls each) and run by
//! `--agents` busy agents. Each rate is jobs divided by the time from the
//! first QueueJob call to the last QueueJob answer (queued), the last job
//! opened by an agent (dispatched) and the last answer that a job completed
//! (the log stream's final ack, or CompleteJob's).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Bench, Errors, launch, run_label};
use crate::cli::ThroughputArgs;
use crate::fleet::{Behaviour, Event};
use crate::jobs::{self, Ledger};
use crate::report::{Row, median, ms_note, runs_note, thousands};
use crate::server::{Target, cpu_now};

/// Longest pause in the agents' activity before the run is abandoned.
const STALL: Duration = Duration::from_secs(30);

/// Rates of one run, per second, and CPU time spent per job.
#[derive(Debug, Clone, Copy)]
struct Rates {
    queued: f64,
    dispatched: f64,
    completed: f64,
    /// ferryd's CPU time per job, in ms (when its process is known).
    server_cpu: Option<f64>,
    /// ferry-bench's own (agents and queueing clients), in ms.
    bench_cpu: Option<f64>,
}

/// One row per agent count.
pub async fn run(bench: &Bench, args: &ThroughputArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &agents in &args.agents {
        let what = format!("throughput, {agents} agents, {} jobs", args.jobs);
        let runs = bench
            .repeat(&what, async |target, _run| {
                let rates = one_run(target, agents, args).await?;
                eprintln!(
                    "  queued {}/s, dispatched {}/s, completed {}/s; every job ended exactly once; CPU per job: ferryd {}, ferry-bench {}",
                    thousands(rates.queued),
                    thousands(rates.dispatched),
                    thousands(rates.completed),
                    ms_note(rates.server_cpu),
                    ms_note(rates.bench_cpu),
                );
                Ok(rates)
            })
            .await?;
        let pick = |get: fn(&Rates) -> f64| runs.iter().map(get).collect::<Vec<f64>>();
        let completed = pick(|rates| rates.completed);
        let goal = if bench.database() == "SQLite" {
            3000.0
        } else {
            2000.0
        };
        let result = median(&completed);
        let cpu = |get: fn(&Rates) -> Option<f64>| {
            let values: Option<Vec<f64>> = runs.iter().map(get).collect();
            ms_note(values.map(|values| median(&values)))
        };
        rows.push(Row {
            figure: "Throughput, jobs/s queued / dispatched / completed".to_owned(),
            setup: format!(
                "{agents} agents running one-step jobs ({} log lines each), {}, {} jobs from {} clients × {} in flight, {}; every job ended exactly once; CPU per job: ferryd {}, ferry-bench {}",
                args.log_lines,
                bench.database(),
                args.jobs,
                args.clients,
                args.in_flight,
                runs_note(&completed, "/s"),
                cpu(|rates| rates.server_cpu),
                cpu(|rates| rates.bench_cpu),
            ),
            result: format!(
                "{} / {} / {}",
                thousands(median(&pick(|rates| rates.queued))),
                thousands(median(&pick(|rates| rates.dispatched))),
                thousands(result)
            ),
            goal: format!("≥ {}/s completed ({})", thousands(goal), bench.database()),
            met: Some(result >= goal),
        });
    }
    Ok(rows)
}

async fn one_run(target: &Target, agents: usize, args: &ThroughputArgs) -> anyhow::Result<Rates> {
    let label = run_label();
    let behaviour = Behaviour::Empty {
        log_lines: args.log_lines,
    };
    let mut fleet = launch(target, agents, &label, &behaviour).await?;
    let mut clients = Vec::new();
    for _ in 0..args.clients.max(1) {
        clients.push(jobs::client(target).await?);
    }
    let cpu_before = cpu_now(target);
    let next = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(Mutex::new(Vec::with_capacity(args.jobs)));
    let started = Instant::now();
    let mut queuers = JoinSet::new();
    for client in &clients {
        for _ in 0..args.in_flight.max(1) {
            let (mut client, next, queued) = (client.clone(), next.clone(), queued.clone());
            let (pool, label, total) = (target.pool.clone(), label.clone(), args.jobs);
            queuers.spawn(async move {
                let mut last = started;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let id =
                        jobs::queue(&mut client, jobs::spec(&pool, &label, "throughput", None))
                            .await?;
                    last = Instant::now();
                    if let Ok(mut queued) = queued.lock() {
                        queued.push(id);
                    }
                }
                anyhow::Ok(last)
            });
        }
    }
    let mut ledger = Ledger::default();
    let mut errors = Errors::default();
    let (mut last_opened, mut last_completed) = (started, started);
    let mut done = 0;
    let watched = async {
        while done < args.jobs {
            match fleet.next_event(STALL).await? {
                Event::Opened { job_id, at } => {
                    last_opened = last_opened.max(at);
                    *ledger.opened.entry(job_id).or_default() += 1;
                }
                Event::Completed { job_id, at } => {
                    last_completed = last_completed.max(at);
                    done += 1;
                    *ledger.completed.entry(job_id).or_default() += 1;
                }
                Event::Error(error) => errors.note(&error),
                Event::Ready | Event::Streamed { .. } => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    let cpu_after = cpu_now(target);
    let mut last_queued = started;
    while let Some(joined) = queuers.join_next().await {
        last_queued = last_queued.max(joined.context("a queueing client panicked")??);
    }
    fleet.stop().await;
    watched?;
    ledger.queued = queued
        .lock()
        .map(|queued| queued.clone())
        .unwrap_or_default();
    if ledger.queued.len() != args.jobs {
        bail!("queued {} jobs of {}", ledger.queued.len(), args.jobs);
    }
    ledger.check()?;
    jobs::check_listing(target, &ledger.queued).await?;
    if errors.count > 0 {
        bail!("{} agent calls failed", errors.count);
    }
    let rate =
        |end: Instant| args.jobs as f64 / end.duration_since(started).as_secs_f64().max(1e-9);
    // ms per job
    let (server_cpu, bench_cpu) = cpu_before.per(&cpu_after, args.jobs as f64, 1000.0);
    Ok(Rates {
        queued: rate(last_queued),
        dispatched: rate(last_opened),
        completed: rate(last_completed),
        server_cpu,
        bench_cpu,
    })
}
