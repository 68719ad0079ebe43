//! The store's public value types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// A job to queue. `spec` is plaintext here; the store encrypts it before
/// writing, and `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct NewJob {
    /// UUID v7 chosen by the caller (time-ordered: the queue is FIFO by id).
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    pub demands: BTreeMap<String, String>,
    pub secret_names: Vec<String>,
    pub step_names: Vec<String>,
    pub spec: Vec<u8>,
    pub timeout_seconds: i64,
    pub queued_at: i64,
}

impl fmt::Debug for NewJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("pool_id", &self.pool_id)
            .field("name", &self.name)
            .field("project", &self.project)
            .field("pipeline", &self.pipeline)
            .field("demands", &self.demands)
            .field("secret_names", &self.secret_names)
            .field("step_names", &self.step_names)
            .field("spec", &format_args!("<{} bytes>", self.spec.len()))
            .field("timeout_seconds", &self.timeout_seconds)
            .field("queued_at", &self.queued_at)
            .finish()
    }
}

/// A job without its spec (read that with `Store::job_spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    pub state: JobState,
    pub demands: BTreeMap<String, String>,
    pub secret_names: Vec<String>,
    pub attempt: u32,
    pub agent_id: Option<String>,
    pub message: String,
    pub timeout_seconds: i64,
    pub queued_at: i64,
    pub assigned_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The last log line stored (0 when there is none).
    pub log_sequence: u64,
    /// By index. Empty where a method says it omits steps.
    pub steps: Vec<JobStep>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    pub index: u32,
    pub name: String,
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Which jobs `Store::list_jobs` returns, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobFilter {
    /// Only jobs in these pools; `None` means every pool, an empty list
    /// means none.
    pub pool_ids: Option<Vec<String>>,
    pub state: Option<JobState>,
    /// Page size; 0 means the default (100), larger than 1000 means 1000.
    pub limit: u64,
    /// The page token from the previous page: only jobs older than this id.
    pub after_id: Option<String>,
}

/// Log lines `first..=last` of a job, as the blob the caller appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub first: u64,
    pub last: u64,
    pub lines: Vec<u8>,
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
        };
        let shown = format!("{job:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<14 bytes>"), "{shown}");
    }
}
