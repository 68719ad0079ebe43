//! What a ferry job's trace and the fleet's metrics must look like, checked
//! against what a [`super::Receiver`] received: used by the end-to-end test
//! of observability (`tests/tests/observability.rs`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, ensure};
use ferry_observability::metrics::attributes;

use super::{PointValue, ReceivedSpan, Receiver};

/// The processes the job's trace must cross. (ferry-tokens is in it only
/// when the job outlived half the agent's listener token: see
/// [`tokens_traced`].)
pub const SERVICES: [&str; 5] = [
    "ferryctl",
    "ferry-gateway",
    "ferry-dispatch",
    "ferry-logs",
    "ferry-agent",
];

/// Whether the tokens service traced a listener token it issued (the
/// agent's first, a trace of its own).
pub fn tokens_traced(spans: &[ReceivedSpan]) -> bool {
    spans.iter().any(|span| {
        span.service == "ferry-tokens"
            && span.span.name == "ferry.v1.TokenService/GetListenerToken"
            && span.span.kind == SERVER
    })
}
pub const SERVER: i32 = 2;

/// What is wrong with the job's trace so far (empty when it is whole).
pub fn trace_problems(spans: &[ReceivedSpan]) -> Vec<String> {
    let mut problems = Vec::new();
    let services: BTreeSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
    for service in SERVICES {
        if !services.contains(service) {
            problems.push(format!("no span from {service}"));
        }
    }
    let ids: BTreeSet<String> = spans.iter().map(ReceivedSpan::span_id).collect();
    for span in spans {
        let parent = span.parent_id();
        if !parent.is_empty() && !ids.contains(&parent) {
            problems.push(format!(
                "{} of {} has no parent {parent} in the trace",
                span.span.name, span.service
            ));
        }
    }
    let steps = spans.iter().filter(|span| span.span.name == "step").count();
    if steps != 3 {
        problems.push(format!("{steps} step spans"));
    }
    for (service, name) in [
        ("ferry-agent", "job"),
        ("ferry-dispatch", "dispatch"),
        ("ferry-logs", "ferry.v1.LogService/StreamLogs"),
    ] {
        if !spans
            .iter()
            .any(|span| span.service == service && span.span.name == name)
        {
            problems.push(format!("no {name} span from {service}"));
        }
    }
    problems
}

fn by_id(spans: &[ReceivedSpan]) -> BTreeMap<String, &ReceivedSpan> {
    spans.iter().map(|span| (span.span_id(), span)).collect()
}

/// The shape of the job's trace, once it is whole.
pub fn check_trace(spans: &[ReceivedSpan]) -> anyhow::Result<()> {
    let index = by_id(spans);
    let parent_of = |span: &ReceivedSpan| index.get(&span.parent_id()).copied();
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.parent_id().is_empty())
        .collect();
    ensure!(roots.len() == 1, "{} roots", roots.len());
    ensure!(
        roots[0].service == "ferryctl" && roots[0].span.name == "ferryctl job queue",
        "the root is {} of {}",
        roots[0].span.name,
        roots[0].service
    );

    // Every call served by a service is a child of the gateway's span for
    // it, itself a child of the caller's: the gateway continues the trace.
    for span in spans
        .iter()
        .filter(|span| span.span.kind == SERVER && span.service != "ferry-gateway")
    {
        let name = &span.span.name;
        let (service, method) = name.split_once('/').context("a server span name")?;
        ensure!(
            span.string("rpc.system") == Some("grpc"),
            "{name}: rpc.system"
        );
        ensure!(
            span.string("rpc.service") == Some(service),
            "{name}: rpc.service"
        );
        ensure!(
            span.string("rpc.method") == Some(method),
            "{name}: rpc.method"
        );
        ensure!(
            span.int("rpc.grpc.status_code") == Some(0),
            "{name}: status code"
        );
        let gateway = parent_of(span).context("a parent")?;
        ensure!(
            gateway.service == "ferry-gateway"
                && gateway.span.kind == SERVER
                && gateway.span.name == *name
                && gateway.int("rpc.grpc.status_code") == Some(0),
            "{name} of {}: its parent is {} of {}",
            span.service,
            gateway.span.name,
            gateway.service
        );
        let caller = parent_of(gateway).context("the gateway span's parent")?;
        ensure!(
            caller.service == "ferry-agent" || caller.service == "ferryctl",
            "{name}: the gateway's parent is from {}",
            caller.service
        );
    }

    // queue (ferryctl → gateway → dispatch) → dispatch → job → steps
    let job = spans
        .iter()
        .find(|span| span.span.name == "job")
        .context("the job span")?;
    let dispatch = parent_of(job).context("the job span's parent")?;
    ensure!(dispatch.span.name == "dispatch" && dispatch.service == "ferry-dispatch");
    let queued = parent_of(dispatch).context("the dispatch span's parent")?;
    ensure!(
        queued.span.name == "ferry.v1.JobService/QueueJob",
        "the dispatch span's parent is {}",
        queued.span.name
    );
    ensure!(job.string(attributes::JOB_RESULT) == Some("succeeded"));
    let mut steps: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.span.name == "step").collect();
    steps.sort_by_key(|step| step.int(attributes::STEP_INDEX));
    let seen: Vec<(Option<&str>, Option<i64>)> = steps
        .iter()
        .map(|step| {
            (
                step.string(attributes::STEP_NAME),
                step.int(attributes::STEP_EXIT_CODE),
            )
        })
        .collect();
    ensure!(
        seen == [
            (Some("hello"), Some(0)),
            (Some("secret"), Some(0)),
            (Some("fails"), Some(3))
        ],
        "steps: {seen:?}"
    );
    for step in &steps {
        ensure!(
            step.parent_id() == job.span_id(),
            "a step outside the job span"
        );
    }
    Ok(())
}

