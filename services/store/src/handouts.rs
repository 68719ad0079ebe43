//! Jobs just handed to an agent, remembered so that the agent's first log
//! stream opens without a store read.
//!
//! Opening a stream checks who holds the job and how far its log goes; right
//! after a hand-out, dispatch knows both. The store reserves a slot for the
//! job before the write that assigns it, dispatch fills the slot once it
//! has sealed the job, and the first stream for the job takes it (once).
//! Every store write that can change what a stream checks at open (a cancel
//! request, a release, a completion, a reaper's end or requeue) drops the
//! job's slot *after* it committed, and whoever made the change publishes
//! its event after that. So a slot filled after such a change is never
//! there to take (the change dropped the reservation), and a stream that
//! took a slot before the change was dropped had set its cancel watch
//! before the change's event went out. What a slot could still get wrong is
//! settled where it always was: the stream's writes are guarded by holder
//! and log sequence.
//!
//! Only where dispatch and logs share the process and the store is SQLite,
//! of which this process is then the only writer (`ferryd all`); on
//! PostgreSQL another replica may change the job, and streams read.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::types::LogHolder;

/// A slot older than this is not used: the agent did not open its stream.
const KEEP_FOR: Duration = Duration::from_secs(60);
/// Slots kept at most; when full, the map starts over (the streams of the
/// jobs dropped read instead).
const CAPACITY: usize = 20_000;

enum Slot {
    /// The job is being assigned; dispatch has not filled it yet.
    Reserved,
    Filled(LogHolder),
}

#[derive(Default)]
pub(crate) struct HandedOut {
    slots: Mutex<HashMap<String, (Slot, Instant)>>,
}

impl HandedOut {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Slot, Instant)>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Before the write that assigns `job_id`.
    pub(crate) fn reserve(&self, job_id: &str) {
        let mut slots = self.lock();
        if slots.len() >= CAPACITY {
            slots.clear();
        }
        slots.insert(job_id.to_owned(), (Slot::Reserved, Instant::now()));
    }

    /// Fills the slot reserved for `job_id`, if it is still there.
    pub(crate) fn fill(&self, job_id: &str, holder: LogHolder) {
        if let Some((slot @ Slot::Reserved, at)) = self.lock().get_mut(job_id) {
            *slot = Slot::Filled(holder);
            *at = Instant::now();
        }
    }

    /// The filled slot of `job_id`, removed; `None` when there is none or
    /// it is stale.
    pub(crate) fn take(&self, job_id: &str) -> Option<LogHolder> {
        match self.lock().remove(job_id) {
            Some((Slot::Filled(holder), at)) if at.elapsed() < KEEP_FOR => Some(holder),
            _ => None,
        }
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
    fn a_filled_slot_is_taken_once() {
        let handed = HandedOut::default();
        handed.reserve("job");
        assert_eq!(handed.take("job"), None, "reserved, not filled");
        handed.reserve("job");
        handed.fill("job", holder(2));
        assert_eq!(handed.take("job"), Some(holder(2)));
        assert_eq!(handed.take("job"), None);
    }

    #[test]
    fn only_a_reserved_slot_is_filled() {
        let handed = HandedOut::default();
        handed.fill("job", holder(1));
        assert_eq!(handed.take("job"), None, "never reserved");
        handed.reserve("job");
        handed.forget("job");
        handed.fill("job", holder(1));
        assert_eq!(handed.take("job"), None, "forgotten before the fill");
        handed.reserve("job");
        handed.fill("job", holder(1));
        handed.forget("job");
        assert_eq!(handed.take("job"), None, "forgotten after the fill");
    }

    #[test]
    fn a_full_map_starts_over() {
        let handed = HandedOut::default();
        for i in 0..CAPACITY {
            handed.reserve(&i.to_string());
        }
        handed.reserve("late");
        handed.fill("late", holder(1));
        handed.fill("0", holder(1));
        assert_eq!(handed.take("late"), Some(holder(1)));
        assert_eq!(handed.take("0"), None, "dropped when the map was full");
    }
}
