//! Idle agents: the server's resident memory (`VmRSS` of the ferryd
//! process) per connected agent holding a long poll.
//!
//! Per run: RSS right after start (`start`); the agents are registered over
//! four shared connections, which are then closed (`registered`); then every
//! agent opens its own TLS connection, fetches its listener token and holds
//! a PollJob. RSS is sampled each second until it stops growing twice: once
//! every agent is connected with its listener token (`connected`), and once
//! every agent has polled (`polling`). The figure is (polling − registered) / N:
//! what the connections and held polls cost. (polling − start) / N, which
//! also counts the registrations' share, is shown beside it. ListAgents then
//! confirms how many agents the server saw online.

use std::time::Duration;

use anyhow::{Context, bail};
use ferry_proto::v1::{AgentStatus, ListAgentsRequest};
use tokio::time::Instant;

use super::{Bench, run_label};
use crate::agent::RUN_LABEL;
use crate::cli::IdleArgs;
use crate::fleet::Behaviour;
use crate::report::{Row, median, runs_note, thousands};
use crate::server::{Target, rss_of};

/// Goal per agent at 10,000 agents.
const GOAL_BYTES: f64 = 64.0 * 1024.0;

#[derive(Debug, Clone, Copy)]
struct Measured {
    per_connection: f64,
    per_agent: f64,
    with_registration: f64,
    polling_rss: u64,
    client_rss: u64,
}

/// One row per agent count.
pub async fn run(bench: &Bench, args: &IdleArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &agents in &args.agents {
        let what = format!("idle, {agents} agents");
        let runs = bench
            .repeat(&what, async |target, _run| {
                let measured = one_run(target, agents, args.settle).await?;
                eprintln!(
                    "  ferryd RSS {:.1} MiB: {} B per agent ({} B of it once connected, before polling; {} B counting registration); ferry-bench RSS {:.1} MiB",
                    mib(measured.polling_rss),
                    thousands(measured.per_agent),
                    thousands(measured.per_connection),
                    thousands(measured.with_registration),
                    mib(measured.client_rss)
                );
                Ok(measured)
            })
            .await?;
        let per_agent: Vec<f64> = runs.iter().map(|run| run.per_agent).collect();
        let with_registration: Vec<f64> = runs.iter().map(|run| run.with_registration).collect();
        let rss: Vec<f64> = runs.iter().map(|run| run.polling_rss as f64).collect();
        let per_connection: Vec<f64> = runs.iter().map(|run| run.per_connection).collect();
        let result = median(&per_agent);
        rows.push(Row {
            figure: "Server memory per idle agent".to_owned(),
            setup: format!(
                "{} agents, each on its own TLS connection holding a PollJob, {}, {}; ferryd RSS {:.0} MiB in all; {} KiB per agent once connected, before its first poll; {} KiB counting registration",
                thousands(agents as f64),
                bench.database(),
                runs_note(&per_agent, " B"),
                mib(median(&rss) as u64),
                kib(median(&per_connection)),
                kib(median(&with_registration)),
            ),
            result: format!("{} KiB", kib(result)),
            goal: if agents == 10_000 {
                "≤ 64 KiB (10,000 agents)".to_owned()
            } else {
                "none (the goal is set at 10,000 agents)".to_owned()
            },
            met: (agents == 10_000).then_some(result <= GOAL_BYTES),
        });
    }
    Ok(rows)
}

async fn one_run(target: &Target, agents: usize, settle: Duration) -> anyhow::Result<Measured> {
    let pid = target.pid.context(
        "the idle figure needs the server's process (start it here, or pass --server-pid)",
    )?;
    let rss = move || rss_of(pid).context("cannot read the server's VmRSS");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = rss()?;
    let label = run_label();
    let identities = crate::fleet::register_all(target, agents, &label).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let registered = rss()?;
    let connected = crate::fleet::connect_all(target, identities).await?;
    // Connected, listener token held, no poll yet: what the connections cost.
    let connected_rss = settled(&rss, settle).await?;
    let fleet = crate::fleet::Fleet::start(connected, &Behaviour::Idle);
    let result = async {
        fleet.wait_polling(Duration::from_secs(300)).await?;
        let polling = settled(&rss, settle).await?;
        let online = online_agents(target, &label).await?;
        if online != agents {
            bail!("the server lists {online} of {agents} agents online");
        }
        anyhow::Ok(polling)
    }
    .await;
    let client_rss = rss_of(std::process::id()).unwrap_or_default();
    fleet.stop().await;
    let polling = result?;
    Ok(Measured {
        per_connection: connected_rss.saturating_sub(registered) as f64 / agents as f64,
        per_agent: polling.saturating_sub(registered) as f64 / agents as f64,
        with_registration: polling.saturating_sub(start) as f64 / agents as f64,
        polling_rss: polling,
        client_rss,
    })
}

/// Samples RSS each second until two samples differ by less than 0.5 %
/// (at least 3 s, at most `limit`); returns the last.
async fn settled(rss: &impl Fn() -> anyhow::Result<u64>, limit: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut last = rss()?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss()?;
        let change = now.abs_diff(last) as f64 / last.max(1) as f64;
        last = now;
        let elapsed = started.elapsed();
        if (elapsed >= Duration::from_secs(3) && change < 0.005) || elapsed >= limit {
            return Ok(last);
        }
    }
}

/// Agents of this run the server lists as online (holding a poll).
async fn online_agents(target: &Target, label: &str) -> anyhow::Result<usize> {
    let channel = target.address.connect().await?;
    let agents = ferry_client::registration(channel, target.owner.clone())
        .max_decoding_message_size(ferry_client::MAX_MESSAGE_SIZE)
        .list_agents(ListAgentsRequest {
            pool: target.pool.clone(),
        })
        .await
        .context("ListAgents")?
        .into_inner()
        .agents;
    Ok(agents
        .iter()
        .filter(|agent| agent.capabilities.get(RUN_LABEL).map(String::as_str) == Some(label))
        .filter(|agent| agent.status == AgentStatus::Online as i32)
        .count())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

fn kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}
