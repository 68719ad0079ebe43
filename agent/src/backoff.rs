//! Jittered exponential backoff for reconnecting to the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff: `initial`, doubling up to `max`, each delay drawn
/// uniformly within ±25% of the nominal one so that many agents restarted
/// together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    nominal: Duration,
    state: u64,
}

/// The jitter, as a fraction of the nominal delay, either way.
pub const JITTER: f64 = 0.25;

impl Default for Backoff {
    /// 0.5 s doubling to 30 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        // Truncation is fine: this only seeds the jitter.
        let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Backoff {
            initial,
            max: max.max(initial),
            nominal: initial,
            state: seed,
        }
    }

    /// The next delay to wait, then doubles the nominal delay.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(self.max);
        // A factor uniformly in [1 - JITTER, 1 + JITTER].
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        nominal.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.nominal = self.initial;
    }

    /// SplitMix64: plenty for jitter, and needs no extra dependency.
    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `duration` as seconds with one decimal, for log lines.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(delay: Duration, nominal: Duration) -> bool {
        delay >= nominal.mul_f64(1.0 - JITTER) && delay <= nominal.mul_f64(1.0 + JITTER)
    }

    #[test]
    fn doubles_from_half_a_second_to_thirty_seconds_with_bounded_jitter() {
        let mut backoff = Backoff::default();
        let mut nominal = Duration::from_millis(500);
        for attempt in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                within(delay, nominal),
                "attempt {attempt}: {delay:?} not within 25% of {nominal:?}"
            );
            nominal = (nominal * 2).min(Duration::from_secs(30));
        }
        assert!(backoff.next_delay() <= Duration::from_millis(37_500));
        assert!(backoff.next_delay() >= Duration::from_millis(22_500));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(within(backoff.next_delay(), Duration::from_millis(500)));
    }

    #[test]
    fn jitter_actually_varies() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
        let mean = delays.iter().sum::<Duration>().as_secs_f64() / delays.len() as f64;
        assert!((0.9..1.1).contains(&mean), "mean {mean}");
    }

    #[test]
    fn formats_seconds_with_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(1234)), "1.2 s");
    }
}
