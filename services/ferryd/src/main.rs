//! `ferryd`: ferry's server. `ferryd all` runs every service in one process
//! (the embedded default: SQLite file, self-signed TLS); `ferryd demo` runs
//! a whole job end to end on a temporary one.

/// Prints a line on stdout. A reader that went away (a closed pipe) is no
/// reason for a server to stop, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod config;
mod data_dir;
mod demo;
mod mesh;
mod server;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_observability::LogFormat;

use crate::config::Config;

/// jemalloc instead of the system allocator: a request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, SQL statements)
/// across threads, where glibc's malloc took 10–13 % of ferryd's CPU time
/// under load; with jemalloc ferryd needs about a quarter less CPU per job
/// (BENCHMARKS.md). mimalloc was as fast but held more memory per idle
/// agent.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ferryd",
    version,
    about = "ferry's server: registry, tokens, dispatch and logs for pull-model CI agents",
    long_about = "ferry's server. Agents behind firewalls connect to it over outbound \
                  HTTPS/2 (gRPC) only: they register once with an administrator's PAT, \
                  long-poll for jobs sealed to their key, and stream logs back.\n\n\
                  Start with `ferryd demo` to see a whole job run end to end, then \
                  `ferryd all` to run the server for real."
)]
struct Cli {
    /// Log format on stderr: human or json. Filter with FERRY_LOG (e.g. debug).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process on one TLS port (the embedded default).
    ///
    /// On first start ferryd creates its data directory (SQLite database,
    /// signing, envelope and data keys, a self-signed certificate), a pool
    /// named `default` and an administrator `owner` whose PAT it prints once.
    All(ServeArgs),
    /// Run a whole job end to end on a temporary server, with a real agent.
    ///
    /// Starts ferryd on a temporary data directory, configures and starts a
    /// ferry-agent process that connects over TLS, queues a three-step
    /// pipeline that uses a secret, follows its logs live (the secret
    /// masked), and prints the result and how long dispatch took. Exits 0
    /// when the job succeeded.
    Demo(demo::DemoArgs),
    /// Run one service on a mesh port (mutual TLS), behind the gateway.
    ///
    /// Needs PostgreSQL (database-url) so that replicas share state and
    /// events, and the mesh certificates (`ferryd certs init`).
    Serve {
        /// The service to run.
        service: server::ServiceName,
        /// Options; --listen is this replica's mesh port and is required.
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Run the gateway: the mesh's only public port, routing each call to a
    /// healthy replica of its service over mutual TLS.
    Gateway {
        /// A route, `SERVICE=URL[,URL…]` (e.g.
        /// `ferry.v1.JobService=https://10.0.0.5:7601`); adds to the config
        /// file's gateway.routes.
        #[arg(long = "route", value_name = "SERVICE=URLS")]
        routes: Vec<String>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Prepare the data directory and database (keys, migrations, the first
    /// administrator) without serving; prints the first PAT once.
    Init(ServeArgs),
    /// Mesh certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the whole mesh on this machine: the gateway and N replicas of
    /// every service as separate processes on loopback (development, tests).
    #[command(subcommand)]
    Mesh(mesh::MeshCommand),
    /// Run the agent (the same program as `ferry-agent`).
    #[command(hide = true)]
    Agent {
        /// Arguments for ferry-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make a development CA and a certificate for the gateway and each
    /// service (SANs `<name>.ferry.internal`, localhost, 127.0.0.1).
    /// Existing files are kept.
    Init {
        /// Where to write them.
        #[arg(long, default_value = "ferry-data/mesh")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file and explain what is wrong in it.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file (see docs/operations.md); flags and env beat it.
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the public TLS port [default: 0.0.0.0:7443].
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: database, keys, certificate [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite:///path or postgres://… [default: DATA_DIR/ferry.db].
    #[arg(long, env = "FERRY_DATABASE_URL")]
    database_url: Option<String>,
    /// PEM certificate chain for the public port [default: self-signed].
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(url) = self.database_url {
            config.database_url = Some(url);
        }
        if let (Some(certificate), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls.certificate = Some(certificate);
            config.tls.private_key = Some(key);
        }
        config.validate()?;
        Ok(config)
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let mut running = server::start(&config).await?;
    say!(
        "ferryd {} serving on https://{} (data dir {})",
        env!("CARGO_PKG_VERSION"),
        running.address,
        config.data_dir.display()
    );
    say!(
        "agents trust this certificate with --ca-cert: {}",
        running.certificate_path.display()
    );
    if let Some(token) = &running.first_token {
        say!("first start: created pool \"default\" and administrator \"owner\".");
        say!("owner's PAT (shown once; ferryd keeps only its hash):");
        say!("    {token}");
    }
    tokio::select! {
        result = running.wait() => result,
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            running.stop().await
        }
    }
}

async fn serve_one(service: server::ServiceName, args: ServeArgs) -> anyhow::Result<()> {
    let listen = args
        .listen
        .context("ferryd serve needs --listen ADDR: this replica's mesh port")?;
    let config = args.config()?;
    if !config.database_url()?.starts_with("postgres") {
        anyhow::bail!(
            "ferryd serve runs one service of a mesh, whose replicas share PostgreSQL: set database-url to a postgres:// URL (on SQLite, run every service in one process with `ferryd all`)"
        );
    }
    let mut running = server::start_role(&config, server::Role::One(service), listen).await?;
    say!(
        "ferryd serve {} listening on https://{} (mesh TLS)",
        service.as_str(),
        running.address
    );
    tokio::select! {
        result = running.wait() => result,
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            running.stop().await
        }
    }
}

async fn gateway(routes: Vec<String>, args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    for route in routes {
        let (service, urls) = route
            .split_once('=')
            .with_context(|| format!("--route {route:?} must be SERVICE=URL[,URL…]"))?;
        config
            .gateway
            .routes
            .entry(service.to_owned())
            .or_default()
            .extend(
                urls.split(',')
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned),
            );
    }
    config.validate()?;
    let running = mesh::start_gateway(&config).await?;
    say!("ferryd gateway serving on https://{}", running.address);
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await?;
    Ok(())
}

async fn init(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    match server::init(&config).await? {
        Some(token) => {
            say!("created pool \"default\" and administrator \"owner\".");
            say!("owner's PAT (shown once; ferryd keeps only its hash):");
            say!("    {token}");
        }
        None => say!("already initialised: {}", config.data_dir.display()),
    }
    Ok(())
}

fn certs_init(dir: &std::path::Path) -> anyhow::Result<()> {
    ferry_tls::issue_mesh(dir, &mesh::CERTIFICATE_NAMES)?;
    say!("mesh certificates in {} (CA: ca.crt)", dir.display());
    Ok(())
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let checked = config::Config::load(file).and_then(|config| config.validate().map(|()| config));
    match checked {
        Ok(config) => {
            say!("{}: valid", file.display());
            say!(
                "  listen {}, data dir {}",
                config.listen,
                config.data_dir.display()
            );
            say!(
                "  database {}",
                config
                    .database_url()
                    .unwrap_or_default()
                    .split('@')
                    .next_back()
                    .unwrap_or_default()
            );
            for (service, replicas) in &config.gateway.routes {
                say!("  route {service} -> {}", replicas.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{}: {error:#}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent { args } = cli.command {
        return agent(args);
    }
    // The demo's own output tells the story; the server logs only warnings.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let telemetry =
        ferry_observability::init(&service_name(&cli.command), cli.log_format, default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::All(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::Demo(args) => demo::run(args).await,
            Command::Serve { service, args } => {
                serve_one(service, args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Gateway { routes, args } => {
                gateway(routes, args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Init(args) => init(args).await.map(|()| ExitCode::SUCCESS),
            Command::Certs(CertsCommand::Init { dir }) => {
                certs_init(&dir).map(|()| ExitCode::SUCCESS)
            }
            Command::Config(ConfigCommand::Check { file }) => config_check(&file),
            Command::Mesh(command) => mesh::run(command).await,
            Command::Agent { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    // Export what is buffered while the runtime is still there.
    telemetry.shutdown();
    drop(runtime);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `service.name` of this process: `ferry-<service>` for one service
/// of the mesh, `ferry-gateway`, or `ferryd`.
fn service_name(command: &Command) -> String {
    match command {
        Command::Serve { service, .. } => format!("ferry-{}", service.as_str()),
        Command::Gateway { .. } => "ferry-gateway".to_owned(),
        _ => "ferryd".to_owned(),
    }
}

/// `ferryd agent …` is `ferry-agent …`: the demo uses it when the
/// ferry-agent binary is not next to ferryd.
fn agent(args: Vec<OsString>) -> ExitCode {
    use clap::Parser as _;
    let mut argv = vec![OsString::from("ferry-agent")];
    argv.extend(args);
    let cli = ferry_agent::Cli::parse_from(argv);
    let _telemetry = ferry_observability::init("ferry-agent", LogFormat::Human, "info");
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(ferry_agent::run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
