//! The mesh as separate processes: a throwaway PostgreSQL cluster, mesh
//! certificates, `ferryd serve SERVICE` replicas and `ferryd gateway`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_client::{Bearer, ServerAddress};
use ferry_store::testing::PostgresCluster;
use tonic::transport::Channel;

use crate::{Process, binary, eventually, free_port};

/// The services, as `ferryd serve` names them, with their gRPC names.
pub const SERVICES: [(&str, &str); 5] = [
    ("registry", "ferry.v1.RegistrationService"),
    ("tokens", "ferry.v1.TokenService"),
    ("dispatch", "ferry.v1.JobService"),
    ("logs", "ferry.v1.LogService"),
    ("resources", "ferry.v1.ResourceService"),
];

/// A running mesh.
pub struct Mesh {
    /// The gateway's public URL.
    pub url: String,
    /// The owner's PAT.
    pub owner_token: String,
    /// The public (self-signed) certificate clients trust.
    pub certificate_path: PathBuf,
    /// The mesh certificates (CA, per-process).
    pub mesh_dir: PathBuf,
    /// Every service replica: (service, its mesh address, process).
    pub replicas: Vec<(String, String, Process)>,
    /// The gateway process.
    pub gateway: Process,
    /// The data directory.
    pub data_dir: PathBuf,
    _database: Arc<PostgresCluster>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// One mesh at a time per test binary: a mesh is a dozen processes, and two
/// at once on a 2-core machine starve each other's leases.
static TURN: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

fn run(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary("ferryd"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run ferryd")?;
    if !output.status.success() {
        bail!("ferryd {args:?} failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn spawn(name: &str, args: &[String], env: &[(String, String)]) -> anyhow::Result<Process> {
    let child = Command::new(binary("ferryd"))
        .args(args)
        .env("FERRY_LOG", "warn")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start ferryd")?;
    Ok(Process {
        child,
        name: name.to_owned(),
    })
}

impl Mesh {
    /// Starts PostgreSQL, `replicas` replicas of every service (and
    /// `dispatch_replicas` of dispatch) and the gateway, with `extra` TOML
    /// appended to the config; waits until the gateway finds every service.
    pub async fn start(
        dir: &Path,
        replicas: usize,
        dispatch_replicas: usize,
        extra: &str,
    ) -> anyhow::Result<Mesh> {
        Self::start_with_env(dir, replicas, dispatch_replicas, extra, &[]).await
    }

    /// [`Mesh::start`] with extra environment variables for every service
    /// process and the gateway (e.g. `OTEL_*` to export telemetry).
    pub async fn start_with_env(
        dir: &Path,
        replicas: usize,
        dispatch_replicas: usize,
        extra: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Mesh> {
        let turn = TURN.clone().lock_owned().await;
        let database = PostgresCluster::shared().context("cannot start PostgreSQL")?;
        let database_url = database
            .fresh_database()
            .context("cannot create a database")?;
        let data_dir = dir.join("server");
        let mesh_dir = dir.join("mesh");
        let gateway_port = free_port();
        let config_path = dir.join("mesh.toml");
        std::fs::write(
            &config_path,
            format!(
                "data-dir = {data:?}\ndatabase-url = {database_url:?}\n[mesh]\ncertificates-dir = {mesh:?}\n[gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\nhealth-interval = \"300ms\"\n{extra}",
                data = data_dir.display().to_string(),
                mesh = mesh_dir.display().to_string(),
            ),
        )?;
        let config = config_path.display().to_string();
        run(&["certs", "init", "--dir", &mesh_dir.display().to_string()])?;
        let printed = run(&["init", "--config", &config])?;
        let owner_token = printed
            .split_whitespace()
            .find(|word| word.starts_with("ferry_pat_"))
            .context("ferryd init printed no PAT")?
            .to_owned();

        let mut replicas_started = Vec::new();
        let mut routes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (service, grpc_name) in SERVICES {
            let count = if service == "dispatch" {
                dispatch_replicas
            } else {
                replicas
            };
            for _ in 0..count {
                let address = format!("127.0.0.1:{}", free_port());
                let process = spawn(
                    service,
                    &[
                        "serve".into(),
                        service.into(),
                        "--listen".into(),
                        address.clone(),
                        "--config".into(),
                        config.clone(),
                    ],
                    env,
                )?;
                routes
                    .entry(grpc_name)
                    .or_default()
                    .push(format!("https://{address}"));
                replicas_started.push((service.to_owned(), address, process));
            }
        }
        let mut gateway_args = vec!["gateway".to_owned(), "--config".to_owned(), config.clone()];
        for (service, urls) in &routes {
            gateway_args.push("--route".to_owned());
            gateway_args.push(format!("{service}={}", urls.join(",")));
        }
        let gateway = spawn("gateway", &gateway_args, env)?;
        let mesh = Mesh {
            url: format!("https://localhost:{gateway_port}"),
            owner_token,
            certificate_path: data_dir.join("tls").join("server.crt"),
            mesh_dir,
            replicas: replicas_started,
            gateway,
            data_dir,
            _database: database,
            _turn: turn,
        };
        mesh.wait_healthy(Duration::from_secs(60)).await?;
        Ok(mesh)
    }

    /// Waits until the gateway reports every service serving.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "the gateway to find every service", || async {
            let channel = self.channel().await.ok()?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            for (_, service) in SERVICES {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: service.to_owned(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// The gateway's address with its certificate trusted.
    pub fn address(&self) -> anyhow::Result<ServerAddress> {
        Ok(ServerAddress::new(
            self.url.clone(),
            Some(std::fs::read_to_string(&self.certificate_path)?),
        ))
    }

    /// A channel to the gateway.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.address()?.connect().await?)
    }

    /// The owner's credential.
    pub fn owner(&self) -> Bearer {
        Bearer::new(&self.owner_token).expect("a PAT is a valid header")
    }

    /// A `Server` view of the mesh for the shared helpers (jobs, agents).
    pub fn as_server(&self) -> crate::Server {
        crate::Server::view(
            self.url.clone(),
            self.owner_token.clone(),
            self.certificate_path.clone(),
            self.data_dir.clone(),
        )
    }
}
