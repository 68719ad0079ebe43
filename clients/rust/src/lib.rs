//! The Rust client for ferry, shared by `ferry-agent`, `ferryctl`, the demo
//! and the benchmarks: a TLS channel to a server (or gateway) URL, a bearer
//! credential that can be swapped while calls are in flight, and the typed
//! service clients wrapped with it.
//!
//! Connections honour the usual proxy variables (see [`proxy`]):
//! `HTTPS_PROXY` for `https://` servers, `HTTP_PROXY` for `http://` ones,
//! `NO_PROXY` for hosts to reach directly.

pub mod proxy;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::registration_service_client::RegistrationServiceClient;
use ferry_proto::v1::resource_service_client::ResourceServiceClient;
use ferry_proto::v1::token_service_client::TokenServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 flow-control window of one stream the client receives.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 flow-control window of the whole connection.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

pub use proxy::{NoProxy, Proxy, ProxyConnector, ProxySettings};

/// What can go wrong reaching a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not an http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The connection could not be made.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The proxy settings are not usable.
    #[error("invalid proxy setting {reason}")]
    Proxy {
        /// Which variable, and why.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Where and how to reach a ferry server.
#[derive(Debug, Clone)]
pub struct ServerAddress {
    /// `https://host:port` (or `http://` for plaintext, tests only).
    pub url: String,
    /// PEM of the CA (or self-signed certificate) to trust; the public web
    /// PKI roots when `None`.
    pub ca_certificate_pem: Option<String>,
    /// How long to wait for the TCP and TLS handshake.
    pub connect_timeout: Duration,
    /// Which proxy to go through: the environment's (`HTTPS_PROXY`,
    /// `HTTP_PROXY`, `NO_PROXY`) when `None`.
    pub proxy: Option<ProxySettings>,
}

impl ServerAddress {
    /// An address with the default connect timeout (10 s).
    pub fn new(url: impl Into<String>, ca_certificate_pem: Option<String>) -> Self {
        Self {
            url: url.into(),
            ca_certificate_pem,
            connect_timeout: Duration::from_secs(10),
            proxy: None,
        }
    }

    /// The same address with explicit proxy settings instead of the
    /// environment's.
    pub fn with_proxy(mut self, proxy: ProxySettings) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The proxy the connection goes through, if any (`Display` shows
    /// `host:port` only, never credentials).
    pub fn proxy(&self) -> Result<Option<Proxy>> {
        let uri: http::Uri = self.url.parse().map_err(|_| Error::InvalidUrl {
            url: self.url.clone(),
            reason: "not a URL".to_owned(),
        })?;
        let settings = match &self.proxy {
            Some(settings) => settings.clone(),
            None => ProxySettings::from_env().map_err(|reason| Error::Proxy { reason })?,
        };
        Ok(settings.proxy_for(&uri).cloned())
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = self.url.parse().map_err(|_| invalid("not a URL"))?;
        let host = uri.host().ok_or_else(|| invalid("no host"))?.to_owned();
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|error| invalid(&error.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Keepalives let idle long polls survive NATs and load balancers.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            // Downloads (sources, artifacts, followed logs) are not held to
            // HTTP/2's default 64 KiB per round trip.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        match uri.scheme_str() {
            Some("https") => {
                let domain = host.trim_start_matches('[').trim_end_matches(']');
                let tls =
                    ferry_tls::client_config(self.ca_certificate_pem.as_deref(), Some(domain));
                endpoint = endpoint.tls_config(tls).map_err(|error| Error::Connect {
                    url: self.url.clone(),
                    source: error,
                })?;
            }
            Some("http") => {}
            _ => return Err(invalid("the scheme must be https (or http for plaintext)")),
        }
        Ok(endpoint)
    }

    /// Connects now, failing if the server cannot be reached.
    pub async fn connect(&self) -> Result<Channel> {
        ferry_tls::install_crypto_provider();
        let endpoint = self.endpoint()?;
        let connected = match self.proxy()? {
            Some(proxy) => {
                endpoint
                    .connect_with_connector(ProxyConnector::new(proxy))
                    .await
            }
            None => endpoint.connect().await,
        };
        connected.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })
    }

    /// A channel that connects on first use and reconnects by itself.
    pub fn connect_lazy(&self) -> Result<Channel> {
        ferry_tls::install_crypto_provider();
        let endpoint = self.endpoint()?;
        Ok(match self.proxy()? {
            Some(proxy) => endpoint.connect_with_connector_lazy(ProxyConnector::new(proxy)),
            None => endpoint.connect_lazy(),
        })
    }
}

