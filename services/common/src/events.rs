//! Events one service raises and others wait on: a job queued or claimed
//! (dispatch replicas keep their hand-off in step), new log lines (log
//! followers wake up), a job's end (followers finish), a cancellation (the
//! agent's log stream is told at once), an agent's removal (its waiting long
//! polls end at once).
//!
//! In the embedded default every service shares one in-memory [`Events`].
//! In the mesh, [`Events::shared`] carries them between processes with
//! PostgreSQL's `NOTIFY`/`LISTEN`: every process, the publisher included,
//! receives each event once.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// The PostgreSQL channel events travel on.
pub const CHANNEL: &str = "ferry_events";

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A job entered the queue (new, or requeued) on some dispatch replica.
    JobQueued {
        /// The job.
        job_id: Arc<str>,
        /// Its pool.
        pool_id: Arc<str>,
        /// The [`Events::origin`] of the replica that queued it.
        origin: u64,
    },
    /// A job was handed to an agent.
    JobClaimed {
        /// The job.
        job_id: Arc<str>,
        /// Its pool.
        pool_id: Arc<str>,
        /// The [`Events::origin`] of the replica that handed it out.
        origin: u64,
    },
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
        /// The agent that completed it, when its agent did (it is idle
        /// now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<Arc<str>>,
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
    /// An administrator was added or removed, or administers other pools
    /// now: cached PAT lookups are stale.
    AdministratorsChanged,
    /// Events may have been lost (the listener reconnected): re-read state.
    Resync,
}

impl Event {
    /// The job this event is about, if it is about a job.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Event::JobQueued { job_id, .. }
            | Event::JobClaimed { job_id, .. }
            | Event::LogsAppended { job_id, .. }
            | Event::JobFinished { job_id, .. }
            | Event::CancelRequested { job_id } => Some(job_id),
            Event::AgentRevoked { .. } | Event::AdministratorsChanged | Event::Resync => None,
        }
    }
}

/// A fan-out of [`Event`]s. Clones share the channel.
#[derive(Debug, Clone)]
pub struct Events {
    local: broadcast::Sender<Event>,
    /// In the mesh: events to NOTIFY (delivered back through LISTEN).
    remote: Option<mpsc::UnboundedSender<Event>>,
    origin: u64,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

/// Most events taken for one round of notifications.
const NOTIFY_BATCH: usize = 256;
/// Most bytes of events in one notification (PostgreSQL allows 8000).
const NOTIFY_PAYLOAD: usize = 7_000;

/// Events as notification payloads: JSON arrays of as many events as fit
/// in [`NOTIFY_PAYLOAD`] (an event too large to share one goes alone).
fn payloads(events: &[Event]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::from("[");
    for event in events {
        let Ok(json) = serde_json::to_string(event) else {
            continue;
        };
        if current.len() > 1 && current.len() + json.len() + 2 > NOTIFY_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&json);
    }
    if current.len() > 1 {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

/// The events of a notification: an array of them, or one alone (as a
/// replica of an earlier version sends them). An event this version cannot
/// read (a newer replica's) is skipped with a warning; the others stand.
fn parse_payload(payload: &str) -> serde_json::Result<Vec<Event>> {
    if !payload.trim_start().starts_with('[') {
        return serde_json::from_str(payload).map(|event| vec![event]);
    }
    let values: Vec<serde_json::Value> = serde_json::from_str(payload)?;
    Ok(values
        .into_iter()
        .filter_map(|value| match serde_json::from_value(value) {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(error = %error, "unreadable event");
                None
            }
        })
        .collect())
}

/// A process-unique id: 8 bytes of a random (v4) UUID.
fn random_origin() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

impl Events {
    /// Events within this process (the embedded default). A slow subscriber
    /// that lags more than 4096 events gets `Lagged` and re-reads the store.
    pub fn new() -> Self {
        let (local, _) = broadcast::channel(4096);
        Self {
            local,
            remote: None,
            origin: random_origin(),
        }
    }

