//! ferryd's typed configuration: a TOML file (every key optional, kebab
//! case, unknown keys refused), then environment variables and flags on top.
//! `Config::validate` says what is wrong in words.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Everything ferryd needs to run the embedded default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Address of the public gRPC port (TLS).
    pub listen: SocketAddr,
    /// Where ferryd keeps its database, keys and certificate.
    pub data_dir: PathBuf,
    /// `sqlite:///path` or `postgres://…`; default: `DATA_DIR/ferry.db`.
    pub database_url: Option<String>,
    /// The public certificate and key; default: self-signed, made on first
    /// start in `DATA_DIR/tls/`.
    pub tls: TlsConfig,
    /// Tokens and agents.
    pub tokens: TokenConfig,
    /// Long polls, leases, timeouts.
    pub dispatch: DispatchSection,
    /// Source, test result and artifact size limits.
    pub resources: ResourcesSection,
    /// Mutual TLS between the gateway and the services (the mesh).
    pub mesh: MeshSection,
    /// The gateway: the mesh's only public port.
    pub gateway: GatewaySection,
}

/// The mesh's certificates: `ferryd certs init --dir DIR` makes a dev CA
/// and one certificate per process (`gateway`, `registry`, `tokens`,
/// `dispatch`, `logs`, `resources`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MeshSection {
    /// Directory holding `ca.crt` and `<name>.crt` / `<name>.key`.
    pub certificates_dir: PathBuf,
    /// Certificate SANs allowed to call a service port.
    pub allowed_clients: Vec<String>,
}

impl Default for MeshSection {
    fn default() -> Self {
        Self {
            certificates_dir: PathBuf::from("ferry-data/mesh"),
            allowed_clients: vec!["gateway.ferry.internal".to_owned()],
        }
    }
}

/// One process's mesh identity.
pub struct MeshIdentity {
    /// Its certificate and key.
    pub identity: ferry_tls::CertificateAndKey,
    /// The mesh CA, PEM.
    pub ca_pem: String,
}

impl MeshSection {
    /// Loads the CA and the certificate of `name`.
    pub fn load(&self, name: &str) -> anyhow::Result<MeshIdentity> {
        let dir = &self.certificates_dir;
        let read = |file: String| {
            let path = dir.join(&file);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the mesh certificate file {} (make them with `ferryd certs init --dir {}`)",
                    path.display(),
                    dir.display()
                )
            })
        };
        Ok(MeshIdentity {
            identity: ferry_tls::CertificateAndKey {
                certificate_pem: read(format!("{name}.crt"))?,
                private_key_pem: read(format!("{name}.key"))?,
            },
            ca_pem: read("ca.crt".to_owned())?,
        })
    }
}

/// The gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct GatewaySection {
    /// The public port.
    pub listen: SocketAddr,
    /// gRPC service name (`ferry.v1.JobService`) → replica URLs.
    pub routes: std::collections::BTreeMap<String, Vec<String>>,
    /// How often each replica's health is checked.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            routes: std::collections::BTreeMap::new(),
            health_interval: Duration::from_secs(1),
        }
    }
}

/// The certificate the public port serves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

/// Token settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The `iss` of every token.
    pub issuer: String,
    /// Life of a listener token.
    #[serde(with = "humantime_serde")]
    pub listener_token_ttl: Duration,
}

/// Dispatch settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DispatchSection {
    /// Longest wait a long poll may ask for.
    #[serde(with = "humantime_serde")]
    pub max_poll_wait: Duration,
    /// How long an agent holds a job without renewing (it renews at a third).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often lapsed leases, timeouts and unconfirmed cancels are reaped.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// How long past its timeout a job may run before the server fails it.
    #[serde(with = "humantime_serde")]
    pub timeout_grace: Duration,
    /// How long an agent has to confirm a cancel.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// Attempts a job may take when its agent vanishes before a step starts.
    pub max_attempts: u32,
}

/// Resource size limits, in bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ResourcesSection {
    /// Largest source archive.
    pub max_source_bytes: u64,
    /// Largest artifact.
    pub max_artifact_bytes: u64,
    /// Most artifact bytes per job.
    pub max_job_artifact_bytes: u64,
    /// Largest JUnit report.
    pub max_test_report_bytes: u64,
}

impl Default for ResourcesSection {
    fn default() -> Self {
        let limits = ferry_resources::Limits::default();
        Self {
            max_source_bytes: limits.source_bytes,
            max_artifact_bytes: limits.artifact_bytes,
            max_job_artifact_bytes: limits.job_artifact_bytes,
            max_test_report_bytes: limits.test_report_bytes,
        }
    }
}

