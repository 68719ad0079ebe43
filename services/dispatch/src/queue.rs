//! The in-memory hand-off between queued jobs and waiting long polls.
//!
//! The database is the truth (a job belongs to an agent once the store's
//! conditional claim says so); this structure only decides *who to try*
//! without touching the database: per pool, a FIFO of queued jobs no idle
//! agent could take, and a FIFO of idle pollers. A new job goes straight to
//! the longest-waiting poller whose capabilities meet its demands; a new
//! poll takes the oldest queued job it can run. Nothing here polls on a
//! timer, and the lock is held only for in-memory work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

/// A queued job as the hand-off sees it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// Job id.
    pub id: String,
    /// What the agent must offer.
    pub demands: Arc<BTreeMap<String, String>>,
    /// The job as this process stored it, when it was queued here: its
    /// dispatch then reads nothing back from the store. `None` for jobs
    /// loaded from the store (start-up, requeues, other replicas).
    pub prepared: Option<Arc<Prepared>>,
}

impl QueuedJob {
    /// A job known by its id and demands; its row is read when it is
    /// dispatched.
    pub fn stored(id: String, demands: BTreeMap<String, String>) -> Self {
        Self {
            id,
            demands: Arc::new(demands),
            prepared: None,
        }
    }
}

/// A job as it was queued: its row (state `Queued`, first attempt) and its
/// spec. `Debug` shows the id only: the spec holds the job's secrets.
pub struct Prepared {
    /// The row as inserted.
    pub job: ferry_store::Job,
    /// The normalized spec, as stored (encrypted) with the row.
    pub spec: ferry_proto::v1::JobSpec,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Prepared")
            .field("job_id", &self.job.id)
            .finish_non_exhaustive()
    }
}

/// What a waiting poller offers.
#[derive(Debug)]
struct Waiter {
    id: u64,
    capabilities: Arc<BTreeMap<String, String>>,
    agent_id: String,
    sender: oneshot::Sender<QueuedJob>,
}

#[derive(Debug, Default)]
struct PoolQueue {
    jobs: VecDeque<QueuedJob>,
    waiters: VecDeque<Waiter>,
}

impl PoolQueue {
    /// Removes and returns the first live waiter that meets `demands`.
    fn take_waiter(&mut self, demands: &BTreeMap<String, String>) -> Option<Taken> {
        while let Some(position) = self
            .waiters
            .iter()
            .position(|waiter| ferry_store::demands_met(demands, &waiter.capabilities))
        {
            let waiter = self.waiters.remove(position)?;
            if waiter.sender.is_closed() {
                continue; // the poll ended; try the next one
            }
            return Some(Taken {
                agent_id: waiter.agent_id,
                sender: waiter.sender,
            });
        }
        None
    }
}

#[derive(Debug, Default)]
struct State {
    pools: HashMap<String, PoolQueue>,
    next_waiter: u64,
}

/// Per-pool queues of jobs and pollers.
#[derive(Debug, Default)]
pub struct HandOff {
    state: Mutex<State>,
    returns: Option<mpsc::UnboundedSender<Returned>>,
}

/// Where a new job went.
#[derive(Debug)]
pub enum Offer {
    /// To this waiting poller: claim it for `agent_id`, then [`Taken::send`].
    Taken(Taken),
    /// Nobody could take it: it waits in the pool's queue.
    Queued,
}

/// A poller that was picked for a job and removed from the queue.
#[derive(Debug)]
pub struct Taken {
    /// The poller's agent.
    pub agent_id: String,
    sender: oneshot::Sender<QueuedJob>,
}

impl Taken {
    /// Hands the (claimed) job to the poller. Gives it back when the
    /// poller has gone away meanwhile.
    pub fn send(self, job: QueuedJob) -> Result<(), QueuedJob> {
        self.sender.send(job)
    }
}

/// A job that was handed to a poll that ended before reading it: it is
/// claimed for `agent_id` in the store and must be released and re-offered.
#[derive(Debug)]
pub struct Returned {
    /// The pool.
    pub pool_id: String,
    /// The agent it was claimed for.
    pub agent_id: String,
    /// The job.
    pub job: QueuedJob,
}

/// A registered poller; dropping it withdraws the poller, and returns a job
/// handed to it but never read.
#[derive(Debug)]
pub struct Registration<'a> {
    hand_off: &'a HandOff,
    pool_id: String,
    agent_id: String,
    waiter_id: u64,
    /// Receives the job handed to this poller.
    pub receiver: oneshot::Receiver<QueuedJob>,
}

