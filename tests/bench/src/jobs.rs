//! The jobs a run queues, and the check that every one of them ended exactly
//! once: each id opened by one agent once, completed once, and the server
//! listing each as succeeded, none missing.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use ferry_client::Authorized;
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::{
    GetJobRequest, Job, JobSpec, JobState, ListJobsRequest, QueueJobRequest, StepSpec,
};
use futures::{StreamExt as _, TryStreamExt as _};

use crate::agent::{RUN_LABEL, with_timeout};
use crate::server::Target;

/// The secret every logs job carries (its value is per run).
pub const SECRET_NAME: &str = "BENCH_SECRET";

/// A one-step job for this run's agents. `secret` adds one secret.
pub fn spec(pool: &str, run_label: &str, name: &str, secret: Option<&str>) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        project: "ferry-bench".to_owned(),
        pipeline: name.to_owned(),
        pool: pool.to_owned(),
        demands: [(RUN_LABEL.to_owned(), run_label.to_owned())]
            .into_iter()
            .collect(),
        secrets: secret
            .map(|value| (SECRET_NAME.to_owned(), value.to_owned()))
            .into_iter()
            .collect(),
        steps: vec![StepSpec {
            name: "empty".to_owned(),
            script: "true".to_owned(),
            ..StepSpec::default()
        }],
        ..JobSpec::default()
    }
}

/// The owner's job client on a connection of its own.
pub async fn client(target: &Target) -> anyhow::Result<JobServiceClient<Authorized>> {
    let channel = target.address.connect().await?;
    Ok(ferry_client::jobs(channel, target.owner.clone()))
}

/// QueueJob; returns the job id.
pub async fn queue(
    client: &mut JobServiceClient<Authorized>,
    spec: JobSpec,
) -> anyhow::Result<String> {
    let job = client
        .queue_job(with_timeout(
            QueueJobRequest { spec: Some(spec) },
            std::time::Duration::from_secs(60),
        ))
        .await
        .context("QueueJob")?
        .into_inner()
        .job
        .context("QueueJob answered no job")?;
    Ok(job.id)
}

/// What the agents and queueing clients saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids QueueJob returned.
    pub queued: Vec<String>,
    /// Times each id was opened by an agent.
    pub opened: HashMap<String, u32>,
    /// Times each id was completed (the log stream's end, or CompleteJob).
    pub completed: HashMap<String, u32>,
}

impl Ledger {
    /// Every queued job opened once and completed once, and nothing else.
    pub fn check(&self) -> anyhow::Result<()> {
        let queued: HashSet<&String> = self.queued.iter().collect();
        if queued.len() != self.queued.len() {
            bail!("QueueJob returned the same id twice");
        }
        for (what, counts) in [("opened", &self.opened), ("completed", &self.completed)] {
            let missing = queued
                .iter()
                .filter(|id| !counts.contains_key(**id))
                .count();
            let twice = counts.values().filter(|count| **count > 1).count();
            let foreign = counts.keys().filter(|id| !queued.contains(id)).count();
            if missing + twice + foreign > 0 {
                bail!(
                    "of {} queued jobs, {missing} were never {what}, {twice} were {what} more than once, \
                     and {foreign} {what} jobs were not queued by this run",
                    queued.len()
                );
            }
        }
        Ok(())
    }
}

/// Lists the pool's jobs on the server and checks each queued id appears
/// exactly once, as succeeded.
pub async fn check_listing(target: &Target, ids: &[String]) -> anyhow::Result<()> {
    let mut client = client(target).await?;
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut seen: HashMap<String, i32> = HashMap::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .list_jobs(with_timeout(
                ListJobsRequest {
                    pool: target.pool.clone(),
                    state: JobState::Unspecified as i32,
                    page_size: 1000,
                    page_token: page_token.clone(),
                },
                std::time::Duration::from_secs(60),
            ))
            .await
            .context("ListJobs")?
            .into_inner();
        for job in response.jobs {
            if wanted.contains(job.id.as_str()) && seen.insert(job.id.clone(), job.state).is_some()
            {
                bail!("ListJobs listed job {} twice", job.id);
            }
        }
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    let missing = wanted.iter().filter(|id| !seen.contains_key(**id)).count();
    let unfinished = seen
        .values()
        .filter(|state| **state != JobState::Succeeded as i32)
        .count();
    if missing + unfinished > 0 {
        bail!(
            "ListJobs: of {} jobs, {missing} are missing and {unfinished} did not succeed",
            wanted.len()
        );
    }
    Ok(())
}

/// GetJob for each id.
pub async fn get_all(target: &Target, ids: &[String]) -> anyhow::Result<Vec<Job>> {
    let client = client(target).await?;
    futures::stream::iter(ids)
        .map(|id| {
            let mut client = client.clone();
            async move {
                client
                    .get_job(GetJobRequest { job_id: id.clone() })
                    .await
                    .with_context(|| format!("GetJob {id}"))?
                    .into_inner()
                    .job
                    .with_context(|| format!("GetJob {id} answered no job"))
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_finds_missing_doubled_and_foreign_jobs() {
        let mut ledger = Ledger {
            queued: vec!["a".into(), "b".into()],
            ..Ledger::default()
        };
        for id in ["a", "b"] {
            ledger.opened.insert(id.into(), 1);
            ledger.completed.insert(id.into(), 1);
        }
        assert!(ledger.check().is_ok());
        ledger.completed.insert("a".into(), 2);
        assert!(ledger.check().is_err());
        ledger.completed.insert("a".into(), 1);
        ledger.opened.insert("c".into(), 1);
        assert!(ledger.check().is_err());
        ledger.opened.remove("c");
        ledger.opened.remove("b");
        assert!(ledger.check().is_err());
    }

    #[test]
    fn jobs_demand_the_run_label_and_carry_the_secret() {
        let job = spec("default", "run-1", "bench", Some("s3cr3t"));
        assert_eq!(
            job.demands.get(RUN_LABEL).map(String::as_str),
            Some("run-1")
        );
        assert_eq!(
            job.secrets.get(SECRET_NAME).map(String::as_str),
            Some("s3cr3t")
        );
        assert_eq!(job.steps.len(), 1);
    }
}
