//! The embedded default: every service in one process, on one TLS port.

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
use ferry_service::{Events, StatusLayer};
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

/// Resolves PATs against the store.
struct StoreAdministrators(Store);

impl AdministratorLookup for StoreAdministrators {
    fn administrator_by_token_hash(
        &self,
        token_hash: String,
    ) -> BoxFuture<'static, Result<Option<AdministratorIdentity>, Status>> {
        let store = self.0.clone();
        Box::pin(async move {
            let found = store
                .administrator_by_token_hash(&token_hash)
                .await
                .map_err(|error| Status::from(ferry_service::Error::from(error)))?;
            Ok(found.map(|administrator| AdministratorIdentity {
                id: administrator.id,
                name: administrator.name,
                owner: administrator.owner,
                pool_ids: administrator.pool_ids,
            }))
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

/// Starts every service on the configured port.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    ferry_tls::install_crypto_provider();
    config.validate()?;
    let material = data_dir::prepare(config)?;
    let database_url = config.database_url()?;
    let store = Store::connect(&database_url, material.data_key)
        .await
        .context("cannot open the store")?;
    tracing::info!(backend = store.backend_name(), "store ready");
    let first_token = bootstrap(&store).await?;

    let signer = Arc::new(material.signer);
    let sealers = Arc::new(SealerCache::new(
        Sealer::new(material.envelope_key),
        SEALER_CACHE_CAPACITY,
    ));
    let events = Events::new();
    let registry = Registry::new(store.clone(), sealers.public_key(), events.clone());
    let tokens = Tokens::new(
        store.clone(),
        signer.clone(),
        sealers.clone(),
        config.tokens.listener_token_ttl,
    );
    let dispatcher = Dispatcher::start(
        store.clone(),
        signer.clone(),
        sealers,
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
    .await?;
    let logs = Logs::new(store.clone(), events);
    let blobs = FsBlobStore::new(config.data_dir.join("blobs"))
        .context("cannot create the blob directory")?;
    let resources = Resources::new(store.clone(), Arc::new(blobs), config.resources.limits());

    let policy = Policy::new()
        .with(ferry_registry::grpc::AUTH)
        .with(ferry_tokens::AUTH)
        .with(ferry_dispatch::grpc::AUTH)
        .with(ferry_logs::grpc::AUTH)
        .with(ferry_resources::grpc::AUTH);
    let authenticator = Authenticator::new(
        policy,
        signer.verifier(),
        Arc::new(StoreAdministrators(store)),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ferry_proto::service_names::ALL {
        health
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();

    let router = Server::builder()
        .tls_config(ferry_tls::server_config(&material.tls))
        .context("invalid TLS certificate or key")?
        // Keepalives hold idle long polls open through NATs and balancers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(1024))
        .layer(
            tower::ServiceBuilder::new()
                // Oversized requests answer RESOURCE_EXHAUSTED, as gRPC says.
                .layer(StatusLayer)
                // Every call is authenticated before any handler runs.
                .layer(AuthLayer::new(authenticator)),
        )
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ferry_registry::grpc::server(registry))
        .add_service(ferry_tokens::server(tokens))
        .add_service(ferry_dispatch::grpc::server(dispatcher))
        .add_service(ferry_logs::grpc::server(logs))
        .add_service(ferry_resources::grpc::server(resources));
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
