//! The tower layer that authenticates every gRPC call.
//!
//! Each service declares, per method, which credential it needs
//! ([`Requirement`]); the layer reads the `authorization: Bearer …` header,
//! checks it (a PAT against the store, a signed token locally), and puts the
//! resulting [`Principal`] in the request's extensions for the handler. A
//! missing, malformed, expired or foreign credential is UNAUTHENTICATED here,
//! before any handler runs. Finer checks (this pool, this job) are the
//! handler's, with PERMISSION_DENIED.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use tonic::Status;
use tower::{Layer, Service};

use crate::pat;
use crate::principal::{AdministratorIdentity, AgentIdentity, JobIdentity, Principal};
use crate::token::{Audience, TokenVerifier};

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing (health, reflection, the sealed listener-token call).
    Public,
    /// An administrator's PAT.
    Administrator,
    /// An agent's listener token.
    Listener,
    /// A job token.
    Job,
    /// An administrator's PAT or a job token (reading a pipeline's
    /// artifacts): the token's shape says which is checked.
    AdministratorOrJob,
}

/// Per-method requirements. Methods of a `ferry.` service that are not
/// listed need an administrator (deny by default); other services' methods
/// (health, reflection) are public.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: HashMap<String, Requirement>,
}

impl Policy {
    /// An empty policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service's methods: `("/ferry.v1.JobService/PollJob", Listener)`.
    pub fn with(mut self, methods: &[(&str, Requirement)]) -> Self {
        for (path, requirement) in methods {
            self.methods.insert((*path).to_owned(), *requirement);
        }
        self
    }

    /// What the method at `path` needs.
    pub fn requirement(&self, path: &str) -> Requirement {
        match self.methods.get(path) {
            Some(requirement) => *requirement,
            None if path.starts_with("/ferry.") => Requirement::Administrator,
            None => Requirement::Public,
        }
    }
}

/// Looks administrators up by the hash of their PAT (the store does).
pub trait AdministratorLookup: Send + Sync + 'static {
    /// The administrator whose PAT hashes to `token_hash`, if any.
    fn administrator_by_token_hash(
        &self,
        token_hash: String,
    ) -> BoxFuture<'static, Result<Option<AdministratorIdentity>, Status>>;
}

/// Checks credentials against a [`Policy`].
#[derive(Clone)]
pub struct Authenticator {
    policy: Arc<Policy>,
    verifier: TokenVerifier,
    administrators: Arc<dyn AdministratorLookup>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        rejected("malformed");
        Status::unauthenticated("malformed authorization header")
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => {
            rejected("malformed");
            Err(Status::unauthenticated(
                "the authorization header must be `Bearer <token>`",
            ))
        }
    }
}

/// Counts a refused credential by reason (`ferry.tokens.rejected`); the
/// credential itself is never recorded.
fn rejected(reason: &'static str) {
    ferry_observability::metrics::token_rejected(reason);
}

/// Why a signed token was refused, as a metric attribute.
fn token_reason(error: &crate::TokenError) -> &'static str {
    use crate::TokenError;
    match error {
        TokenError::Malformed | TokenError::Unsupported => "malformed",
        TokenError::BadSignature => "bad_signature",
        TokenError::Expired => "expired",
        TokenError::NotYetValid => "not_yet_valid",
        TokenError::WrongAudience(_) => "wrong_audience",
        TokenError::WrongIssuer => "wrong_issuer",
        TokenError::Signing => "invalid",
    }
}

impl Authenticator {
    /// An authenticator for `policy`, verifying tokens with `verifier` and
    /// PATs with `administrators`.
    pub fn new(
        policy: Policy,
        verifier: TokenVerifier,
        administrators: Arc<dyn AdministratorLookup>,
    ) -> Self {
        Self {
            policy: Arc::new(policy),
            verifier,
            administrators,
        }
    }

    /// Authenticates a call to `path` with these headers.
    pub async fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, Status> {
        let requirement = self.policy.requirement(path);
        if requirement == Requirement::Public {
            return Ok(None);
        }
        let Some(token) = bearer(headers)? else {
            rejected("missing");
            return Err(Status::unauthenticated(match requirement {
                Requirement::Administrator => "this call needs an administrator's PAT",
                Requirement::Listener => "this call needs a listener token",
                Requirement::AdministratorOrJob => "this call needs a PAT or a job token",
                _ => "this call needs a job token",
            }));
        };
        match requirement {
            Requirement::Public => Ok(None),
            Requirement::Administrator => self.administrator(token).await.map(Some),
            Requirement::Listener => self.listener(token).map(Some),
            Requirement::Job => self.job(token).map(Some),
            Requirement::AdministratorOrJob if pat::looks_like_pat(token) => {
                self.administrator(token).await.map(Some)
            }
            Requirement::AdministratorOrJob => self.job(token).map(Some),
        }
    }

    async fn administrator(&self, token: &str) -> Result<Principal, Status> {
        if !pat::looks_like_pat(token) {
            rejected("not_a_pat");
            return Err(Status::unauthenticated(
                "this call needs an administrator's PAT",
            ));
        }
        match self
            .administrators
            .administrator_by_token_hash(pat::hash(token))
            .await?
        {
            Some(identity) => Ok(Principal::Administrator(identity)),
            None => {
                rejected("unknown_pat");
                Err(Status::unauthenticated("unknown or revoked PAT"))
            }
        }
    }

