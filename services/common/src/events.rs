//! Job events that one service raises and another waits on: new log lines
//! (log followers wake up), a job's end (followers finish). In the embedded
//! default every service shares one [`JobEvents`] in memory.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// Lines up to this sequence are stored.
    LogsAppended {
        /// The job.
        job_id: Arc<str>,
        /// The job's log sequence now.
        sequence: u64,
    },
    /// The job reached a final state.
    Finished {
        /// The job.
        job_id: Arc<str>,
    },
}

impl JobEvent {
    /// The job this event is about.
    pub fn job_id(&self) -> &str {
        match self {
            JobEvent::LogsAppended { job_id, .. } | JobEvent::Finished { job_id } => job_id,
        }
    }
}

/// A fan-out of [`JobEvent`]s. Clones share the channel.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<JobEvent>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JobEvents {
    /// A channel buffering up to 4096 events per slow subscriber (a
    /// subscriber that lags further re-reads the store: nothing is lost).
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
    }

    /// Raises an event; nobody listening is fine.
    pub fn publish(&self, event: JobEvent) {
        let _ = self.sender.send(event);
    }

    /// Listens for events raised from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.sender.subscribe()
    }
}
