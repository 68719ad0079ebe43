//! TokenService: the agent's listener token, sealed to the agent's key.
//!
//! The call carries no credential: the token comes back sealed (envelope v1)
//! to the public key the agent registered, so only the holder of the private
//! key can read it. That is the proof of possession, as in the Azure
//! Pipelines agent's model.

use std::sync::Arc;
use std::time::Duration;

use ferry_auth::token::{Audience, Claims, TokenSigner, scope};
use ferry_envelope::{PublicKey, SealerCache, listener_token_context};
use ferry_proto::time::{now_micros, timestamp_from_micros};
use ferry_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use ferry_proto::v1::{GetListenerTokenRequest, GetListenerTokenResponse, ListenerToken};
use ferry_service::{Error, Result, sealed, validate};
use ferry_store::Store;
use prost::Message;
use tonic::{Request, Response, Status};

/// What each method needs.
pub const AUTH: &[(&str, ferry_auth::Requirement)] = &[(
    "/ferry.v1.TokenService/GetListenerToken",
    ferry_auth::Requirement::Public,
)];

/// Default life of a listener token.
pub const DEFAULT_LISTENER_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// The token service's domain.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    signer: Arc<TokenSigner>,
    sealers: Arc<SealerCache>,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Issues listener tokens living `ttl`.
    pub fn new(
        store: Store,
        signer: Arc<TokenSigner>,
        sealers: Arc<SealerCache>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            signer,
            sealers,
            ttl,
        }
    }

    /// A new listener token for the agent, sealed to its key.
    pub async fn listener_token(&self, agent_id: &str) -> Result<GetListenerTokenResponse> {
        validate::id("agent_id", agent_id)?;
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("agent {agent_id} not found")))?;
        if agent.disabled {
            return Err(Error::PermissionDenied(
                "this agent is disabled: an administrator can enable it again".to_owned(),
            ));
        }
        let public_key = PublicKey::from_slice(&agent.public_key)?;
        let now = now_micros();
        let issued = now / 1_000_000;
        let expires = issued + self.ttl.as_secs() as i64;
        let claims = Claims {
            iss: String::new(),
            sub: format!("agent:{}", agent.id),
            aud: Audience::Listener.as_str().to_owned(),
            exp: expires,
            iat: issued,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: agent.id.clone(),
            scope: scope::AGENT_LISTEN.to_owned(),
            pool_id: Some(agent.pool_id.clone()),
            agent_id: Some(agent.id.clone()),
            job_id: None,
            project: None,
            pipeline: None,
            attempt: None,
        };
        let access_token = self
            .signer
            .sign(&claims)
            .map_err(|error| Error::Internal(error.to_string()))?;
        let plaintext = ListenerToken {
            access_token,
            expire_time: Some(timestamp_from_micros(expires * 1_000_000)),
        }
        .encode_to_vec();
        let envelope =
            self.sealers
                .seal(&public_key, &listener_token_context(&agent.id), &plaintext)?;
        tracing::debug!(agent_id = %agent.id, "listener token issued");
        ferry_observability::metrics::token_issued("listener");
        Ok(GetListenerTokenResponse {
            sealed_token: Some(sealed::to_proto(envelope)),
        })
    }
}

/// The tonic service around [`Tokens`].
pub fn server(tokens: Tokens) -> TokenServiceServer<Tokens> {
    TokenServiceServer::new(tokens).max_decoding_message_size(4 * 1024)
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn get_listener_token(
        &self,
        request: Request<GetListenerTokenRequest>,
    ) -> std::result::Result<Response<GetListenerTokenResponse>, Status> {
        Ok(Response::new(
            self.listener_token(&request.get_ref().agent_id).await?,
        ))
    }
}