impl Registration<'_> {
    /// Withdraws the poller (its wait ended) and returns the job handed to
    /// it just before, if any.
    pub fn withdraw(mut self) -> Option<QueuedJob> {
        self.remove_waiter();
        self.receiver.try_recv().ok()
    }

    fn remove_waiter(&self) {
        let mut state = self.hand_off.lock();
        if let Some(pool) = state.pools.get_mut(&self.pool_id) {
            pool.waiters.retain(|waiter| waiter.id != self.waiter_id);
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.remove_waiter();
        if let Ok(job) = self.receiver.try_recv()
            && let Some(returns) = &self.hand_off.returns
        {
            let _ = returns.send(Returned {
                pool_id: self.pool_id.clone(),
                agent_id: self.agent_id.clone(),
                job,
            });
        }
    }
}

/// What a poll found.
#[derive(Debug)]
pub enum Found<'a> {
    /// A queued job it can run: claim it.
    Job(QueuedJob),
    /// Nothing: wait on the registration.
    Waiting(Registration<'a>),
}

impl HandOff {
    /// A hand-off that sends jobs handed to vanished polls to `returns`.
    pub fn new(returns: mpsc::UnboundedSender<Returned>) -> Self {
        Self {
            state: Mutex::default(),
            returns: Some(returns),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this module;
        // the data stays consistent (every operation is a single push/pop),
        // so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers a new (or released) job to the pool's pollers.
    pub fn offer(&self, pool_id: &str, job: QueuedJob) -> Offer {
        let mut state = self.lock();
        let pool = state.pools.entry(pool_id.to_owned()).or_default();
        if let Some(taken) = pool.take_waiter(&job.demands) {
            return Offer::Taken(taken);
        }
        pool.jobs.push_back(job);
        Offer::Queued
    }

    /// The longest-waiting poller that meets `demands`, removed from the
    /// queue, for a job about to be stored as already assigned to it; `None`
    /// when no poller can take such a job (nothing is queued then).
    pub fn take_waiter(&self, pool_id: &str, demands: &BTreeMap<String, String>) -> Option<Taken> {
        self.lock().pools.get_mut(pool_id)?.take_waiter(demands)
    }

    /// Puts a job back at the head of its pool's queue (its claim failed for
    /// a reason other than another agent taking it).
    pub fn requeue_front(&self, pool_id: &str, job: QueuedJob) {
        let mut state = self.lock();
        state
            .pools
            .entry(pool_id.to_owned())
            .or_default()
            .jobs
            .push_front(job);
    }

    /// Takes the oldest queued job the agent can run, or registers the agent
    /// as waiting — atomically, so a job queued meanwhile is never missed.
    pub fn poll(
        &self,
        pool_id: &str,
        agent_id: &str,
        capabilities: Arc<BTreeMap<String, String>>,
    ) -> Found<'_> {
        let mut state = self.lock();
        state.next_waiter += 1;
        let waiter_id = state.next_waiter;
        let pool = state.pools.entry(pool_id.to_owned()).or_default();
        if let Some(position) = pool
            .jobs
            .iter()
            .position(|job| ferry_store::demands_met(&job.demands, &capabilities))
            && let Some(job) = pool.jobs.remove(position)
        {
            return Found::Job(job);
        }
        let (sender, receiver) = oneshot::channel();
        pool.waiters.push_back(Waiter {
            id: waiter_id,
            capabilities,
            agent_id: agent_id.to_owned(),
            sender,
        });
        Found::Waiting(Registration {
            hand_off: self,
            pool_id: pool_id.to_owned(),
            agent_id: agent_id.to_owned(),
            waiter_id,
            receiver,
        })
    }

    /// Ends every waiting poll of an agent (removed or disabled): their
    /// receivers see the sender dropped and re-check the agent.
    pub fn withdraw_agent(&self, agent_id: &str) {
        let mut state = self.lock();
        for pool in state.pools.values_mut() {
            pool.waiters.retain(|waiter| waiter.agent_id != agent_id);
        }
    }

    /// Forgets a job (canceled, or found claimed elsewhere).
    pub fn remove(&self, pool_id: &str, job_id: &str) {
        let mut state = self.lock();
        if let Some(pool) = state.pools.get_mut(pool_id) {
            pool.jobs.retain(|job| job.id != job_id);
        }
    }

    /// Queued jobs and waiting pollers, for metrics and tests.
    pub fn depth(&self, pool_id: &str) -> (usize, usize) {
        let state = self.lock();
        state
            .pools
            .get(pool_id)
            .map_or((0, 0), |pool| (pool.jobs.len(), pool.waiters.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> Arc<BTreeMap<String, String>> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    fn job(id: &str, demands: &[(&str, &str)]) -> QueuedJob {
        QueuedJob {
            id: id.into(),
            demands: caps(demands),
            prepared: None,
        }
    }

    #[test]
    fn a_new_job_goes_to_the_first_waiter_that_meets_its_demands() {
        let hand_off = HandOff::default();
        let Found::Waiting(mut windows) = hand_off.poll("p", "win", caps(&[("os", "windows")]))
        else {
            panic!("nothing is queued");
        };
        let Found::Waiting(_linux) = hand_off.poll("p", "linux", caps(&[("os", "linux")])) else {
            panic!("nothing is queued");
        };
        let Offer::Taken(taken) = hand_off.offer("p", job("j1", &[("os", "linux")])) else {
            panic!("the linux agent waits");
        };
        assert_eq!(taken.agent_id, "linux");
        assert!(windows.receiver.try_recv().is_err());
        assert_eq!(hand_off.depth("p"), (0, 1));
    }

    #[test]
    fn jobs_wait_in_order_until_a_capable_poller_comes() {
        let hand_off = HandOff::default();
        assert!(matches!(
            hand_off.offer("p", job("gpu", &[("gpu", "yes")])),
            Offer::Queued
        ));
        assert!(matches!(
            hand_off.offer("p", job("any1", &[])),
            Offer::Queued
        ));
        assert!(matches!(
            hand_off.offer("p", job("any2", &[])),
            Offer::Queued
        ));
        let Found::Job(first) = hand_off.poll("p", "a", caps(&[])) else {
            panic!("a job is queued");
        };
        assert_eq!(first.id, "any1", "the gpu job is skipped, order kept");
        let Found::Job(gpu) = hand_off.poll("p", "b", caps(&[("gpu", "yes")])) else {
            panic!("a job is queued");
        };
        assert_eq!(gpu.id, "gpu");
        assert_eq!(hand_off.depth("p"), (1, 0));
        assert_eq!(hand_off.depth("other"), (0, 0));
    }

    #[test]
    fn a_withdrawn_or_closed_poller_is_skipped() {
        let hand_off = HandOff::default();
        let registration = hand_off.poll("p", "gone", caps(&[]));
        drop(registration);
        assert_eq!(hand_off.depth("p"), (0, 0));
        let Found::Waiting(closed) = hand_off.poll("p", "closed", caps(&[])) else {
            panic!("nothing is queued");
        };
        let Found::Waiting(_alive) = hand_off.poll("p", "alive", caps(&[])) else {
            panic!("nothing is queued");
        };
        let mut closed = closed;
        closed.receiver.close();
        let Offer::Taken(taken) = hand_off.offer("p", job("j", &[])) else {
            panic!("alive waits");
        };
        assert_eq!(taken.agent_id, "alive");
    }

    #[test]
    fn withdrawing_an_agent_ends_its_polls_only() {
        let hand_off = HandOff::default();
        let Found::Waiting(mut revoked) = hand_off.poll("p", "revoked", caps(&[])) else {
            panic!("nothing is queued");
        };
        let Found::Waiting(mut kept) = hand_off.poll("p", "kept", caps(&[])) else {
            panic!("nothing is queued");
        };
        hand_off.withdraw_agent("revoked");
        assert!(matches!(
            revoked.receiver.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            kept.receiver.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(hand_off.depth("p"), (0, 1));
    }

    #[test]
    fn a_job_handed_to_a_poll_that_vanished_is_returned() {
        let (returns, mut returned) = mpsc::unbounded_channel();
        let hand_off = HandOff::new(returns);
        let Found::Waiting(registration) = hand_off.poll("p", "a", caps(&[])) else {
            panic!("nothing is queued");
        };
        let Offer::Taken(taken) = hand_off.offer("p", job("j", &[])) else {
            panic!("a waits");
        };
        taken.send(job("j", &[])).expect("receiver alive");
        drop(registration);
        let back = returned.try_recv().expect("returned");
        assert_eq!((back.job.id.as_str(), back.agent_id.as_str()), ("j", "a"));
    }
}
