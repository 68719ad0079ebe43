//! The tonic adapter: unwraps the request, calls [`Dispatcher`], maps errors.

use ferry_auth::{Requirement, principal};
use ferry_observability::propagation;
use ferry_proto::time::duration_from_proto;
use ferry_proto::v1::job_service_server::{JobService, JobServiceServer};
use ferry_proto::v1::{
    CancelJobRequest, CancelJobResponse, CompleteJobRequest, CompleteJobResponse, GetJobRequest,
    GetJobResponse, ListJobsRequest, ListJobsResponse, PollJobRequest, PollJobResponse,
    QueueJobRequest, QueueJobResponse, RenewLeaseRequest, RenewLeaseResponse, ReportStepRequest,
    ReportStepResponse,
};
use ferry_service::Error;
use tonic::{Request, Response, Status};

use crate::Dispatcher;

/// What each method needs.
pub const AUTH: &[(&str, Requirement)] = &[
    ("/ferry.v1.JobService/PollJob", Requirement::Listener),
    ("/ferry.v1.JobService/ReportStep", Requirement::Job),
    ("/ferry.v1.JobService/CompleteJob", Requirement::Job),
    ("/ferry.v1.JobService/QueueJob", Requirement::Administrator),
    ("/ferry.v1.JobService/GetJob", Requirement::Administrator),
    ("/ferry.v1.JobService/ListJobs", Requirement::Administrator),
    ("/ferry.v1.JobService/RenewLease", Requirement::Job),
    ("/ferry.v1.JobService/CancelJob", Requirement::Administrator),
];

/// Largest request: a queued job's spec (1 MiB) with room for framing.
pub const MAX_REQUEST_SIZE: usize = 2 * 1024 * 1024;

/// The tonic service around a [`Dispatcher`].
pub fn server(dispatcher: Dispatcher) -> JobServiceServer<Dispatcher> {
    JobServiceServer::new(dispatcher)
        .max_decoding_message_size(MAX_REQUEST_SIZE)
        .max_encoding_message_size(16 * 1024 * 1024)
}

#[tonic::async_trait]
impl JobService for Dispatcher {
    async fn poll_job(
        &self,
        request: Request<PollJobRequest>,
    ) -> Result<Response<PollJobResponse>, Status> {
        let caller = principal::agent(&request)?;
        let wait = request.get_ref().wait.as_ref().map(duration_from_proto);
        Ok(Response::new(
            Dispatcher::poll_job(self, caller, wait).await?,
        ))
    }

    async fn report_step(
        &self,
        request: Request<ReportStepRequest>,
    ) -> Result<Response<ReportStepResponse>, Status> {
        let caller = principal::job(&request)?.clone();
        Dispatcher::report_step(self, &caller, request.into_inner()).await?;
        Ok(Response::new(ReportStepResponse {}))
    }

    async fn complete_job(
        &self,
        request: Request<CompleteJobRequest>,
    ) -> Result<Response<CompleteJobResponse>, Status> {
        let caller = principal::job(&request)?.clone();
        Ok(Response::new(
            Dispatcher::complete_job(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn queue_job(
        &self,
        request: Request<QueueJobRequest>,
    ) -> Result<Response<QueueJobResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        // This call's span; or, when this replica does not trace, the
        // caller's context, so the job still has a trace to join.
        let trace_context = propagation::current_traceparent()
            .or_else(|| propagation::metadata_traceparent(request.metadata()));
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Error::InvalidArgument("spec is missing".to_owned()))?;
        let job = Dispatcher::queue_job(self, &caller, spec, trace_context).await?;
        Ok(Response::new(QueueJobResponse { job: Some(job) }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let caller = principal::administrator(&request)?;
        let job = Dispatcher::get_job(self, caller, &request.get_ref().job_id).await?;
        Ok(Response::new(GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Dispatcher::list_jobs(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn renew_lease(
        &self,
        request: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        let caller = principal::job(&request)?;
        Ok(Response::new(
            Dispatcher::renew_lease(self, caller, &request.get_ref().job_id).await?,
        ))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Dispatcher::cancel_job(self, &caller, request.into_inner()).await?,
        ))
    }
}
