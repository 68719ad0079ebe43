//! Runs ferry's services: all of them in one process on the public TLS port
//! (the embedded default), or one of them behind the gateway on a mesh port
//! that speaks mutual TLS and admits only the allowed peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_auth::{AdministratorIdentity, AdministratorLookup, AuthLayer, Authenticator, Policy};
use ferry_dispatch::{DispatchConfig, Dispatcher};
use ferry_envelope::{Sealer, SealerCache};
use ferry_logs::Logs;
use ferry_registry::Registry;
use ferry_resources::Resources;
use ferry_resources::blob::FsBlobStore;
use ferry_service::memo::Memo;
use ferry_service::{Event, Events, StatusLayer};
use ferry_store::Store;
use ferry_tokens::Tokens;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::data_dir;

/// Agents whose shared secret stays cached.
const SEALER_CACHE_CAPACITY: usize = 100_000;

/// How long a PAT that resolved to an administrator is trusted without
/// asking the store again. Changes made through the registry (an
/// administrator removed, a pool created) clear the cache at once on every
/// replica (`Event::AdministratorsChanged`); this bounds staleness should
/// such an event be lost.
const PAT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Administrators' PATs kept; the cache starts over when full.
const PAT_CACHE_CAPACITY: usize = 10_000;

/// Resolves PATs against the store, keeping the administrators found for
/// `PAT_CACHE_TTL` (keyed by the PAT's SHA-256, as stored): a `QueueJob`
/// then costs no PAT lookup. Unknown PATs are never cached.
struct StoreAdministrators {
    store: Store,
    cache: Arc<Memo<AdministratorIdentity>>,
}

impl StoreAdministrators {
    /// A lookup whose cache is cleared whenever `events` says the
    /// administrators changed (or events were lost).
    fn new(store: Store, events: &Events) -> Self {
        let cache = Arc::new(Memo::new(PAT_CACHE_TTL, PAT_CACHE_CAPACITY));
        let mut changes = events.subscribe();
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let stale = match changes.recv().await {
                    Ok(Event::AdministratorsChanged | Event::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Ok(_) => false,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(cache) = weak.upgrade() else { return };
                if stale {
                    cache.forget_all();
                }
            }
        });
        Self { store, cache }
    }
}

impl AdministratorLookup for StoreAdministrators {
    fn administrator_by_token_hash(
        &self,
        token_hash: String,
    ) -> BoxFuture<'static, Result<Option<AdministratorIdentity>, Status>> {
        let store = self.store.clone();
        let cache = self.cache.clone();
        Box::pin(async move {
            if let Some(identity) = cache.get(&token_hash) {
                return Ok(Some(identity));
            }
            let ticket = cache.ticket();
            let found = store
                .administrator_by_token_hash(&token_hash)
                .await
                .map_err(|error| Status::from(ferry_service::Error::from(error)))?
                .map(|administrator| AdministratorIdentity {
                    id: administrator.id,
                    name: administrator.name,
                    owner: administrator.owner,
                    pool_ids: administrator.pool_ids,
                });
            if let Some(identity) = &found {
                cache.insert(ticket, token_hash, identity.clone());
            }
            Ok(found)
        })
    }
}

/// A running ferryd.
pub struct Running {
    /// Where the public port listens.
    pub address: SocketAddr,
    /// The certificate agents should trust when it is self-signed.
    pub certificate_path: PathBuf,
    /// The first administrator's PAT, on first start only.
    pub first_token: Option<String>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Stops accepting calls, lets running ones finish (up to a grace
    /// period), and waits for the server to end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(joined) => joined
                .context("the server task panicked")?
                .context("the server failed"),
            Err(_) => Ok(()), // long polls still open: the process exit ends them
        }
    }

    /// Waits for the server to end by itself (an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("the server task panicked")?
            .context("the server failed")
    }
}

