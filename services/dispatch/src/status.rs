//! Agent statuses as dispatch sees them (online on each poll, busy when
//! handed a job), kept in memory and written to the store in batches: a
//! poll or a dispatch never waits on this write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::time::now_micros;

use crate::Dispatcher;

/// An unchanged status is written again this often (`last_seen_at`).
const STATUS_REFRESH: Duration = Duration::from_secs(60);
/// How often changed agent statuses are written, in one transaction.
const STATUS_WRITE_EVERY: Duration = Duration::from_millis(500);

/// An agent's last status and whether the store has it yet.
pub(crate) struct SeenStatus {
    status: ferry_store::AgentStatus,
    job_id: Option<String>,
    /// When it was seen (µs).
    seen_at: i64,
    /// When it was last written to the store, and the sighting written.
    written: Option<(Instant, i64)>,
}

/// An agent not seen for this long is forgotten here (its last status is
/// in the store); a polling agent is seen at least every poll (≤ 2 min).
const FORGET_AFTER: Duration = Duration::from_secs(300);

impl Dispatcher {
    /// Forgets an agent that was removed or disabled.
    pub(crate) fn forget_status(&self, agent_id: &str) {
        self.inner.statuses().remove(agent_id);
    }

    /// Notes that the agent completed `job_id`: online, if it was seen
    /// busy with that job (a poll since may have said more).
    pub(crate) fn job_done(&self, agent_id: &str, job_id: &str) {
        let busy_with_it = self.inner.statuses().get(agent_id).is_some_and(|seen| {
            seen.status == ferry_store::AgentStatus::Busy && seen.job_id.as_deref() == Some(job_id)
        });
        if busy_with_it {
            self.set_agent_status(agent_id, ferry_store::AgentStatus::Online, None);
        }
    }

    /// Notes an agent's status; the status writer records it within
    /// `STATUS_WRITE_EVERY` when it changed, or when the stored one is a
    /// minute old. Polls and dispatches never wait on this write.
    pub(crate) fn set_agent_status(
        &self,
        agent_id: &str,
        status: ferry_store::AgentStatus,
        job_id: Option<&str>,
    ) {
        let mut seen = self.inner.statuses();
        let seen_at = now_micros();
        match seen.get_mut(agent_id) {
            Some(entry) if entry.status == status && entry.job_id.as_deref() == job_id => {
                entry.seen_at = seen_at;
            }
            Some(entry) => {
                entry.status = status;
                entry.job_id = job_id.map(str::to_owned);
                entry.seen_at = seen_at;
                entry.written = None;
            }
            None => {
                seen.insert(
                    agent_id.to_owned(),
                    SeenStatus {
                        status,
                        job_id: job_id.map(str::to_owned),
                        seen_at,
                        written: None,
                    },
                );
            }
        }
    }

    /// Writes the agent statuses noted since the last round, all in one
    /// transaction, every `STATUS_WRITE_EVERY` while the dispatcher lives.
    pub(crate) fn spawn_status_writer(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STATUS_WRITE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let due: Vec<ferry_store::AgentSeen> = {
                    let mut seen = inner.statuses();
                    let now = Instant::now();
                    let forget_before = now_micros() - FORGET_AFTER.as_micros() as i64;
                    // Forget agents gone quiet whose last sighting is stored.
                    seen.retain(|_, entry| {
                        entry.seen_at >= forget_before
                            || entry.written.is_none_or(|(_, at)| at < entry.seen_at)
                    });
                    // Write what changed, and refresh `last_seen_at` of
                    // agents seen since their stored sighting once a minute.
                    seen.iter_mut()
                        .filter(|(_, entry)| match entry.written {
                            None => true,
                            Some((written, sighting)) => {
                                sighting < entry.seen_at && now - written > STATUS_REFRESH
                            }
                        })
                        .map(|(id, entry)| {
                            entry.written = Some((now, entry.seen_at));
                            ferry_store::AgentSeen {
                                id: id.clone(),
                                status: entry.status,
                                current_job_id: entry.job_id.clone(),
                                at: entry.seen_at,
                            }
                        })
                        .collect()
                };
                if let Err(error) = inner.store.record_agent_statuses(&due).await {
                    tracing::warn!(agents = due.len(), error = %error, "could not record agent statuses");
                    let mut seen = inner.statuses();
                    for agent in &due {
                        if let Some(entry) = seen.get_mut(&agent.id) {
                            entry.written = None;
                        }
                    }
                }
            }
        });
    }
}

impl crate::Inner {
    /// The agents' statuses as last seen (a poisoned lock still holds
    /// them: each entry is written whole).
    fn statuses(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SeenStatus>> {
        self.agent_status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
