//! Small helpers for gRPC calls: one-line error descriptions and retries.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use ferry_envelope::{Envelope, Opener};
use ferry_proto::v1::SealedEnvelope;
use tonic::{Code, Status};

use crate::backoff::{Backoff, seconds};

/// A one-line description of a failed call: its code and message (never the
/// metadata, which may echo headers).
pub fn describe(status: &Status) -> String {
    let mut text = format!("{:?}", status.code()).to_lowercase();
    let message = status.message().trim();
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(message);
    }
    // Transport errors keep the useful part ("connection refused") in
    // their sources.
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let cause = error.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = error.source();
    }
    text.to_lowercase()
}

/// Whether the call may succeed when tried again: the server could not be
/// reached, was overloaded, or the call ran out of time.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown
    )
}

/// Opens an envelope sealed to this agent with `context`.
pub fn open_sealed(
    opener: &Opener,
    context: &[u8],
    sealed: SealedEnvelope,
) -> anyhow::Result<ferry_envelope::Plaintext> {
    let envelope = Envelope::from_parts(
        sealed.version,
        &sealed.ephemeral_public_key,
        &sealed.nonce,
        sealed.ciphertext,
    )
    .context("malformed envelope")?;
    opener
        .open_owned(context, envelope)
        .context("the envelope does not open")
}

/// The context of a renewed job token sealed to an agent:
/// `"ferry/v1/job-token/" + job_id + "/" + agent_id`.
pub fn job_token_context(job_id: &str, agent_id: &str) -> Vec<u8> {
    format!("ferry/v1/job-token/{job_id}/{agent_id}").into_bytes()
}

/// Calls `call` until it succeeds, fails with a non-transient error, or
/// `attempts` calls were made, waiting with backoff in between.
pub async fn with_retries<T, F, Fut>(what: &str, attempts: u32, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if attempt < attempts && is_transient(&status) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    call = what,
                    attempt,
                    error = %describe(&status),
                    retry_in = %seconds(delay),
                    "call failed, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_one_lowercase_line_without_metadata() {
        let mut status = Status::unavailable("Connection Refused");
        status.metadata_mut().insert(
            "authorization",
            "Bearer secret-token".parse().expect("value"),
        );
        assert_eq!(describe(&status), "unavailable: connection refused");
        assert_eq!(describe(&Status::internal("")), "internal");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_only_up_to_the_limit() {
        let mut calls = 0;
        let result: Result<(), Status> = with_retries("test", 3, || {
            calls += 1;
            async { Err(Status::unavailable("down")) }
        })
        .await;
        assert_eq!(
            result.map_err(|status| status.code()),
            Err(Code::Unavailable)
        );
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result: Result<(), Status> = with_retries("test", 3, || {
            calls += 1;
            async { Err(Status::permission_denied("no")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);

        let mut calls = 0;
        let result = with_retries("test", 3, || {
            calls += 1;
            let outcome = if calls < 2 {
                Err(Status::unavailable("down"))
            } else {
                Ok(calls)
            };
            async move { outcome }
        })
        .await;
        assert_eq!(result.map_err(|status| status.code()), Ok(2));
    }
}
