//! Many simulated agents at once: registered, each on its own connection,
//! each in its own task polling for jobs and running them, reporting what
//! happened (with a timestamp from the one clock of this process) as events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use ferry_agent::masking::Masker;
use ferry_proto::v1::StepState;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::{self, Connected, Identity, Opened, POLL_WAIT};
use crate::server::Target;
use crate::stream;

/// Registrations in flight at once (over a few shared connections).
const REGISTER_CONCURRENCY: usize = 32;
/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Consecutive failures after which an agent gives up.
const MAX_FAILURES: u32 = 20;

/// What the agents do with a job.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Only poll; receiving a job is an error.
    Idle,
    /// `log_lines` lines on StreamLogs, the first reporting step 0
    /// running, the last succeeded and carrying the job's end: what
    /// ferry-agent sends for a step that prints nothing (`log_lines` 2).
    /// With 0 lines, ReportStep RUNNING and SUCCEEDED and CompleteJob
    /// instead of the stream.
    Empty {
        /// Lines streamed per job.
        log_lines: u64,
    },
    /// ReportStep RUNNING, then wait for `go` and stream `lines` lines
    /// masked with the job's secrets; then finish as `Empty`.
    Logs {
        /// Set to true to start streaming.
        go: watch::Receiver<bool>,
        /// Lines per job.
        lines: u64,
        /// One line in this many prints a secret.
        secret_every: u64,
    },
}

/// Something an agent did.
#[derive(Debug)]
pub enum Event {
    /// It holds this decrypted job.
    Opened {
        /// The job.
        job_id: String,
        /// When it was opened.
        at: Instant,
    },
    /// (Logs) it reported the step running and waits for `go`.
    Ready,
    /// (Logs) every line of the job was acknowledged.
    Streamed {
        /// Lines acknowledged.
        lines: u64,
        /// When the last acknowledgement arrived.
        at: Instant,
    },
    /// The job completed (on its log stream, or CompleteJob returned).
    Completed {
        /// The job.
        job_id: String,
        /// When.
        at: Instant,
    },
    /// A call failed.
    Error(String),
}

/// Registers `count` agents named `bench-<run>-<i>` offering the run label.
pub async fn register_all(
    target: &Target,
    count: usize,
    run_label: &str,
) -> anyhow::Result<Vec<Identity>> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        let channel = target.address.connect().await?;
        clients.push(ferry_client::registration(channel, target.owner.clone()));
    }
    let short = &run_label[..8.min(run_label.len())];
    futures::stream::iter(0..count)
        .map(|index| {
            let mut client = clients[index % clients.len()].clone();
            let name = format!("bench-{short}-{index}");
            let pool = target.pool.clone();
            async move { agent::register(&mut client, &pool, name, run_label).await }
        })
        .buffered(REGISTER_CONCURRENCY)
        .try_collect()
        .await
}

/// Connects every agent on its own connection and gets its listener token.
pub async fn connect_all(
    target: &Target,
    identities: Vec<Identity>,
) -> anyhow::Result<Vec<Connected>> {
    let address = &target.address;
    futures::stream::iter(identities)
        .map(|identity| async move {
            let name = identity.name.clone();
            Connected::connect(address, identity)
                .await
                .with_context(|| format!("agent {name} cannot connect"))
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

/// Running agents.
#[derive(Debug)]
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// What the agents did.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// How many agents have sent their first poll.
    pub polling: Arc<AtomicUsize>,
    /// How many agents there are.
    pub size: usize,
}

impl Fleet {
    /// Starts one task per agent.
    pub fn start(agents: Vec<Connected>, behaviour: &Behaviour) -> Fleet {
        let (stop, stopped) = watch::channel(false);
        let (sender, events) = mpsc::unbounded_channel();
        let polling = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let size = agents.len();
        for agent in agents {
            tasks.spawn(work(
                agent,
                behaviour.clone(),
                sender.clone(),
                stopped.clone(),
                polling.clone(),
            ));
        }
        Fleet {
            stop,
            tasks,
            events,
            polling,
            size,
        }
    }

    /// The next event, or an error after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Event> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => anyhow::bail!("every agent has stopped"),
            Err(_) => anyhow::bail!("no agent did anything for {timeout:?}"),
        }
    }

    /// Waits until every agent has sent its first poll.
    pub async fn wait_polling(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.polling.load(Ordering::Relaxed) < self.size {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "only {} of {} agents polled within {timeout:?}",
                    self.polling.load(Ordering::Relaxed),
                    self.size
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops every agent (a held poll is dropped) and closes the connections.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

async fn work(
    mut agent: Connected,
    behaviour: Behaviour,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
    polling: Arc<AtomicUsize>,
) {
    let mut first = true;
    let mut failures = 0u32;
    loop {
        if first {
            polling.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let polled = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            polled = agent.poll(POLL_WAIT) => polled,
        };
        let result = match polled {
            Ok(None) => Ok(()),
            Ok(Some(opened)) => run_job(&agent, opened, &behaviour, &events, &mut stop).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                let _ = events.send(Event::Error(format!("{}: {error:#}", agent.identity.name)));
                if failures >= MAX_FAILURES {
                    return;
                }
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

async fn run_job(
    agent: &Connected,
    opened: Opened,
    behaviour: &Behaviour,
    events: &mpsc::UnboundedSender<Event>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let job_id = opened.job.job_id.clone();
    let _ = events.send(Event::Opened {
        job_id: job_id.clone(),
        at: opened.at,
    });
    let session = agent.job_session(&opened.job)?;
    let masker = Masker::new(opened.job.secrets.values());
    // Whether the log stream completed the job (else CompleteJob does).
    let completed = match behaviour {
        Behaviour::Idle => anyhow::bail!("an idle agent was given job {job_id}"),
        Behaviour::Empty { log_lines: 0 } => {
            session.report_step(StepState::Running, None).await?;
            session.report_step(StepState::Succeeded, Some(0)).await?;
            false
        }
        Behaviour::Empty { log_lines } => {
            stream::step_lines(&session, &masker, *log_lines).await?;
            true
        }
        Behaviour::Logs {
            go,
            lines,
            secret_every,
        } => {
            session.report_step(StepState::Running, None).await?;
            let _ = events.send(Event::Ready);
            let mut go = go.clone();
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => anyhow::bail!("stopped before streaming"),
                started = go.wait_for(|go| *go) => { started?; }
            }
            let secret = opened
                .job
                .secrets
                .values()
                .next()
                .cloned()
                .unwrap_or_default();
            let plan = stream::Plan {
                lines: *lines,
                secret: &secret,
                secret_every: *secret_every,
            };
            let acked = stream::output_lines(&session, &masker, &plan).await?;
            let _ = events.send(Event::Streamed {
                lines: acked,
                at: Instant::now(),
            });
            session.report_step(StepState::Succeeded, Some(0)).await?;
            false
        }
    };
    if !completed {
        session.complete().await?;
    }
    let _ = events.send(Event::Completed {
        job_id,
        at: Instant::now(),
    });
    Ok(())
}
