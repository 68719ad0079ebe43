//! The store's public value types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod job;
mod resource;

pub(crate) use job::DEFAULT_MAX_ATTEMPTS;
pub use job::{
    CancelOutcome, Holder, Job, JobEnd, JobFilter, JobStep, LeaseRenewal, LogBatch, LogHolder,
    NewJob, NewLogBatch, ReapOutcome, Reaped, StepReport,
};
pub use resource::{Artifact, Source, TestSummary};

/// A stored state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseStateError {
    kind: &'static str,
    value: String,
}

/// Declares a state enum stored as lowercase text.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseStateError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseStateError { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Whether an agent is connected and whether it is running a job.
    AgentStatus, "agent status", {
        /// Not connected.
        Offline => "offline",
        /// Connected and idle.
        Online => "online",
        /// Connected and running a job.
        Busy => "busy",
    }
);

text_enum!(
    /// Where a job is in its life.
    JobState, "job state", {
        /// Waiting for an agent.
        Queued => "queued",
        /// Claimed by an agent, not started yet.
        Assigned => "assigned",
        /// A step has started.
        Running => "running",
        /// Finished, every step succeeded.
        Succeeded => "succeeded",
        /// Finished with a failure.
        Failed => "failed",
        /// Stopped before it finished.
        Canceled => "canceled",
    }
);

text_enum!(
    /// Where a step of a job is in its life.
    StepState, "step state", {
        /// Not started yet.
        Pending => "pending",
        /// Started.
        Running => "running",
        /// Exited successfully.
        Succeeded => "succeeded",
        /// Exited unsuccessfully (or could not start).
        Failed => "failed",
        /// Never ran because the job ended first.
        Skipped => "skipped",
        /// Stopped while running.
        Canceled => "canceled",
    }
);

impl JobState {
    /// True for the final states: succeeded, failed, canceled.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// True while an agent holds the job: assigned or running.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Assigned | Self::Running)
    }
}

impl StepState {
    /// True for the final states: succeeded, failed, skipped, canceled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Canceled
        )
    }
}

/// A pool of agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// An administrator and the pools they manage (sorted; owners manage all
/// pools regardless of this list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Administrator {
    pub id: String,
    pub name: String,
    pub owner: bool,
    pub pool_ids: Vec<String>,
    pub created_at: i64,
}

/// An agent to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub pool_id: String,
    pub name: String,
    pub public_key: Vec<u8>,
    pub capabilities: BTreeMap<String, String>,
}

/// An agent's status as last seen by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSeen {
    pub id: String,
    pub status: AgentStatus,
    pub current_job_id: Option<String>,
    /// When it was seen (µs).
    pub at: i64,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub public_key: Vec<u8>,
    pub capabilities: BTreeMap<String, String>,
    pub status: AgentStatus,
    pub current_job_id: Option<String>,
    /// A disabled agent gets no listener token and no job.
    pub disabled: bool,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// True when every demand key exists in `capabilities` with the same value.
pub fn demands_met(
    demands: &BTreeMap<String, String>,
    capabilities: &BTreeMap<String, String>,
) -> bool {
    demands
        .iter()
        .all(|(key, value)| capabilities.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn demands_met_cases() {
        let caps = map(&[("os", "linux"), ("arch", "x86_64"), ("gpu", "")]);
        assert!(demands_met(&map(&[]), &caps));
        assert!(demands_met(&map(&[]), &map(&[])));
        assert!(demands_met(&map(&[("os", "linux")]), &caps));
        assert!(demands_met(
            &map(&[("os", "linux"), ("arch", "x86_64")]),
            &caps
        ));
        assert!(demands_met(&map(&[("gpu", "")]), &caps));
        assert!(!demands_met(&map(&[("os", "macos")]), &caps));
        assert!(!demands_met(&map(&[("os", "linux"), ("kvm", "1")]), &caps));
        assert!(!demands_met(&map(&[("os", "Linux")]), &caps));
        assert!(!demands_met(&map(&[("os", "linux")]), &map(&[])));
    }

    #[test]
    fn states_round_trip() {
        for s in AgentStatus::ALL {
            assert_eq!(s.as_str().parse::<AgentStatus>(), Ok(*s));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
            assert_eq!(s.to_string(), s.as_str());
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>(), Ok(*s));
        }
        assert!("Queued".parse::<JobState>().is_err());
        assert!(JobState::Canceled.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(StepState::Skipped.is_terminal());
        assert!(!StepState::Pending.is_terminal());
    }

    #[test]
    fn new_job_debug_hides_spec() {
        let job = NewJob {
            id: "j".into(),
            pool_id: "p".into(),
            name: "n".into(),
            project: "x".into(),
            pipeline: "y".into(),
            demands: BTreeMap::new(),
            secret_names: vec![],
            step_names: vec![],
            spec: b"hunter2-secret".to_vec(),
            timeout_seconds: 1,
            queued_at: 0,
            source_id: None,
            max_attempts: 0,
        };
        let shown = format!("{job:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<14 bytes>"), "{shown}");
    }
}