/// On first start: a `default` pool and an owner with a PAT shown once.
async fn bootstrap(store: &Store) -> anyhow::Result<Option<String>> {
    if store.count_administrators().await? > 0 {
        return Ok(None);
    }
    let pool = match store.pool_by_name("default").await? {
        Some(pool) => pool,
        None => store.create_pool("default").await?,
    };
    let token =
        ferry_auth::pat::generate().map_err(|_| anyhow::anyhow!("no randomness for a PAT"))?;
    store
        .create_administrator("owner", true, &[pool.id], &ferry_auth::pat::hash(&token))
        .await?;
    Ok(Some(token))
}

/// One of ferry's services, as `ferryd serve SERVICE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// RegistrationService: pools, administrators, agents.
    Registry,
    /// TokenService: listener tokens.
    Tokens,
    /// JobService: queueing, dispatch, leases.
    Dispatch,
    /// LogService: log ingest and follow.
    Logs,
    /// ResourceService: sources, test results, artifacts.
    Resources,
}

impl ServiceName {
    /// Every service.
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Registry,
        ServiceName::Tokens,
        ServiceName::Dispatch,
        ServiceName::Logs,
        ServiceName::Resources,
    ];

    /// The name of its certificate and `ferryd serve` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Registry => "registry",
            ServiceName::Tokens => "tokens",
            ServiceName::Dispatch => "dispatch",
            ServiceName::Logs => "logs",
            ServiceName::Resources => "resources",
        }
    }

    /// The gRPC service it serves.
    pub fn grpc_name(self) -> &'static str {
        use ferry_proto::service_names as names;
        match self {
            ServiceName::Registry => names::REGISTRATION,
            ServiceName::Tokens => names::TOKEN,
            ServiceName::Dispatch => names::JOB,
            ServiceName::Logs => names::LOG,
            ServiceName::Resources => names::RESOURCE,
        }
    }
}

/// What a ferryd process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, on the public port (creates the first administrator).
    All,
    /// One service on a mesh port.
    One(ServiceName),
}

impl Role {
    fn runs(self, service: ServiceName) -> bool {
        match self {
            Role::All => true,
            Role::One(only) => only == service,
        }
    }
}

/// Opens the store and, on first start, makes the first administrator.
pub async fn open_store(config: &Config, data_key: [u8; 32]) -> anyhow::Result<Store> {
    let database_url = config.database_url()?;
    let store = Store::connect(&database_url, data_key)
        .await
        .context("cannot open the store")?;
    tracing::info!(backend = store.backend_name(), "store ready");
    Ok(store)
}

/// Prepares the data directory and the database without serving: keys,
/// migrations, and the first administrator (whose PAT is returned once).
pub async fn init(config: &Config) -> anyhow::Result<Option<String>> {
    ferry_tls::install_crypto_provider();
    config.validate()?;
    let material = data_dir::prepare(config)?;
    let store = open_store(config, material.data_key).await?;
    bootstrap(&store).await
}

/// Starts every service on the configured public port.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    start_role(config, Role::All, config.listen).await
}

