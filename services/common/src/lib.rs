//! Plumbing every ferry service shares, so that each service crate holds
//! only its domain logic and a thin tonic adapter:
//!
//! - [`Error`]: the one error type of service domain code, mapped to a
//!   `tonic::Status` in exactly one place;
//! - [`validate`]: checks on names, environment variable names and sizes;
//! - [`events`]: events raised by one service and awaited by another;
//! - [`sealed`]: moving envelopes in and out of `ferry.v1.SealedEnvelope`;
//! - [`status_layer`]: the tower layer that reports oversized requests as
//!   RESOURCE_EXHAUSTED, as gRPC specifies.

pub mod events;
pub mod memo;
pub mod sealed;
pub mod status_layer;
pub mod validate;
pub mod wire;

mod error;

pub use error::{Error, Result, from_stream};
pub use events::{Event, Events};
pub use status_layer::StatusLayer;
