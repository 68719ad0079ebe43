//! Reports oversized requests as RESOURCE_EXHAUSTED.
//!
//! tonic refuses a request message above the decoding limit before the
//! handler runs, with OUT_OF_RANGE in a trailers-only response; the gRPC
//! spec says RESOURCE_EXHAUSTED, which is what clients retry on (or not).
//! This layer rewrites that one status. Streamed messages past the limit are
//! mapped by the handlers with [`crate::error::from_stream`].

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLayer;

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner }
    }
}

/// The service [`StatusLayer`] makes.
#[derive(Debug, Clone)]
pub struct StatusService<S> {
    inner: S,
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for StatusService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            let oversized = headers
                .get("grpc-status")
                .is_some_and(|status| status == OUT_OF_RANGE)
                && headers
                    .get("grpc-message")
                    .and_then(|message| message.to_str().ok())
                    .is_some_and(|message| {
                        message.contains("too%20large") || message.contains("too large")
                    });
            if oversized {
                headers.insert("grpc-status", RESOURCE_EXHAUSTED);
            }
            Ok(response)
        })
    }
}