/// Starts `role` listening on `listen`.
pub async fn start_role(
    config: &Config,
    role: Role,
    listen: SocketAddr,
) -> anyhow::Result<Running> {
    ferry_tls::install_crypto_provider();
    config.validate()?;
    let material = data_dir::prepare(config)?;
    let store = open_store(config, material.data_key).await?;
    let first_token = match role {
        Role::All => bootstrap(&store).await?,
        Role::One(_) => None,
    };
    if role == Role::All {
        // dispatch and logs share this process: a job's first log stream
        // opens with what dispatch knew when it handed the job out
        store.remember_hand_outs();
    }
    // With PostgreSQL, events cross processes, so replicas stay in step.
    let events = if store.is_postgres() {
        Events::shared(&store).await?
    } else {
        Events::new()
    };

    let signer = Arc::new(material.signer);
    let sealers = Arc::new(SealerCache::new(
        Sealer::new(material.envelope_key),
        SEALER_CACHE_CAPACITY,
    ));
    let registry = role
        .runs(ServiceName::Registry)
        .then(|| Registry::new(store.clone(), sealers.public_key(), events.clone()));
    let tokens = role.runs(ServiceName::Tokens).then(|| {
        Tokens::new(
            store.clone(),
            signer.clone(),
            sealers.clone(),
            config.tokens.listener_token_ttl,
        )
    });
    let dispatcher = if role.runs(ServiceName::Dispatch) {
        Some(
            Dispatcher::start(
                store.clone(),
                signer.clone(),
                sealers.clone(),
                events.clone(),
                DispatchConfig {
                    max_wait: config.dispatch.max_poll_wait,
                    lease_duration: config.dispatch.lease,
                    reap_interval: config.dispatch.reap_interval,
                    timeout_grace: config.dispatch.timeout_grace,
                    cancel_grace: config.dispatch.cancel_grace,
                    max_attempts: config.dispatch.max_attempts,
                    ..DispatchConfig::default()
                },
            )
            .await?,
        )
    } else {
        None
    };
    let logs = role
        .runs(ServiceName::Logs)
        .then(|| Logs::new(store.clone(), events.clone()));
    let resources = if role.runs(ServiceName::Resources) {
        let blobs = FsBlobStore::new(config.data_dir.join("blobs"))
            .context("cannot create the blob directory")?;
        Some(Resources::new(
            store.clone(),
            Arc::new(blobs),
            config.resources.limits(),
        ))
    } else {
        None
    };

    let policy = Policy::new()
        .with(ferry_registry::grpc::AUTH)
        .with(ferry_tokens::AUTH)
        .with(ferry_dispatch::grpc::AUTH)
        .with(ferry_logs::grpc::AUTH)
        .with(ferry_resources::grpc::AUTH);
    let authenticator = Authenticator::new(
        policy,
        signer.verifier(),
        Arc::new(StoreAdministrators::new(store, &events)),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ServiceName::ALL
        .into_iter()
        .filter(|service| role.runs(*service))
    {
        health
            .set_service_status(service.grpc_name(), tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    // The public port serves the public certificate; a mesh port serves the
    // service's mesh certificate and admits only allowed peers (the gateway).
    let (tls, allowed_peers) = match role {
        Role::All => (ferry_tls::server_config(&material.tls), None),
        Role::One(service) => {
            let mesh = config.mesh.load(service.as_str())?;
            (
                ferry_tls::mesh_server_config(&mesh.identity, &mesh.ca_pem),
                Some(ferry_tls::SanAllowLayer::new(
                    config.mesh.allowed_clients.clone(),
                )),
            )
        }
    };

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();

    let router = Server::builder()
        .tls_config(tls)
        .context("invalid TLS certificate or key")?
        // Keepalives hold idle long polls open through NATs and balancers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(1024))
        // Uploads are not held to 64 KiB per round trip (see the constants).
        .initial_stream_window_size(Some(ferry_gateway::STREAM_WINDOW))
        .initial_connection_window_size(Some(ferry_gateway::CONNECTION_WINDOW))
        .layer(
            tower::ServiceBuilder::new()
                // A span continuing the caller's trace and a duration for
                // every call, whatever answers it (the auth layer included).
                .layer(ferry_observability::GrpcServerLayer)
                // Oversized requests answer RESOURCE_EXHAUSTED, as gRPC says.
                .layer(StatusLayer)
                // On a mesh port, only allowed peers (by certificate SAN).
                .option_layer(allowed_peers)
                // Every call is authenticated before any handler runs.
                .layer(AuthLayer::new(authenticator)),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(registry.map(ferry_registry::grpc::server))
        .add_optional_service(tokens.map(ferry_tokens::server))
        .add_optional_service(dispatcher.map(ferry_dispatch::grpc::server))
        .add_optional_service(logs.map(ferry_logs::grpc::server))
        .add_optional_service(resources.map(ferry_resources::grpc::server));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_signal.await;
    }));
    Ok(Running {
        address,
        certificate_path: material.certificate_path,
        first_token,
        shutdown,
        task,
    })
}
