//! Jobs just handed to an agent, remembered so that the agent's first log
//! stream opens without a store read.
//!
//! Opening a stream checks who holds the job and how far its log goes; right
//! after a hand-out, dispatch knows both. It leaves them here, and the first
//! stream for the job takes them (once). Every store write that can change
//! what a stream checks at open (a cancel request, a release, a completion,
//! a reaper's end or requeue) drops the job's entry before it writes, so a
//! stream that opens after it reads the store as before. What the entry
//! could still get wrong is settled where it always was: the stream's
//! writes are guarded by the holder and the log sequence.
//!
//! SQLite only, where this process is the store's only writer. On
//! PostgreSQL another replica may change the job, and streams read.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::types::LogHolder;

/// An entry older than this is not used: the agent did not open its stream.
const KEEP_FOR: Duration = Duration::from_secs(60);
/// Entries kept at most; when full, stale ones go, and then new ones are
/// not kept (their streams read).
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub(crate) struct HandedOut {
    entries: Mutex<HashMap<String, (LogHolder, Instant)>>,
}

impl HandedOut {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (LogHolder, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn insert(&self, job_id: &str, holder: LogHolder) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < KEEP_FOR);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(job_id.to_owned(), (holder, Instant::now()));
    }

    /// The entry of `job_id`, removed; `None` when there is none or it is
    /// stale.
    pub(crate) fn take(&self, job_id: &str) -> Option<LogHolder> {
        self.lock()
            .remove(job_id)
            .filter(|(_, at)| at.elapsed() < KEEP_FOR)
            .map(|(holder, _)| holder)
    }

    pub(crate) fn forget(&self, job_id: &str) {
        self.lock().remove(job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::JobState;

    fn holder(attempt: u32) -> LogHolder {
        LogHolder {
            state: JobState::Assigned,
            agent_id: Some("agent".to_owned()),
            attempt,
            log_sequence: 0,
            cancel_requested: false,
            steps: 1,
        }
    }

    #[test]
    fn an_entry_is_taken_once() {
        let handed = HandedOut::default();
        handed.insert("job", holder(2));
        assert_eq!(handed.take("job"), Some(holder(2)));
        assert_eq!(handed.take("job"), None);
    }

    #[test]
    fn a_forgotten_entry_is_not_taken() {
        let handed = HandedOut::default();
        handed.insert("job", holder(1));
        handed.forget("job");
        assert_eq!(handed.take("job"), None);
    }

    #[test]
    fn a_full_map_keeps_what_it_has() {
        let handed = HandedOut::default();
        for i in 0..CAPACITY {
            handed.insert(&i.to_string(), holder(1));
        }
        handed.insert("late", holder(1));
        assert_eq!(handed.take("late"), None);
        assert_eq!(handed.take("0"), Some(holder(1)));
    }
}
