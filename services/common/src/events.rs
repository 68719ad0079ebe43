//! Events one service raises and another waits on: new log lines (log
//! followers wake up), a job's end (followers finish), a cancellation (the
//! agent's log stream is told at once), an agent's removal (its waiting long
//! polls end at once). In the embedded default every service shares one
//! [`Events`] in memory.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Lines up to this sequence are stored.
    LogsAppended {
        /// The job.
        job_id: Arc<str>,
        /// The job's log sequence now.
        sequence: u64,
    },
    /// The job reached a final state.
    JobFinished {
        /// The job.
        job_id: Arc<str>,
    },
    /// Someone asked to cancel the running job.
    CancelRequested {
        /// The job.
        job_id: Arc<str>,
    },
    /// The agent was removed or disabled: its listener tokens are void.
    AgentRevoked {
        /// The agent.
        agent_id: Arc<str>,
    },
}

impl Event {
    /// The job this event is about, if it is about a job.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Event::LogsAppended { job_id, .. }
            | Event::JobFinished { job_id }
            | Event::CancelRequested { job_id } => Some(job_id),
            Event::AgentRevoked { .. } => None,
        }
    }
}

/// A fan-out of [`Event`]s. Clones share the channel.
#[derive(Debug, Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A channel buffering up to 4096 events per slow subscriber (a
    /// subscriber that lags further re-reads the store: nothing is lost).
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
    }

    /// Raises an event; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    /// Listens for events raised from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
