//! Telemetry set-up for every ferry binary: a tracing subscriber writing
//! human-readable or JSON lines to stderr, filtered by `FERRY_LOG` (same
//! syntax as `RUST_LOG`; default `info`). OpenTelemetry export joins here.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use human or json")),
        }
    }
}

/// Flushes telemetry when dropped; keep it alive for the program's life.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Guard(());

/// Installs the subscriber; `default_filter` applies when `FERRY_LOG` is
/// unset. Installing twice is harmless (the second is ignored).
pub fn init(format: LogFormat, default_filter: &str) -> Guard {
    let filter =
        EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Guard(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
