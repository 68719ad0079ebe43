//! Bodies passed through frame by frame: the request body checked against
//! the message size limit as it flows, the response body that turns an
//! upstream failure into gRPC trailers, and the load tracking that counts a
//! call as open until its response stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tower::load::TrackCompletion;
use tower::load::pending_requests::Handle;

use crate::grpc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong on the client's side of one call, shared between its
/// request body, its response body and the replica that serves it.
#[derive(Debug, Default)]
pub(crate) struct CallFault {
    oversized: AtomicBool,
    oversized_length: AtomicU64,
    client_failed: AtomicBool,
    notify: Notify,
}

impl CallFault {
    /// The length of the message that was too large, once one was.
    pub(crate) fn oversized(&self) -> Option<u64> {
        self.oversized
            .load(Ordering::Acquire)
            .then(|| self.oversized_length.load(Ordering::Acquire))
    }

    /// Whether the failure is the client's: its body broke or was too large.
    /// A replica is not blamed for those.
    pub(crate) fn is_client_fault(&self) -> bool {
        self.client_failed.load(Ordering::Acquire) || self.oversized.load(Ordering::Acquire)
    }

    /// Resolves once a message turned out too large.
    pub(crate) async fn wait_oversized(&self) -> u64 {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(length) = self.oversized() {
                return length;
            }
            notified.await;
        }
    }

    fn set_oversized(&self, length: u64) {
        self.oversized_length.store(length, Ordering::Release);
        self.oversized.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Follows gRPC's length-prefixed framing (1 flag byte, 4 length bytes,
/// then the message) across data frames of any size, without keeping any
/// message bytes.
#[derive(Debug, Default)]
pub(crate) struct MessageLengths {
    prefix: [u8; 5],
    filled: usize,
    remaining: u64,
}

impl MessageLengths {
    /// Feeds the next data chunk; the length of the first message above
    /// `limit` is an error.
    pub(crate) fn feed(&mut self, mut data: &[u8], limit: u64) -> Result<(), u64> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.filled).min(data.len());
            self.prefix[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 5 {
                self.filled = 0;
                let [_, a, b, c, d] = self.prefix;
                let length = u64::from(u32::from_be_bytes([a, b, c, d]));
                if length > limit {
                    return Err(length);
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

/// A request body passed through as it comes, refusing a message larger
/// than the limit as soon as its length prefix arrives.
pub(crate) struct LimitedBody<B> {
    inner: B,
    limit: u64,
    lengths: MessageLengths,
    fault: Arc<CallFault>,
    failed: bool,
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, limit: usize, fault: Arc<CallFault>) -> Self {
        Self {
            inner,
            limit: limit as u64,
            lengths: MessageLengths::default(),
            fault,
            failed: false,
        }
    }
}

/// The error that ends a request body whose message is too large.
#[derive(Debug, thiserror::Error)]
#[error("request message of {length} bytes is larger than the gateway's limit of {limit} bytes")]
pub(crate) struct MessageTooLarge {
    pub(crate) length: u64,
    pub(crate) limit: u64,
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(context)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(length) = this.lengths.feed(data, this.limit)
                {
                    this.failed = true;
                    this.fault.set_oversized(length);
                    let error = MessageTooLarge {
                        length,
                        limit: this.limit,
                    };
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.failed = true;
                this.fault.client_failed.store(true, Ordering::Release);
                Poll::Ready(Some(Err(error.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream's response body passed through as it comes. When the
/// upstream stream breaks, the client gets trailers saying so
/// (`RESOURCE_EXHAUSTED` when it was the request's size, `UNAVAILABLE`
/// otherwise) instead of a reset stream.
pub(crate) struct ResponseBody {
    inner: Body,
    fault: Arc<CallFault>,
    service: Arc<str>,
    done: bool,
}

impl ResponseBody {
    pub(crate) fn new(inner: Body, fault: Arc<CallFault>, service: Arc<str>) -> Self {
        Self {
            inner,
            fault,
            service,
            done: false,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(context)) {
            Some(Err(error)) => {
                this.done = true;
                let status = match this.fault.oversized() {
                    Some(length) => Status::resource_exhausted(format!(
                        "request message of {length} bytes is larger than the gateway's limit"
                    )),
                    None => Status::unavailable(format!(
                        "the {} replica broke off the stream: {}",
                        this.service,
                        error.message()
                    )),
                };
                Poll::Ready(Some(Ok(Frame::trailers(grpc::status_trailers(&status)))))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a call as pending (the balancer's load) until its response body
/// is finished or dropped, so open streams and long polls weigh on their
/// replica for as long as they last.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CompleteOnBodyEnd;

impl TrackCompletion<Handle, http::Response<Body>> for CompleteOnBodyEnd {
    type Output = http::Response<Body>;

    fn track_completion(&self, handle: Handle, response: http::Response<Body>) -> Self::Output {
        response.map(|inner| {
            Body::new(Tracked {
                inner,
                _handle: handle,
            })
        })
    }
}

struct Tracked {
    inner: Body,
    _handle: Handle,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7_u8, length as usize));
        bytes
    }

    #[test]
    fn lengths_are_followed_across_any_chunking() {
        let mut stream = Vec::new();
        for length in [0, 3, 100, 0, 1024] {
            stream.extend(message(length));
        }
        for chunk in [1, 2, 4, 5, 6, 7, 1000, stream.len()] {
            let mut lengths = MessageLengths::default();
            for piece in stream.chunks(chunk) {
                lengths.feed(piece, 1024).expect("all within the limit");
            }
            assert_eq!((lengths.filled, lengths.remaining), (0, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_refused_at_its_prefix() {
        let mut stream = message(10);
        stream.extend(message(11));
        for chunk in [1, 3, 5, 16, stream.len()] {
            let mut lengths = MessageLengths::default();
            let refused = stream
                .chunks(chunk)
                .map(|piece| lengths.feed(piece, 10))
                .find_map(Result::err);
            assert_eq!(refused, Some(11), "chunk {chunk}");
        }
        // The prefix alone is enough: no message byte needs to arrive.
        let mut lengths = MessageLengths::default();
        assert_eq!(lengths.feed(&[0, 0, 0, 1, 0], 255), Err(256));
    }

    #[tokio::test]
    async fn an_oversized_message_ends_the_body_and_marks_the_call() {
        use http_body_util::BodyExt;
        let mut bytes = message(4);
        bytes.extend(message(64));
        let fault = Arc::new(CallFault::default());
        let inner = http_body_util::Full::new(Bytes::from(bytes));
        let body = LimitedBody::new(inner, 16, fault.clone());
        let error = body.collect().await.expect_err("too large");
        assert!(error.to_string().contains("64 bytes is larger"), "{error}");
        assert_eq!(fault.oversized(), Some(64));
        assert!(fault.is_client_fault());
        assert_eq!(fault.wait_oversized().await, 64);
    }
}
