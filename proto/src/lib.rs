//! ferry's wire contracts: the `ferry.v1` protobuf package, generated from
//! `proto/ferry/v1/*.proto` at build time.
//!
//! Every other language's client is generated from the same files; this
//! crate only adds the encoded descriptor set for gRPC server reflection and
//! a few conversions that every Rust caller needs.

#![allow(clippy::all, missing_docs)]

/// The `ferry.v1` package.
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// The encoded `FileDescriptorSet` of every ferry proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferry_descriptor.bin"));

/// Fully qualified service names, as used in gRPC paths and health checks.
pub mod service_names {
    /// `ferry.v1.RegistrationService`
    pub const REGISTRATION: &str = "ferry.v1.RegistrationService";
    /// `ferry.v1.TokenService`
    pub const TOKEN: &str = "ferry.v1.TokenService";
    /// `ferry.v1.JobService`
    pub const JOB: &str = "ferry.v1.JobService";
    /// `ferry.v1.LogService`
    pub const LOG: &str = "ferry.v1.LogService";
    /// `ferry.v1.ResourceService`
    pub const RESOURCE: &str = "ferry.v1.ResourceService";
    /// Every ferry service.
    pub const ALL: &[&str] = &[REGISTRATION, TOKEN, JOB, LOG, RESOURCE];
}

/// Conversions between protobuf well-known types and std/system types.
pub mod time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A timestamp from microseconds since the Unix epoch.
    pub fn timestamp_from_micros(micros: i64) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
        }
    }

    /// Microseconds since the Unix epoch of a timestamp (saturating).
    pub fn micros_from_timestamp(timestamp: &prost_types::Timestamp) -> i64 {
        timestamp
            .seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(timestamp.nanos) / 1_000)
    }

    /// Microseconds since the Unix epoch, now.
    pub fn now_micros() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// The timestamp of now.
    pub fn now() -> prost_types::Timestamp {
        timestamp_from_micros(now_micros())
    }

    /// A std duration from a protobuf duration; negative becomes zero.
    pub fn duration_from_proto(duration: &prost_types::Duration) -> Duration {
        if duration.seconds < 0 || duration.nanos < 0 {
            return Duration::ZERO;
        }
        Duration::new(duration.seconds as u64, duration.nanos as u32)
    }

    /// A protobuf duration from a std duration.
    pub fn duration_to_proto(duration: Duration) -> prost_types::Duration {
        prost_types::Duration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            nanos: duration.subsec_nanos() as i32,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn timestamps_round_trip_through_micros() {
            for micros in [
                0,
                1,
                999_999,
                1_000_000,
                1_763_000_000_123_456,
                -1,
                -1_500_000,
            ] {
                assert_eq!(
                    micros_from_timestamp(&timestamp_from_micros(micros)),
                    micros
                );
            }
            let negative = timestamp_from_micros(-1);
            assert_eq!((negative.seconds, negative.nanos), (-1, 999_999_000));
        }

        #[test]
        fn negative_durations_become_zero() {
            let negative = prost_types::Duration {
                seconds: -5,
                nanos: 0,
            };
            assert_eq!(duration_from_proto(&negative), Duration::ZERO);
            let back = duration_from_proto(&duration_to_proto(Duration::from_millis(1500)));
            assert_eq!(back, Duration::from_millis(1500));
        }
    }
}