impl ResourcesSection {
    /// The limits the resource service enforces.
    pub fn limits(&self) -> ferry_resources::Limits {
        ferry_resources::Limits {
            source_bytes: self.max_source_bytes,
            artifact_bytes: self.max_artifact_bytes,
            job_artifact_bytes: self.max_job_artifact_bytes,
            test_report_bytes: self.max_test_report_bytes,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            data_dir: PathBuf::from("ferry-data"),
            database_url: None,
            tls: TlsConfig::default(),
            tokens: TokenConfig::default(),
            dispatch: DispatchSection::default(),
            resources: ResourcesSection::default(),
            mesh: MeshSection::default(),
            gateway: GatewaySection::default(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "ferry".to_owned(),
            listener_token_ttl: ferry_tokens::DEFAULT_LISTENER_TOKEN_TTL,
        }
    }
}

impl Default for DispatchSection {
    fn default() -> Self {
        let defaults = ferry_dispatch::DispatchConfig::default();
        Self {
            max_poll_wait: defaults.max_wait,
            lease: defaults.lease_duration,
            reap_interval: defaults.reap_interval,
            timeout_grace: defaults.timeout_grace,
            cancel_grace: defaults.cancel_grace,
            max_attempts: defaults.max_attempts,
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        Ok(config)
    }

    /// Explains the first thing wrong, if any.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.tls.certificate, &self.tls.private_key) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("tls.certificate and tls.private-key go together: set both or neither")
            }
            _ => {}
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            bail!(
                "database-url must start with sqlite: or postgres:// (got a URL of another kind)"
            );
        }
        let ttl = self.tokens.listener_token_ttl;
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(24 * 3600) {
            bail!("tokens.listener-token-ttl must be between 1m and 24h");
        }
        if self.tokens.issuer.is_empty() {
            bail!("tokens.issuer is empty");
        }
        self.validate_dispatch()?;
        self.validate_routes()
    }

    fn validate_dispatch(&self) -> anyhow::Result<()> {
        let dispatch = &self.dispatch;
        let within = |value: Duration, low: Duration, high: Duration| value >= low && value <= high;
        if !within(
            dispatch.max_poll_wait,
            Duration::from_secs(1),
            Duration::from_secs(600),
        ) {
            bail!("dispatch.max-poll-wait must be between 1s and 10m");
        }
        if !within(
            dispatch.lease,
            Duration::from_secs(1),
            Duration::from_secs(600),
        ) {
            bail!("dispatch.lease must be between 1s and 10m");
        }
        if !within(
            dispatch.reap_interval,
            Duration::from_millis(100),
            dispatch.lease,
        ) {
            bail!("dispatch.reap-interval must be between 100ms and dispatch.lease");
        }
        if dispatch.max_attempts == 0 || dispatch.max_attempts > 100 {
            bail!("dispatch.max-attempts must be between 1 and 100");
        }
        Ok(())
    }

    fn validate_routes(&self) -> anyhow::Result<()> {
        for (service, replicas) in &self.gateway.routes {
            if !ferry_proto::service_names::ALL.contains(&service.as_str()) {
                bail!(
                    "gateway.routes names {service:?}, which is not a ferry service (one of {})",
                    ferry_proto::service_names::ALL.join(", ")
                );
            }
            if replicas.is_empty() {
                bail!("gateway.routes.{service:?} lists no replica");
            }
            if let Some(bad) = replicas.iter().find(|url| !url.starts_with("https://")) {
                bail!(
                    "gateway.routes.{service:?}: {bad:?} must be an https:// URL (the mesh is mutual TLS)"
                );
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to the SQLite file in the data dir.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let path = std::path::absolute(self.data_dir.join("ferry.db"))
            .context("cannot resolve the data directory")?;
        Ok(format!("sqlite://{}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_defaults_fill_the_rest() {
        let config: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            data-dir = "/var/lib/ferry"
            [tokens]
            listener-token-ttl = "5m"
            "#,
        )
        .expect("parse");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.tokens.listener_token_ttl, Duration::from_secs(300));
        assert_eq!(config.tokens.issuer, "ferry");
        config.validate().expect("valid");
        assert_eq!(
            config.database_url().expect("url"),
            "sqlite:///var/lib/ferry/ferry.db"
        );
    }

    #[test]
    fn the_shipped_deployment_config_is_valid() {
        let config: Config = toml::from_str(include_str!("../../../deploy/ferry.toml"))
            .expect("deploy/ferry.toml parses");
        config.validate().expect("deploy/ferry.toml is valid");
        assert_eq!(
            config.gateway.routes.len(),
            ferry_proto::service_names::ALL.len()
        );
        assert!(
            config
                .database_url()
                .expect("url")
                .starts_with("postgres://")
        );
    }

    #[test]
    fn bad_routes_are_explained() {
        let config: Config =
            toml::from_str("[gateway.routes]\n\"ferry.v1.Nope\" = [\"https://127.0.0.1:1\"]\n")
                .expect("parse");
        let error = config.validate().expect_err("unknown service").to_string();
        assert!(error.contains("not a ferry service"), "{error}");
        let config: Config =
            toml::from_str("[gateway.routes]\n\"ferry.v1.JobService\" = [\"http://x:1\"]\n")
                .expect("parse");
        assert!(
            config
                .validate()
                .expect_err("plain http")
                .to_string()
                .contains("https://")
        );
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(
            toml::from_str::<Config>("lisen = \"x\"").is_err(),
            "unknown keys are refused"
        );
        let mut config = Config::default();
        config.tls.certificate = Some("cert.pem".into());
        assert!(
            config
                .validate()
                .expect_err("half tls")
                .to_string()
                .contains("go together")
        );
        let mut config = Config::default();
        config.tokens.listener_token_ttl = Duration::from_secs(5);
        assert!(
            config
                .validate()
                .expect_err("short ttl")
                .to_string()
                .contains("listener-token-ttl")
        );
        let config = Config {
            database_url: Some("mysql://x".into()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