    fn verify(&self, token: &str, audience: Audience) -> Result<crate::Claims, Status> {
        self.verifier
            .verify(token, audience, now_seconds())
            .map_err(|error| {
                rejected(token_reason(&error));
                Status::unauthenticated(format!("invalid token: {error}"))
            })
    }

    fn listener(&self, token: &str) -> Result<Principal, Status> {
        let claims = self.verify(token, Audience::Listener)?;
        match (claims.agent_id, claims.pool_id) {
            (Some(agent_id), Some(pool_id)) => {
                Ok(Principal::Agent(AgentIdentity { agent_id, pool_id }))
            }
            _ => {
                rejected("invalid");
                Err(Status::unauthenticated(
                    "invalid token: missing agent claims",
                ))
            }
        }
    }

    fn job(&self, token: &str) -> Result<Principal, Status> {
        let claims = self.verify(token, Audience::Job)?;
        let scopes = claims.scopes().map(str::to_owned).collect();
        match (
            claims.job_id,
            claims.agent_id,
            claims.project,
            claims.pipeline,
            claims.attempt,
        ) {
            (Some(job_id), Some(agent_id), Some(project), Some(pipeline), Some(attempt)) => {
                Ok(Principal::Job(JobIdentity {
                    job_id,
                    agent_id,
                    project,
                    pipeline,
                    attempt,
                    scopes,
                }))
            }
            _ => {
                rejected("invalid");
                Err(Status::unauthenticated("invalid token: missing job claims"))
            }
        }
    }
}

/// Authenticates every request before the inner service sees it.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    /// A layer around `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for AuthService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        // The clone is ready only after poll_ready; swap so the ready one is used.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            match authenticator
                .authenticate(request.uri().path(), request.headers())
                .await
            {
                Ok(principal) => {
                    if let Some(principal) = principal {
                        request.extensions_mut().insert(principal);
                    }
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::debug!(path = request.uri().path(), code = ?status.code(), "call refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Claims, TokenSigner, generate_signing_key, scope};

    struct OneAdministrator(String);

    impl AdministratorLookup for OneAdministrator {
        fn administrator_by_token_hash(
            &self,
            token_hash: String,
        ) -> BoxFuture<'static, Result<Option<AdministratorIdentity>, Status>> {
            let found = (token_hash == self.0).then(|| AdministratorIdentity {
                id: "admin".to_owned(),
                name: "admin".to_owned(),
                owner: true,
                pool_ids: Vec::new(),
            });
            Box::pin(async move { Ok(found) })
        }
    }

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        headers
    }

    #[tokio::test]
    async fn each_requirement_takes_only_its_own_credential() {
        let signer =
            TokenSigner::from_pkcs8(&generate_signing_key().expect("key"), "t").expect("signer");
        let pat = pat::generate().expect("pat");
        let policy = Policy::new().with(&[
            ("/ferry.v1.JobService/PollJob", Requirement::Listener),
            ("/ferry.v1.JobService/CompleteJob", Requirement::Job),
            (
                "/ferry.v1.TokenService/GetListenerToken",
                Requirement::Public,
            ),
        ]);
        let authenticator = Authenticator::new(
            policy,
            signer.verifier(),
            Arc::new(OneAdministrator(pat::hash(&pat))),
        );
        let now = now_seconds();
        let listener = signer
            .sign(&Claims {
                iss: String::new(),
                sub: "agent:a".into(),
                aud: Audience::Listener.as_str().into(),
                exp: now + 60,
                iat: now,
                jti: "1".into(),
                client_id: "a".into(),
                scope: scope::AGENT_LISTEN.into(),
                pool_id: Some("p".into()),
                agent_id: Some("a".into()),
                job_id: None,
                project: None,
                pipeline: None,
                attempt: None,
            })
            .expect("sign");

        let poll = "/ferry.v1.JobService/PollJob";
        let complete = "/ferry.v1.JobService/CompleteJob";
        let queue = "/ferry.v1.JobService/QueueJob";
        assert!(matches!(
            authenticator.authenticate(poll, &headers(&listener)).await,
            Ok(Some(Principal::Agent(_)))
        ));
        for (path, token) in [(complete, &listener), (queue, &listener), (poll, &pat)] {
            let status = authenticator
                .authenticate(path, &headers(token))
                .await
                .expect_err("must be refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{path}");
            assert!(!status.message().contains(token.as_str()), "token echoed");
        }
        assert!(matches!(
            authenticator.authenticate(queue, &headers(&pat)).await,
            Ok(Some(Principal::Administrator(_)))
        ));
        let other_pat = pat::generate().expect("pat");
        let refused = authenticator
            .authenticate(queue, &headers(&other_pat))
            .await
            .expect_err("unknown pat");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let missing = authenticator
            .authenticate(poll, &HeaderMap::new())
            .await
            .expect_err("no token");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(matches!(
            authenticator
                .authenticate("/ferry.v1.TokenService/GetListenerToken", &HeaderMap::new())
                .await,
            Ok(None)
        ));
        assert!(matches!(
            authenticator
                .authenticate("/grpc.health.v1.Health/Check", &HeaderMap::new())
                .await,
            Ok(None)
        ));
    }
}