/// A bearer credential added to every call; clones share it, so swapping the
/// token (a refreshed listener token) affects every client made from it.
#[derive(Clone, Default)]
pub struct Bearer(Arc<RwLock<Option<AsciiMetadataValue>>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Bearer(..)")
    }
}

impl Bearer {
    /// No credential yet.
    pub fn none() -> Self {
        Self::default()
    }

    /// A credential holding `token`.
    pub fn new(token: &str) -> std::result::Result<Self, tonic::Status> {
        let bearer = Self::default();
        bearer.set(token)?;
        Ok(bearer)
    }

    /// Replaces the token.
    pub fn set(&self, token: &str) -> std::result::Result<(), tonic::Status> {
        let value: AsciiMetadataValue = format!("Bearer {token}").parse().map_err(|_| {
            tonic::Status::invalid_argument("the token has characters a header cannot carry")
        })?;
        let mut value = value;
        value.set_sensitive(true);
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(value);
        }
        Ok(())
    }

    /// Forgets the token (the job ended).
    pub fn clear(&self) {
        if let Ok(mut slot) = self.0.write() {
            *slot = None;
        }
    }
}

impl Interceptor for Bearer {
    /// Adds the credential, and the current span's W3C trace context so
    /// that the server's spans join the caller's trace.
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        ferry_observability::propagation::inject_metadata(request.metadata_mut());
        if let Ok(slot) = self.0.read()
            && let Some(value) = slot.as_ref()
        {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel with a bearer credential (and trace-context propagation).
pub type Authorized = InterceptedService<Channel, Bearer>;

/// Largest message a ferry client decodes (logs pages, job lists).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The registration and administration client.
pub fn registration(channel: Channel, bearer: Bearer) -> RegistrationServiceClient<Authorized> {
    RegistrationServiceClient::with_interceptor(channel, bearer)
}

/// The token client (its one call needs no credential; the trace context
/// still travels).
pub fn tokens(channel: Channel) -> TokenServiceClient<Authorized> {
    TokenServiceClient::with_interceptor(channel, Bearer::none())
}

/// The job client.
pub fn jobs(channel: Channel, bearer: Bearer) -> JobServiceClient<Authorized> {
    JobServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(MAX_MESSAGE_SIZE)
}

/// The log client.
pub fn logs(channel: Channel, bearer: Bearer) -> LogServiceClient<Authorized> {
    LogServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(MAX_MESSAGE_SIZE)
}

/// The resource client: sources, test results and artifacts.
pub fn resources(channel: Channel, bearer: Bearer) -> ResourceServiceClient<Authorized> {
    ResourceServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
}

#[cfg(test)]
mod proxy_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in ["not a url", "ftp://example.com", "/relative"] {
            let error = ServerAddress::new(url, None).connect_lazy().expect_err(url);
            assert!(error.to_string().contains("invalid server URL"), "{error}");
        }
    }

    #[test]
    fn the_bearer_is_added_and_can_be_cleared() {
        let mut bearer = Bearer::new("abc").expect("token");
        let request = bearer.call(tonic::Request::new(())).expect("call");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|value| value.to_str().ok()),
            Some(Some("Bearer abc"))
        );
        bearer.clear();
        let request = bearer.call(tonic::Request::new(())).expect("call");
        assert!(request.metadata().get("authorization").is_none());
        assert!(Bearer::new("line\nbreak").is_err());
        assert_eq!(format!("{bearer:?}"), "Bearer(..)");
    }
}
