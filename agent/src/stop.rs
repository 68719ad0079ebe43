//! Why a running job is being stopped early, shared by everything that can
//! stop it (the log stream, the lease renewer, the job timer, the agent's
//! shutdown) and everything that must react (the step runner, the source
//! download, the uploads).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::seconds;

/// Why a job stops before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Canceled (by the server, or by a second SIGINT/SIGTERM to the agent):
    /// the job completes as CANCELED. The reason is a whole phrase ("the job
    /// was canceled on the server").
    Canceled(String),
    /// The job ran past its timeout: it completes as FAILED.
    TimedOut(Duration),
    /// The lease is gone: the job is not ours any more and is not completed.
    LeaseLost(String),
}

impl Stop {
    /// A short description, used for log lines and the job's message.
    pub fn describe(&self) -> String {
        match self {
            Stop::Canceled(reason) => reason.clone(),
            Stop::TimedOut(timeout) => format!("the job timed out after {}", seconds(*timeout)),
            Stop::LeaseLost(reason) => format!("the job's lease was lost: {reason}"),
        }
    }

    /// Whether test results and artifacts are still uploaded after it.
    pub fn uploads_follow(&self) -> bool {
        matches!(self, Stop::TimedOut(_))
    }
}

/// The stop switch of one job: the first reason wins, except that a lost
/// lease overrides any other (the job can no longer be reported).
#[derive(Debug, Clone)]
pub struct StopSignal {
    sender: Arc<watch::Sender<Option<Stop>>>,
}

impl Default for StopSignal {
    fn default() -> StopSignal {
        StopSignal::new()
    }
}

impl StopSignal {
    /// A switch that is not set.
    pub fn new() -> StopSignal {
        StopSignal {
            sender: Arc::new(watch::channel(None).0),
        }
    }

    /// Sets the reason; returns whether it took effect.
    pub fn trigger(&self, stop: Stop) -> bool {
        self.sender.send_if_modified(|current| {
            let replace = match (&current, &stop) {
                (None, _) => true,
                (Some(Stop::LeaseLost(_)), _) => false,
                (Some(_), Stop::LeaseLost(_)) => true,
                (Some(_), _) => false,
            };
            if replace {
                *current = Some(stop);
            }
            replace
        })
    }

    /// The reason, once set.
    pub fn get(&self) -> Option<Stop> {
        self.sender.borrow().clone()
    }

    /// Whether a reason is set.
    pub fn is_set(&self) -> bool {
        self.sender.borrow().is_some()
    }

    /// Whether the lease was lost.
    pub fn lease_lost(&self) -> bool {
        matches!(*self.sender.borrow(), Some(Stop::LeaseLost(_)))
    }

    /// A receiver for [`StopSignal::wait`]-like use in `select!`.
    pub fn subscribe(&self) -> watch::Receiver<Option<Stop>> {
        self.sender.subscribe()
    }

    /// Resolves once a reason is set (at once if it already is).
    pub async fn wait(&self) -> Stop {
        let mut receiver = self.sender.subscribe();
        loop {
            if let Some(stop) = receiver.borrow_and_update().clone() {
                return stop;
            }
            if receiver.changed().await.is_err() {
                // The sender lives in self, so this cannot happen; never resolve.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_but_a_lost_lease_overrides() {
        let signal = StopSignal::new();
        assert!(!signal.is_set());
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait().await }
        });
        assert!(signal.trigger(Stop::Canceled("by alice".into())));
        assert!(!signal.trigger(Stop::TimedOut(Duration::from_secs(1))));
        assert_eq!(
            waiter.await.expect("waiter"),
            Stop::Canceled("by alice".into())
        );
        assert!(signal.trigger(Stop::LeaseLost("fenced".into())));
        assert!(signal.lease_lost());
        assert!(!signal.trigger(Stop::Canceled("again".into())));
        assert_eq!(
            Stop::TimedOut(Duration::from_millis(1500)).describe(),
            "the job timed out after 1.5 s"
        );
        assert!(Stop::TimedOut(Duration::ZERO).uploads_follow());
        assert!(!Stop::Canceled(String::new()).uploads_follow());
    }
}
