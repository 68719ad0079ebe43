//! The mesh on one machine: `ferryd mesh up` starts the gateway and N
//! replicas of every service as separate processes on loopback, and
//! `ferryd gateway` itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokio::process::{Child, Command};

use crate::config::Config;
use crate::data_dir;
use crate::server::{self, ServiceName};

/// The processes that get a mesh certificate.
pub const CERTIFICATE_NAMES: [&str; 6] = [
    "gateway",
    "registry",
    "tokens",
    "dispatch",
    "logs",
    "resources",
];

/// `ferryd mesh …`.
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Start the gateway and N replicas of every service; Ctrl-C stops them.
    Up(UpArgs),
}

/// Options of `ferryd mesh up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The config file every process reads (database-url must be PostgreSQL).
    #[arg(long, env = "FERRY_CONFIG")]
    config: PathBuf,
    /// Replicas of each service.
    #[arg(long, default_value_t = 2)]
    replicas: u16,
    /// First port of the services' mesh ports (each replica takes the next).
    #[arg(long, default_value_t = 7600)]
    base_port: u16,
}

/// Starts the gateway from the config's gateway section and mesh identity.
pub async fn start_gateway(config: &Config) -> anyhow::Result<ferry_gateway::RunningGateway> {
    ferry_tls::install_crypto_provider();
    let material = data_dir::prepare(config)?;
    let mesh = config.mesh.load("gateway")?;
    if config.gateway.routes.is_empty() {
        bail!("the gateway has no routes: set gateway.routes or pass --route");
    }
    let mut gateway = ferry_gateway::GatewayConfig::new(
        config.gateway.listen,
        material.tls,
        mesh.identity,
        mesh.ca_pem,
    );
    gateway.routes = config.gateway.routes.clone();
    gateway.health_interval = config.gateway.health_interval;
    ferry_gateway::start(gateway)
        .await
        .context("cannot start the gateway")
}

fn spawn(args: &[String]) -> anyhow::Result<Child> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    Command::new(me)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a ferryd process")
}

/// Runs `ferryd mesh …`.
pub async fn run(command: MeshCommand) -> anyhow::Result<ExitCode> {
    let MeshCommand::Up(args) = command;
    let config = Config::load(&args.config)?;
    config.validate()?;
    let url = config.database_url()?;
    if !url.starts_with("postgres") {
        bail!(
            "the mesh needs PostgreSQL: set database-url to a postgres:// URL in {}",
            args.config.display()
        );
    }
    if args.replicas == 0 || args.replicas > 16 {
        bail!("--replicas must be between 1 and 16");
    }
    ferry_tls::issue_mesh(&config.mesh.certificates_dir, &CERTIFICATE_NAMES)?;
    match server::init(&config).await? {
        Some(token) => {
            say!("created pool \"default\" and administrator \"owner\"; owner's PAT (shown once):");
            say!("    {token}");
        }
        None => say!("data directory and database already initialised"),
    }

    let config_path = args.config.display().to_string();
    let mut children = Vec::new();
    let mut routes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut port = args.base_port;
    for service in ServiceName::ALL {
        for _ in 0..args.replicas {
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            port = port.checked_add(1).context("ran out of ports")?;
            children.push(spawn(&[
                "serve".into(),
                service.as_str().into(),
                "--listen".into(),
                listen.to_string(),
                "--config".into(),
                config_path.clone(),
            ])?);
            routes
                .entry(service.grpc_name())
                .or_default()
                .push(format!("https://{listen}"));
        }
    }
    let mut gateway_args = vec!["gateway".to_owned(), "--config".to_owned(), config_path];
    for (service, urls) in &routes {
        gateway_args.push("--route".to_owned());
        gateway_args.push(format!("{service}={}", urls.join(",")));
    }
    children.push(spawn(&gateway_args)?);
    say!(
        "mesh up: gateway on https://{}, {} replicas of each service from port {}; Ctrl-C stops it",
        config.gateway.listen,
        args.replicas,
        args.base_port
    );

    let exited = async {
        loop {
            for child in &mut children {
                if let Ok(Some(status)) = child.try_wait() {
                    return status;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let code = tokio::select! {
        status = exited => {
            eprintln!("a mesh process exited ({status}); stopping the others");
            ExitCode::FAILURE
        }
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    };
    for child in &mut children {
        let _ = child.kill().await;
    }
    Ok(code)
}
