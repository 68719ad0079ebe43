//! The figures: each runs `--runs` times on a fresh server and returns
//! table rows.

pub mod calls;
pub mod dispatch;
pub mod idle;
pub mod logs;
pub mod throughput;

use std::time::Duration;

use anyhow::Context as _;

use crate::fleet::{self, Behaviour, Fleet};
use crate::server::{ServerPlan, Target};

/// What every figure needs.
#[derive(Debug)]
pub struct Bench {
    /// The server(s).
    pub plan: ServerPlan,
    /// Runs per figure.
    pub runs: usize,
    /// Deadline of one run.
    pub timeout: Duration,
}

impl Bench {
    /// Runs `body` on a fresh server `--runs` times, each within the
    /// timeout; on failure shows the end of the server's log.
    pub async fn repeat<T>(
        &self,
        what: &str,
        mut body: impl AsyncFnMut(&Target, usize) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut results = Vec::new();
        let runs = self.runs.max(1);
        for run in 1..=runs {
            eprintln!("▶ {what}: run {run} of {runs}");
            let target = self.plan.start()?;
            let result = match tokio::time::timeout(self.timeout, body(&target, run)).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "the run took longer than {:?}",
                    self.timeout
                )),
            };
            match result {
                Ok(value) => results.push(value),
                Err(error) => {
                    let tail = target.log_tail(30);
                    if !tail.is_empty() {
                        eprintln!("--- end of the ferryd log ---\n{tail}\n---");
                    }
                    return Err(error.context(format!("{what}, run {run}")));
                }
            }
        }
        Ok(results)
    }

    /// `SQLite` or `PostgreSQL`.
    pub fn database(&self) -> &'static str {
        self.plan.database_label()
    }
}

/// A fresh run label (the capability jobs of this run demand).
pub fn run_label() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Registers `count` agents, connects each on its own connection, starts
/// them and waits until each has sent its first poll.
pub async fn launch(
    target: &Target,
    count: usize,
    run_label: &str,
    behaviour: &Behaviour,
) -> anyhow::Result<Fleet> {
    let started = std::time::Instant::now();
    let identities = fleet::register_all(target, count, run_label)
        .await
        .context("registering the agents")?;
    let registered = started.elapsed();
    let connected = fleet::connect_all(target, identities)
        .await
        .context("connecting the agents")?;
    let fleet = Fleet::start(connected, behaviour);
    fleet.wait_polling(Duration::from_secs(120)).await?;
    // Let the last polls reach the server and park.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "  {count} agents registered in {:.1} s, connected and polling after {:.1} s",
        registered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(fleet)
}

/// Prints an agent's error (the first few of a run) and counts it.
#[derive(Debug, Default)]
pub struct Errors {
    /// How many.
    pub count: u64,
}

impl Errors {
    /// Notes one.
    pub fn note(&mut self, error: &str) {
        self.count += 1;
        if self.count <= 5 {
            eprintln!("  agent error: {error}");
        }
    }
}
