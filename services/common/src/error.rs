//! The error of service domain code and its one mapping to gRPC status.

use tonic::{Code, Status};

/// What a service call can fail with. Messages are lowercase, name the
/// offending field, and never carry a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request or one of its fields is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The named thing does not exist (or the caller may not know it does).
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller is authenticated but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's credential does not (or no longer) hold.
    #[error("{0}")]
    Unauthenticated(String),
    /// The thing is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The service cannot serve the call now; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A stored or server-side invariant broke; details are logged.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_store::Error),
    /// Sealing or opening an envelope failed.
    #[error(transparent)]
    Envelope(#[from] ferry_envelope::Error),
}

/// `Result` with the service [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::TooLarge(message) => Status::resource_exhausted(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                Status::internal("internal error; see the server's log")
            }
            Error::Store(error) => store_status(error),
            Error::Envelope(error) => {
                tracing::error!(error = %error, "envelope error");
                Status::internal("could not seal the payload for this agent")
            }
        }
    }
}

fn store_status(error: ferry_store::Error) -> Status {
    use ferry_store::Error as Store;
    match error {
        Store::NotFound(what) => Status::not_found(format!("{what} not found")),
        Store::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        Store::Conflict(message) => Status::failed_precondition(message),
        Store::Invalid(message) => Status::invalid_argument(message),
        other => {
            tracing::error!(error = %other, "store error");
            Status::new(Code::Unavailable, "the store is unavailable; retry later")
        }
    }
}

/// Maps an error read from a client stream: tonic reports an oversized
/// message as OUT_OF_RANGE, gRPC says RESOURCE_EXHAUSTED.
pub fn from_stream(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_code_and_internal_details_stay_inside() {
        let cases = [
            (Error::InvalidArgument("bad".into()), Code::InvalidArgument),
            (Error::TooLarge("big".into()), Code::ResourceExhausted),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Unavailable("x".into()), Code::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        let internal = Status::from(Error::Internal("secret detail".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret detail"));
        let oversized = from_stream(Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        ));
        assert_eq!(oversized.code(), Code::ResourceExhausted);
    }
}
