//! The people's side of jobs: get and list.

use std::collections::HashMap;

use ferry_auth::AdministratorIdentity;
use ferry_proto::v1::{Job, JobState, ListJobsRequest, ListJobsResponse};
use ferry_service::{Error, Result, validate};

use crate::{Dispatcher, convert};

impl Dispatcher {
    /// One job, if the caller administers its pool.
    pub async fn get_job(&self, caller: &AdministratorIdentity, job_id: &str) -> Result<Job> {
        validate::id("job_id", job_id)?;
        let job = self
            .store()
            .job(job_id)
            .await?
            .filter(|job| caller.administers(&job.pool_id))
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
        let pool = self
            .store()
            .pool_by_id(&job.pool_id)
            .await?
            .map(|pool| pool.name)
            .unwrap_or_default();
        convert::job(self.store(), job, &pool, convert::Waiting::Explain).await
    }

    /// Jobs of the pools the caller administers, newest first.
    pub async fn list_jobs(
        &self,
        caller: &AdministratorIdentity,
        request: ListJobsRequest,
    ) -> Result<ListJobsResponse> {
        let pools: HashMap<String, String> = self
            .store()
            .list_pools()
            .await?
            .into_iter()
            .filter(|pool| caller.administers(&pool.id))
            .map(|pool| (pool.id, pool.name))
            .collect();
        let pool_ids = if request.pool.is_empty() {
            pools.keys().cloned().collect()
        } else {
            let id = pools
                .iter()
                .find(|(_, name)| **name == request.pool)
                .map(|(id, _)| id.clone())
                .ok_or_else(|| Error::NotFound(format!("pool {:?} not found", request.pool)))?;
            vec![id]
        };
        if !request.page_token.is_empty() {
            validate::id("page_token", &request.page_token)?;
        }
        let state = match JobState::try_from(request.state).unwrap_or_default() {
            JobState::Unspecified => None,
            other => Some(convert::store_job_state(other)),
        };
        let limit = match request.page_size {
            0 => 50,
            size => u64::from(size.min(1000)),
        };
        let (jobs, next) = self
            .store()
            .list_jobs(ferry_store::JobFilter {
                pool_ids: Some(pool_ids),
                state,
                limit,
                after_id: (!request.page_token.is_empty()).then_some(request.page_token),
            })
            .await?;
        let mut listed = Vec::with_capacity(jobs.len());
        for job in jobs {
            let pool = pools.get(&job.pool_id).cloned().unwrap_or_default();
            listed.push(convert::job(self.store(), job, &pool, convert::Waiting::Stored).await?);
        }
        Ok(ListJobsResponse {
            jobs: listed,
            next_page_token: next.unwrap_or_default(),
        })
    }
}
