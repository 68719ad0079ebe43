//! The connection to a server and the translation of gRPC errors into one
//! readable line.

use std::error::Error as _;

use anyhow::Context;
use ferry_client::{Authorized, Bearer, ServerAddress};
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::registration_service_client::RegistrationServiceClient;
use ferry_proto::v1::resource_service_client::ResourceServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::config::Settings;

/// The typed clients of one server, all carrying the same PAT.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server URL, for error messages.
    pub url: String,
    /// Pools, agents and administrators.
    pub registration: RegistrationServiceClient<Authorized>,
    /// Jobs.
    pub jobs: JobServiceClient<Authorized>,
    /// Logs.
    pub logs: LogServiceClient<Authorized>,
    /// Sources and artifacts.
    pub resources: ResourceServiceClient<Authorized>,
}

/// The resource client (sources, test results and artifacts) with the
/// bearer credential. Messages are chunks of at most 1 MiB; the limit is
/// the one the other ferry clients decode.
///
/// Built here rather than with `ferry_client` while that crate is being
/// changed; it is the same client.
pub fn resources(channel: Channel, bearer: Bearer) -> ResourceServiceClient<Authorized> {
    ResourceServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(ferry_client::MAX_MESSAGE_SIZE)
}

impl Client {
    /// Clients over an existing channel.
    pub fn new(url: impl Into<String>, channel: Channel, bearer: Bearer) -> Self {
        Self {
            url: url.into(),
            registration: ferry_client::registration(channel.clone(), bearer.clone()),
            jobs: ferry_client::jobs(channel.clone(), bearer.clone()),
            logs: ferry_client::logs(channel.clone(), bearer.clone()),
            resources: resources(channel, bearer),
        }
    }

    /// Reads the CA certificate, connects and attaches the token.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let ca_pem = match &settings.ca_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read CA certificate {}", path.display()))?,
            ),
            None => None,
        };
        // The token is never part of the error: only why it was refused.
        let bearer = Bearer::new(&settings.token).map_err(|_| {
            anyhow::anyhow!("invalid token: it has characters an HTTP header cannot carry")
        })?;
        let channel = ServerAddress::new(settings.url.clone(), ca_pem)
            .connect()
            .await
            .map_err(|error| connect_error(&settings.url, &error))?;
        Ok(Self::new(settings.url.clone(), channel, bearer))
    }

    /// Turns a call's status into a readable error.
    pub fn error(&self, status: &tonic::Status) -> anyhow::Error {
        anyhow::anyhow!(status_message(status, &self.url))
    }
}

/// One line for a connection failure, with the innermost causes.
fn connect_error(url: &str, error: &ferry_client::Error) -> anyhow::Error {
    match error {
        ferry_client::Error::Connect { source, .. } => {
            let mut causes: Vec<String> = Vec::new();
            let mut next: Option<&dyn std::error::Error> = source.source();
            while let Some(cause) = next {
                let text = cause.to_string();
                if !causes.iter().any(|seen| seen.contains(&text)) {
                    causes.push(text);
                }
                next = cause.source();
            }
            if causes.is_empty() {
                causes.push(source.to_string());
            }
            anyhow::anyhow!("cannot reach {url}: {}", causes.join(": "))
        }
        // An invalid URL or proxy setting: the message says which.
        other => anyhow::anyhow!(other.to_string()),
    }
}

/// One readable, lowercase line for a failed call.
pub fn status_message(status: &tonic::Status, url: &str) -> String {
    let detail = status.message().trim();
    let detail = if detail.is_empty() {
        status.code().description().to_owned()
    } else {
        detail.to_owned()
    };
    match status.code() {
        Code::Unauthenticated => format!("the server refused the token: {detail}"),
        Code::PermissionDenied => format!("permission denied: {detail}"),
        Code::NotFound => format!("not found: {detail}"),
        Code::AlreadyExists => format!("already exists: {detail}"),
        Code::InvalidArgument | Code::OutOfRange => format!("invalid request: {detail}"),
        Code::FailedPrecondition => format!("not possible now: {detail}"),
        Code::Unavailable => format!("cannot reach {url}: {detail}"),
        Code::DeadlineExceeded => format!("the server did not answer in time: {detail}"),
        Code::ResourceExhausted => format!("the server is overloaded or a limit was hit: {detail}"),
        Code::Unimplemented => format!("the server at {url} does not support this call: {detail}"),
        Code::Cancelled => format!("the call was canceled: {detail}"),
        Code::Aborted => format!("the call was aborted, try again: {detail}"),
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            format!("server error: {detail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    const URL: &str = "https://ferry:8443";

    #[test]
    fn statuses_become_one_line() {
        let cases = [
            (
                Status::unauthenticated("token expired"),
                "the server refused the token: token expired",
            ),
            (
                Status::permission_denied("not an owner"),
                "permission denied: not an owner",
            ),
            (Status::not_found("job x"), "not found: job x"),
            (
                Status::unavailable("connection reset"),
                "cannot reach https://ferry:8443: connection reset",
            ),
            (
                Status::invalid_argument("bad pool name"),
                "invalid request: bad pool name",
            ),
            (Status::internal("boom"), "server error: boom"),
        ];
        for (status, expected) in cases {
            assert_eq!(status_message(&status, URL), expected);
        }
        let empty = status_message(&Status::new(Code::PermissionDenied, ""), URL);
        assert!(empty.starts_with("permission denied: "), "{empty}");
        assert!(empty.len() > "permission denied: ".len(), "{empty}");
    }

    #[tokio::test]
    async fn unreachable_servers_are_named() {
        let settings = Settings {
            url: "http://127.0.0.1:1".to_owned(),
            token: "t".to_owned(),
            ca_cert: None,
        };
        let error = Client::connect(&settings)
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            error
                .to_string()
                .starts_with("cannot reach http://127.0.0.1:1: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn bad_tokens_and_missing_certificates_are_explained() {
        let mut settings = Settings {
            url: "https://127.0.0.1:1".to_owned(),
            token: "secret\nwith a line break".to_owned(),
            ca_cert: None,
        };
        let error = Client::connect(&settings).await.expect_err("bad token");
        assert!(error.to_string().starts_with("invalid token"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
        settings.ca_cert = Some("/nonexistent/ca.pem".into());
        let error = Client::connect(&settings).await.expect_err("no CA file");
        assert!(
            error
                .to_string()
                .contains("cannot read CA certificate /nonexistent/ca.pem"),
            "{error}"
        );
    }
}
