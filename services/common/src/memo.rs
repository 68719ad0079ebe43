//! A small cache of values read from the store that other processes may
//! revoke: entries live for a fixed time, can be forgotten one by one or all
//! at once, and a read that started before a revocation is not cached (it
//! may hold what was just revoked).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Values by key, each trusted for `ttl`; starts over when `capacity` is
/// reached.
#[derive(Debug)]
pub struct Memo<V> {
    state: Mutex<State<V>>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug)]
struct State<V> {
    entries: HashMap<String, (V, Instant)>,
    /// Bumped by every revocation.
    revocations: u64,
}

/// Taken before reading the value's source; [`Memo::insert`] keeps the value
/// only if nothing was revoked since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl<V: Clone> Memo<V> {
    /// An empty memo.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                revocations: 0,
            }),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value under `key`, if it is younger than the ttl.
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock()
            .entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
    }

    /// Take one before reading the value from its source.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().revocations)
    }

    /// Keeps `value` under `key`, unless something was revoked since
    /// `ticket` was taken.
    pub fn insert(&self, ticket: Ticket, key: String, value: V) {
        let mut state = self.lock();
        if state.revocations != ticket.0 {
            return;
        }
        if state.entries.len() >= self.capacity {
            state.entries.clear();
        }
        state.entries.insert(key, (value, Instant::now()));
    }

    /// Revokes one value.
    pub fn forget(&self, key: &str) {
        let mut state = self.lock();
        state.revocations += 1;
        state.entries.remove(key);
    }

    /// Revokes every value.
    pub fn forget_all(&self) {
        let mut state = self.lock();
        state.revocations += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_are_revoked_and_a_read_racing_a_revocation_is_not_kept() {
        let memo = Memo::new(Duration::from_secs(60), 2);
        let ticket = memo.ticket();
        memo.insert(ticket, "a".into(), 1);
        assert_eq!(memo.get("a"), Some(1));
        assert_eq!(memo.get("b"), None);

        let before = memo.ticket();
        memo.forget("a");
        assert_eq!(memo.get("a"), None);
        memo.insert(before, "a".into(), 1);
        assert_eq!(memo.get("a"), None, "read before the revocation");

        let ticket = memo.ticket();
        memo.insert(ticket, "a".into(), 2);
        memo.insert(ticket, "b".into(), 3);
        memo.insert(ticket, "c".into(), 4); // full: starts over
        assert_eq!((memo.get("a"), memo.get("c")), (None, Some(4)));
        memo.forget_all();
        assert_eq!(memo.get("c"), None);

        let expired = Memo::new(Duration::ZERO, 8);
        let ticket = expired.ticket();
        expired.insert(ticket, "a".into(), 1);
        assert_eq!(expired.get("a"), None);
    }
}