    /// Events shared by every process on this PostgreSQL database.
    pub async fn shared(store: &Store) -> crate::Result<Self> {
        let mut events = Self::new();
        let mut listener = store.listen(CHANNEL).await?;
        let (remote, mut outgoing) = mpsc::unbounded_channel::<Event>();
        events.remote = Some(remote);

        let notifier = store.clone();
        tokio::spawn(async move {
            // Everything raised while the last notification was on its way
            // goes in the next: one round trip for many events.
            let mut pending = Vec::with_capacity(NOTIFY_BATCH);
            while outgoing.recv_many(&mut pending, NOTIFY_BATCH).await > 0 {
                for payload in payloads(&pending) {
                    if let Err(error) = notifier.notify(CHANNEL, &payload).await {
                        tracing::warn!(error = %error, "could not notify other replicas");
                    }
                }
                pending.clear();
            }
        });

        let local = events.local.clone();
        let relisten = store.clone();
        tokio::spawn(async move {
            loop {
                match listener.next().await {
                    Ok(Some(payload)) => match parse_payload(&payload) {
                        Ok(received) => {
                            for event in received {
                                let _ = local.send(event);
                            }
                        }
                        Err(error) => tracing::warn!(error = %error, "unreadable event"),
                    },
                    Ok(None) => {
                        let _ = local.send(Event::Resync);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "event listener failed; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match relisten.listen(CHANNEL).await {
                            Ok(fresh) => {
                                listener = fresh;
                                let _ = local.send(Event::Resync);
                            }
                            Err(error) => tracing::warn!(error = %error, "cannot listen yet"),
                        }
                    }
                }
            }
        });
        Ok(events)
    }

    /// Whether events cross processes (the mesh) rather than stay in this one.
    pub fn is_shared(&self) -> bool {
        self.remote.is_some()
    }

    /// This process's id in [`Event::JobQueued`] and [`Event::JobClaimed`].
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Raises an event; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        match &self.remote {
            Some(remote) => {
                let _ = remote.send(event);
            }
            None => {
                let _ = self.local.send(event);
            }
        }
    }

    /// Listens for events raised from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_their_wire_form() {
        let events = [
            Event::JobQueued {
                job_id: "j".into(),
                pool_id: "p".into(),
                origin: 7,
            },
            Event::LogsAppended {
                job_id: "j".into(),
                sequence: 9,
            },
            Event::AgentRevoked {
                agent_id: "a".into(),
            },
            Event::AdministratorsChanged,
            Event::Resync,
        ];
        for event in events {
            let wire = serde_json::to_string(&event).expect("serialize");
            assert_eq!(serde_json::from_str::<Event>(&wire).expect("parse"), event);
        }
    }

    #[test]
    fn many_events_share_notifications_that_fit_and_read_back_in_order() {
        let events: Vec<Event> = (0..500)
            .map(|sequence| Event::LogsAppended {
                job_id: format!("0190f0a0-dddd-7000-8000-{sequence:012}").into(),
                sequence,
            })
            .collect();
        let sent = payloads(&events);
        assert!(sent.len() > 1 && sent.len() < 20, "{}", sent.len());
        assert!(sent.iter().all(|payload| payload.len() <= NOTIFY_PAYLOAD));
        let read: Vec<Event> = sent
            .iter()
            .flat_map(|payload| parse_payload(payload).expect("parse"))
            .collect();
        assert_eq!(read, events);
        // One unreadable event (a newer replica's) costs only itself.
        let mixed = format!(
            "[{},{{\"NewKind\":{{}}}},{}]",
            serde_json::to_string(&events[0]).expect("serialize"),
            serde_json::to_string(&events[1]).expect("serialize")
        );
        assert_eq!(
            parse_payload(&mixed).expect("parse"),
            [events[0].clone(), events[1].clone()]
        );
        // A single event, as an earlier version sends it, still reads.
        let alone = serde_json::to_string(&events[3]).expect("serialize");
        assert_eq!(parse_payload(&alone).expect("parse"), [events[3].clone()]);
        assert!(payloads(&[]).is_empty());
    }

    #[tokio::test]
    async fn local_events_reach_every_subscriber() {
        let events = Events::new();
        let mut first = events.subscribe();
        let mut second = events.subscribe();
        events.publish(Event::JobFinished {
            job_id: "j".into(),
            agent_id: None,
        });
        assert_eq!(first.recv().await.expect("event").job_id(), Some("j"));
        assert_eq!(second.recv().await.expect("event").job_id(), Some("j"));
        assert!(!events.is_shared());
    }
}
