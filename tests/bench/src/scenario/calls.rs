//! The floor under the throughput figure: what one gRPC call over TLS costs
//! this machine with nothing behind it. `--connections` connections, each
//! its own TLS/HTTP/2 connection as an agent's is, call
//! `grpc.health.v1.Health/Check` (answered from memory, no credential, no
//! store) `--in-flight` at a time until `--calls` calls were answered. The
//! CPU time ferryd and ferry-bench spent per call, times the calls a job
//! takes, is what two cores spend on a job before doing any of its work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::Bench;
use crate::cli::CallsArgs;
use crate::report::{Row, median, micros_note, runs_note, thousands};
use crate::server::{Target, cpu_now};

/// Calls a one-step job makes as this tool's agents run it: QueueJob,
/// PollJob, StreamLogs (two messages and two acks on one call, the second
/// carrying the job's end), as ferry-agent makes them.
pub const CALLS_PER_JOB: f64 = 3.0;

/// One run's rate and CPU time per call.
#[derive(Debug, Clone, Copy)]
struct Rates {
    calls: f64,
    /// ferryd's CPU time per call, in µs.
    server_cpu: Option<f64>,
    /// ferry-bench's, in µs.
    bench_cpu: Option<f64>,
}

/// One row.
pub async fn run(bench: &Bench, args: &CallsArgs) -> anyhow::Result<Vec<Row>> {
    let what = format!("calls, {} connections", args.connections);
    let runs = bench
        .repeat(&what, async |target, _run| {
            let rates = one_run(target, args).await?;
            eprintln!(
                "  {} calls/s; CPU per call: ferryd {}, ferry-bench {}",
                thousands(rates.calls),
                micros_note(rates.server_cpu),
                micros_note(rates.bench_cpu),
            );
            Ok(rates)
        })
        .await?;
    let calls: Vec<f64> = runs.iter().map(|rates| rates.calls).collect();
    let cpu = |get: fn(&Rates) -> Option<f64>| {
        let values: Option<Vec<f64>> = runs.iter().map(get).collect();
        values.map(|values| median(&values))
    };
    let (server, client) = (cpu(|rates| rates.server_cpu), cpu(|rates| rates.bench_cpu));
    let floor = match (server, client) {
        (Some(server), Some(client)) => {
            let per_job = (server + client) * CALLS_PER_JOB;
            format!(
                "; a job's {CALLS_PER_JOB} calls take {:.0} µs of CPU before any work, which caps two cores at {} jobs/s",
                per_job,
                thousands(2.0 * 1_000_000.0 / per_job)
            )
        }
        _ => String::new(),
    };
    Ok(vec![Row {
        figure: "One gRPC call over TLS with nothing behind it (Health/Check), calls/s".to_owned(),
        setup: format!(
            "{} connections × {} in flight, {} calls, {}; CPU per call: ferryd {}, ferry-bench {}{floor}",
            args.connections,
            args.in_flight,
            args.calls,
            runs_note(&calls, "/s"),
            micros_note(server),
            micros_note(client),
        ),
        result: thousands(median(&calls)),
        goal: "none (the floor under the throughput figures)".to_owned(),
        met: None,
    }])
}

async fn one_run(target: &Target, args: &CallsArgs) -> anyhow::Result<Rates> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        let channel = target.address.connect().await.context("connecting")?;
        clients.push(HealthClient::new(channel));
    }
    // One call on each connection first: the handshakes are not measured.
    for client in &mut clients {
        client
            .check(HealthCheckRequest::default())
            .await
            .context("Health/Check")?;
    }
    let before = cpu_now(target);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for client in &clients {
        for _ in 0..args.in_flight.max(1) {
            let (mut client, next, total) = (client.clone(), next.clone(), args.calls);
            callers.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    client
                        .check(HealthCheckRequest::default())
                        .await
                        .context("Health/Check")?;
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(joined) = callers.join_next().await {
        joined.context("a caller panicked")??;
    }
    let elapsed = started.elapsed();
    let after = cpu_now(target);
    let (server_cpu, bench_cpu) = before.per(&after, args.calls as f64, 1_000_000.0);
    Ok(Rates {
        calls: args.calls as f64 / elapsed.as_secs_f64().max(1e-9),
        server_cpu,
        bench_cpu,
    })
}
