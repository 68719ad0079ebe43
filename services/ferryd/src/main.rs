//! `ferryd`: ferry's server. `ferryd all` runs every service in one process
//! (the embedded default: SQLite file, self-signed TLS); `ferryd demo` runs
//! a whole job end to end on a temporary one.

mod config;
mod data_dir;
mod demo;
mod server;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferry_observability::LogFormat;

use crate::config::Config;

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
    /// Run the agent (the same program as `ferry-agent`).
    #[command(hide = true)]
    Agent {
        /// Arguments for ferry-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
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
    println!(
        "ferryd {} serving on https://{} (data dir {})",
        env!("CARGO_PKG_VERSION"),
        running.address,
        config.data_dir.display()
    );
    println!(
        "agents trust this certificate with --ca-cert: {}",
        running.certificate_path.display()
    );
    if let Some(token) = &running.first_token {
        println!("first start: created pool \"default\" and administrator \"owner\".");
        println!("owner's PAT (shown once; ferryd keeps only its hash):");
        println!("    {token}");
    }
    tokio::select! {
        result = running.wait() => result,
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            running.stop().await
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
    let _telemetry = ferry_observability::init(cli.log_format, default_filter);
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
            Command::Agent { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ferryd agent …` is `ferry-agent …`: the demo uses it when the
/// ferry-agent binary is not next to ferryd.
fn agent(args: Vec<OsString>) -> ExitCode {
    use clap::Parser as _;
    let mut argv = vec![OsString::from("ferry-agent")];
    argv.extend(args);
    let cli = ferry_agent::Cli::parse_from(argv);
    let _telemetry = ferry_observability::init(LogFormat::Human, "info");
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