/// What is missing or wrong in the metrics so far (empty when all is well).
pub fn metric_problems(receiver: &Receiver) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    let total = |name: &str, with: &[(&str, &str)]| receiver.total(name, with);
    let pool = [("ferry.pool", "default")];
    expect(
        "jobs queued ≥ 2",
        total("ferry.jobs.queued", &pool) >= Some(2.0),
    );
    expect(
        "a job finished succeeded",
        total(
            "ferry.jobs.finished",
            &[(attributes::JOB_RESULT, "succeeded")],
        ) >= Some(1.0),
    );
    expect(
        "one job queued (the requeued one)",
        total("ferry.queue.depth", &pool) == Some(1.0),
    );
    expect(
        "the oldest queued job has waited",
        total("ferry.queue.oldest_age", &pool).is_some_and(|age| age > 0.0 && age < 600.0),
    );
    expect(
        "no job running",
        total("ferry.jobs.running", &pool) == Some(0.0),
    );
    expect(
        "agents connected",
        total("ferry.agents.connected", &pool).is_some_and(|agents| (1.0..=2.0).contains(&agents)),
    );
    expect(
        "the agent's poll waits",
        total("ferry.polls.waiting", &[]).is_some_and(|polls| (0.0..=2.0).contains(&polls)),
    );
    expect(
        "a lapsed lease requeued its job",
        total(
            "ferry.leases.expired",
            &[("ferry.lease.outcome", "requeued")],
        ) >= Some(1.0),
    );
    let lines = total("ferry.log.lines", &[]).unwrap_or_default();
    expect("log lines", lines >= 4.0);
    expect(
        "log bytes",
        total("ferry.log.bytes", &[]).is_some_and(|bytes| bytes >= lines),
    );
    expect(
        "listener tokens issued",
        total("ferry.tokens.issued", &[("ferry.token.kind", "listener")]) >= Some(2.0),
    );
    expect(
        "job tokens issued",
        total("ferry.tokens.issued", &[("ferry.token.kind", "job")]) >= Some(2.0),
    );
    expect(
        "the unknown PAT was counted",
        total(
            "ferry.tokens.rejected",
            &[("ferry.token.reason", "unknown_pat")],
        ) >= Some(1.0),
    );
    let latency = receiver.latest("ferry.dispatch.latency", &[]);
    expect(
        "dispatch latencies",
        latency.iter().any(|point| {
            matches!(point.value, PointValue::Histogram { count, sum } if count >= 2 && sum / count as f64 <= 30.0)
        }),
    );
    for (service, code, method) in [
        ("ferry-dispatch", "0", "PollJob"),
        ("ferry-gateway", "0", "PollJob"),
        ("ferry-dispatch", "16", "GetJob"),
    ] {
        let calls = receiver
            .latest(
                "rpc.server.duration",
                &[
                    ("rpc.system", "grpc"),
                    ("rpc.service", "ferry.v1.JobService"),
                    ("rpc.method", method),
                    ("rpc.grpc.status_code", code),
                ],
            )
            .into_iter()
            .filter(|point| point.service == service)
            .count();
        expect(
            &format!("rpc.server.duration of {method} ({code}) from {service}"),
            calls > 0,
        );
    }
    problems
}
