//! The tonic adapter: unwraps the request, calls [`Registry`], maps errors.

use ferry_auth::{Requirement, principal};
use ferry_proto::v1::registration_service_server::{
    RegistrationService, RegistrationServiceServer,
};
use ferry_proto::v1::{
    CreateAdministratorRequest, CreateAdministratorResponse, CreatePoolRequest, CreatePoolResponse,
    DeregisterRequest, DeregisterResponse, ListAdministratorsRequest, ListAdministratorsResponse,
    ListAgentsRequest, ListAgentsResponse, ListPoolsRequest, ListPoolsResponse, RegisterRequest,
    RegisterResponse, RemoveAdministratorRequest, RemoveAdministratorResponse, RemoveAgentRequest,
    RemoveAgentResponse, UpdateAgentRequest, UpdateAgentResponse,
};
use tonic::{Request, Response, Status};

use crate::Registry;

/// What each method needs: every call here is an administrator's, except an
/// agent deregistering itself.
pub const AUTH: &[(&str, Requirement)] = &[
    (
        "/ferry.v1.RegistrationService/Register",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/CreatePool",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/ListPools",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/ListAgents",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/RemoveAgent",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/UpdateAgent",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/Deregister",
        Requirement::Listener,
    ),
    (
        "/ferry.v1.RegistrationService/CreateAdministrator",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/ListAdministrators",
        Requirement::Administrator,
    ),
    (
        "/ferry.v1.RegistrationService/RemoveAdministrator",
        Requirement::Administrator,
    ),
];

/// Largest request this service decodes.
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The tonic service around a [`Registry`].
pub fn server(registry: Registry) -> RegistrationServiceServer<Registry> {
    RegistrationServiceServer::new(registry).max_decoding_message_size(MAX_REQUEST_SIZE)
}

#[tonic::async_trait]
impl RegistrationService for Registry {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Registry::register(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn create_pool(
        &self,
        request: Request<CreatePoolRequest>,
    ) -> Result<Response<CreatePoolResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Registry::create_pool(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn list_pools(
        &self,
        request: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        let caller = principal::administrator(&request)?;
        Ok(Response::new(Registry::list_pools(self, caller).await?))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Registry::list_agents(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        let caller = principal::administrator(&request)?;
        Registry::remove_agent(self, caller, &request.get_ref().agent_id).await?;
        Ok(Response::new(RemoveAgentResponse {}))
    }

    async fn create_administrator(
        &self,
        request: Request<CreateAdministratorRequest>,
    ) -> Result<Response<CreateAdministratorResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Registry::create_administrator(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn list_administrators(
        &self,
        request: Request<ListAdministratorsRequest>,
    ) -> Result<Response<ListAdministratorsResponse>, Status> {
        let caller = principal::administrator(&request)?;
        Ok(Response::new(
            Registry::list_administrators(self, caller).await?,
        ))
    }

    async fn remove_administrator(
        &self,
        request: Request<RemoveAdministratorRequest>,
    ) -> Result<Response<RemoveAdministratorResponse>, Status> {
        let caller = principal::administrator(&request)?;
        Registry::remove_administrator(self, caller, &request.get_ref().administrator_id).await?;
        Ok(Response::new(RemoveAdministratorResponse {}))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<UpdateAgentResponse>, Status> {
        let caller = principal::administrator(&request)?.clone();
        Ok(Response::new(
            Registry::update_agent(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let caller = principal::agent(&request)?;
        Registry::deregister(self, caller).await?;
        Ok(Response::new(DeregisterResponse {}))
    }
}
