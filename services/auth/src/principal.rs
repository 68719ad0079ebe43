//! Who is calling: put in the request's extensions by the auth layer.

use tonic::Status;

/// The authenticated caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person or tool with an administrator's PAT.
    Administrator(AdministratorIdentity),
    /// An agent with its listener token.
    Agent(AgentIdentity),
    /// An agent running a job, with that job's token.
    Job(JobIdentity),
}

/// An administrator, as its PAT resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdministratorIdentity {
    /// Administrator id.
    pub id: String,
    /// Administrator name.
    pub name: String,
    /// Server owners administer every pool and other administrators.
    pub owner: bool,
    /// Ids of the pools it administers.
    pub pool_ids: Vec<String>,
}

impl AdministratorIdentity {
    /// Whether this administrator may act on the pool.
    pub fn administers(&self, pool_id: &str) -> bool {
        self.owner || self.pool_ids.iter().any(|id| id == pool_id)
    }
}

/// An agent, as its listener token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Agent id.
    pub agent_id: String,
    /// Its pool's id.
    pub pool_id: String,
}

/// A job, as its job token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIdentity {
    /// Job id.
    pub job_id: String,
    /// The agent the job was handed to.
    pub agent_id: String,
    /// The pipeline's project.
    pub project: String,
    /// The pipeline.
    pub pipeline: String,
    /// The job's attempt the token was issued for (fencing).
    pub attempt: u32,
    /// Granted permissions (scope values).
    pub scopes: Vec<String>,
}

impl JobIdentity {
    /// Refuses with PERMISSION_DENIED unless the token is for `job_id`.
    pub fn require_job(&self, job_id: &str) -> Result<(), Status> {
        if self.job_id == job_id {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "the job token is for another job",
            ))
        }
    }

    /// Refuses with PERMISSION_DENIED unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Status> {
        if self.scopes.iter().any(|granted| granted == scope) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the job token does not grant {scope}"
            )))
        }
    }
}

/// The caller of a request, or INTERNAL when the auth layer did not run
/// (a wiring bug, not a client error).
pub fn of<T>(request: &tonic::Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::internal("no authenticated caller: the auth layer is missing"))
}

/// The administrator calling, or PERMISSION_DENIED for any other caller.
pub fn administrator<T>(request: &tonic::Request<T>) -> Result<&AdministratorIdentity, Status> {
    match of(request)? {
        Principal::Administrator(identity) => Ok(identity),
        _ => Err(Status::permission_denied(
            "this call needs an administrator",
        )),
    }
}

/// The agent calling with its listener token.
pub fn agent<T>(request: &tonic::Request<T>) -> Result<&AgentIdentity, Status> {
    match of(request)? {
        Principal::Agent(identity) => Ok(identity),
        _ => Err(Status::permission_denied(
            "this call needs a listener token",
        )),
    }
}

/// The job calling with its job token.
pub fn job<T>(request: &tonic::Request<T>) -> Result<&JobIdentity, Status> {
    match of(request)? {
        Principal::Job(identity) => Ok(identity),
        _ => Err(Status::permission_denied("this call needs a job token")),
    }
}
