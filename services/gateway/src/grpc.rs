//! The little of gRPC's wire conventions the gateway needs: paths,
//! `grpc-timeout`, idempotency, and statuses as HTTP responses.

use std::time::Duration;

use http::HeaderMap;
use tonic::Status;
use tonic::body::Body;

/// `grpc.health.v1.Health`, answered by the gateway itself.
pub(crate) const HEALTH: &str = "grpc.health.v1.Health";
/// `grpc.reflection.v1.ServerReflection`, answered by the gateway itself.
pub(crate) const REFLECTION: &str = "grpc.reflection.v1.ServerReflection";

/// Splits `/pkg.Service/Method` into the service and the method.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// A plausible gRPC service name: dotted identifiers, e.g.
/// `ferry.v1.JobService`.
pub(crate) fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        })
}

/// The services the gateway answers itself.
pub(crate) fn is_local_service(service: &str) -> bool {
    service == HEALTH || service == REFLECTION
}

/// Whether a call may be sent again to another replica when the first one
/// failed before answering: methods whose name starts with `Get` or `List`,
/// and everything of `grpc.health.v1.Health`. They must have a single
/// request message (unary or server-streaming): the gateway holds that
/// message (at most `max_request_bytes`) to send it again.
pub fn is_idempotent(service: &str, method: &str) -> bool {
    service.starts_with("grpc.health.") || method.starts_with("Get") || method.starts_with("List")
}

/// The call's deadline from its `grpc-timeout` header (`1-8 digits` and a
/// unit: H, M, S, m, u, n), if it has a valid one.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if !(2..=9).contains(&value.len()) {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A trailers-only gRPC response carrying `status`.
pub(crate) fn status_response(status: Status) -> http::Response<Body> {
    status.into_http()
}

/// The trailers that end a stream with `status`.
pub(crate) fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    }
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ferry.v1.JobService/PollJob"),
            Some(("ferry.v1.JobService", "PollJob"))
        );
        for bad in [
            "",
            "/",
            "ferry.v1.JobService/PollJob",
            "/a",
            "/a/",
            "//b",
            "/a/b/c",
        ] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn service_names_are_dotted_identifiers() {
        assert!(is_service_name("ferry.v1.JobService"));
        assert!(is_service_name("Plain"));
        for bad in ["", "a..b", ".a", "a/b", "a b", "a."] {
            assert!(!is_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn idempotent_methods_are_gets_lists_and_health() {
        assert!(is_idempotent("ferry.v1.JobService", "GetJob"));
        assert!(is_idempotent("ferry.v1.JobService", "ListJobs"));
        assert!(is_idempotent("ferry.v1.TokenService", "GetListenerToken"));
        assert!(is_idempotent("grpc.health.v1.Health", "Check"));
        assert!(!is_idempotent("ferry.v1.JobService", "QueueJob"));
        assert!(!is_idempotent("ferry.v1.JobService", "PollJob"));
        assert!(!is_idempotent("ferry.v1.LogService", "StreamLogs"));
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_reject_garbage() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().expect("header"));
            grpc_timeout(&headers)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_become_trailers_only_responses_and_trailers() {
        let response = status_response(Status::unavailable("no healthy replica of x"));
        assert_eq!(response.status(), http::StatusCode::OK);
        let headers = response.headers();
        assert_eq!(
            headers.get("grpc-status").map(|value| value.as_bytes()),
            Some(&b"14"[..])
        );
        assert!(headers.get("content-type").is_some());
        let trailers = status_trailers(&Status::resource_exhausted("too big"));
        assert_eq!(
            trailers.get("grpc-status").map(|value| value.as_bytes()),
            Some(&b"8"[..])
        );
        assert_eq!(
            trailers.get("grpc-message").map(|value| value.as_bytes()),
            Some(&b"too%20big"[..])
        );
    }
}
