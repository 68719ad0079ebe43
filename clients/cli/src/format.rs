//! Formatting helpers for table output: times in RFC 3339 UTC or relative to
//! now, short durations, enum names and aligned tables.

use ferry_proto::time::micros_from_timestamp;
use ferry_proto::v1::{AgentStatus, JobState, LogStream, StepState};

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Microseconds since the Unix epoch of an optional timestamp; `None` when
/// it is unset (or the epoch itself, which proto3 cannot tell from unset).
pub fn micros(timestamp: Option<&prost_types::Timestamp>) -> Option<i64> {
    timestamp
        .filter(|timestamp| timestamp.seconds != 0 || timestamp.nanos != 0)
        .map(micros_from_timestamp)
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic
/// Gregorian), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn rfc3339_parts(micros: i64) -> (String, i64) {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    (text, fraction)
}

/// RFC 3339 in UTC with milliseconds: `2025-01-02T03:04:05.678Z`.
pub fn rfc3339(micros: i64) -> String {
    let (text, fraction) = rfc3339_parts(micros);
    format!("{text}.{:03}Z", fraction / 1000)
}

/// RFC 3339 in UTC to the second: `2025-01-02T03:04:05Z`.
pub fn rfc3339_seconds(micros: i64) -> String {
    let (text, _) = rfc3339_parts(micros);
    format!("{text}Z")
}

/// How long ago `micros` was, seen at `now`: `3s ago`, `5m ago`, `2h ago`,
/// `4d ago`; `in 3s` for a time in the future.
pub fn relative(micros: i64, now: i64) -> String {
    let delta = now.saturating_sub(micros);
    let seconds = delta.unsigned_abs() / 1_000_000;
    let amount = match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    };
    if delta < 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A time for a table cell: relative to `now`, or `-` when unset.
pub fn relative_cell(micros: Option<i64>, now: i64) -> String {
    micros.map_or_else(|| "-".to_owned(), |micros| relative(micros, now))
}

/// A short duration: `850ms`, `4.2s`, `2m05s`, `1h02m`.
pub fn short_duration(micros: i64) -> String {
    let micros = micros.max(0);
    let millis = micros / 1000;
    let seconds = micros / MICROS_PER_SECOND;
    match seconds {
        0 => format!("{millis}ms"),
        1..60 => format!("{}.{}s", seconds, millis % 1000 / 100),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A size in bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `2.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Step up while the rounded value would print as 1024.0 or more.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A size in MiB with one decimal, for progress lines: `12.3 MiB`.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A test summary: `10 total, 8 passed, 1 failed, 1 skipped`.
pub fn test_counts(summary: &ferry_proto::v1::TestSummary) -> String {
    format!(
        "{} total, {} passed, {} failed, {} skipped",
        summary.total, summary.passed, summary.failed, summary.skipped
    )
}

/// The duration between two optional times, in microseconds.
pub fn between(start: Option<i64>, end: Option<i64>) -> Option<i64> {
    Some(end?.saturating_sub(start?))
}

/// A job state's name, as ferryctl prints and accepts it.
pub fn job_state(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Queued => "queued",
        JobState::Assigned => "assigned",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Canceled => "canceled",
    }
}

/// A step state's name.
pub fn step_state(state: StepState) -> &'static str {
    match state {
        StepState::Unspecified => "unknown",
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Canceled => "canceled",
    }
}

/// An agent status's name.
pub fn agent_status(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Unspecified => "unknown",
        AgentStatus::Offline => "offline",
        AgentStatus::Online => "online",
        AgentStatus::Busy => "busy",
    }
}

/// A log stream's name.
pub fn log_stream(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Unspecified => "unknown",
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "system",
    }
}

/// `k=v` pairs, sorted by key and joined with commas; `-` when empty.
pub fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = map
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if pairs.is_empty() {
        return "-".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

/// `-` for empty text, else the text.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A table with aligned columns, separated by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|header| (*header).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; control characters in cells become spaces so that every
    /// row stays on one line.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|cell| {
                cell.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect()
            })
            .collect();
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending with a line break.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|header| header.chars().count())
            .collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map_or("", String::as_str);
                if index + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            rfc3339_seconds(1_700_000_000_999_999),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339_seconds(951_782_400 * MICROS_PER_SECOND),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_seconds(4_102_444_799 * MICROS_PER_SECOND),
            "2099-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn unset_timestamps_are_none() {
        assert_eq!(micros(None), None);
        assert_eq!(micros(Some(&prost_types::Timestamp::default())), None);
        let set = prost_types::Timestamp {
            seconds: 2,
            nanos: 5_000,
        };
        assert_eq!(micros(Some(&set)), Some(2_000_005));
    }

    #[test]
    fn relative_times_pick_one_unit() {
        let now = 1_000_000 * MICROS_PER_SECOND;
        let ago = |seconds: i64| relative(now - seconds * MICROS_PER_SECOND, now);
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(60), "1m ago");
        assert_eq!(ago(3599), "59m ago");
        assert_eq!(ago(7200), "2h ago");
        assert_eq!(ago(3 * 86_400 + 5), "3d ago");
        assert_eq!(ago(-4), "in 4s");
        assert_eq!(relative_cell(None, now), "-");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(850_000), "850ms");
        assert_eq!(short_duration(4_250_000), "4.2s");
        assert_eq!(short_duration(125 * MICROS_PER_SECOND), "2m05s");
        assert_eq!(short_duration(3720 * MICROS_PER_SECOND), "1h02m");
        assert_eq!(short_duration(-5), "0ms");
        assert_eq!(between(Some(1), Some(5)), Some(4));
        assert_eq!(between(None, Some(5)), None);
    }

    #[test]
    fn sizes_are_short() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12_897_485), "12.3 MiB");
        assert_eq!(size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(mebibytes(0), "0.0 MiB");
        assert_eq!(mebibytes(12_897_485), "12.3 MiB");
        assert_eq!(mebibytes(40 * 1024 * 1024), "40.0 MiB");
        let summary = ferry_proto::v1::TestSummary {
            total: 10,
            passed: 8,
            failed: 1,
            skipped: 1,
            failed_tests: vec![],
            files: 2,
        };
        assert_eq!(
            test_counts(&summary),
            "10 total, 8 passed, 1 failed, 1 skipped"
        );
    }

    #[test]
    fn names_are_lowercase_words() {
        assert_eq!(job_state(JobState::Succeeded), "succeeded");
        assert_eq!(step_state(StepState::Skipped), "skipped");
        assert_eq!(agent_status(AgentStatus::Busy), "busy");
        assert_eq!(log_stream(LogStream::Stderr), "stderr");
    }

    #[test]
    fn pairs_are_sorted() {
        let map: std::collections::HashMap<String, String> = [("os", "linux"), ("arch", "arm64")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        assert_eq!(pairs(&map), "arch=arm64,os=linux");
        assert_eq!(pairs(&std::collections::HashMap::new()), "-");
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["ID", "NAME", "STATE"]);
        table.row(vec!["1".into(), "a-long-name".into(), "queued".into()]);
        table.row(vec!["22".into(), "b\nc".into(), "".into()]);
        assert_eq!(
            table.render(),
            "ID  NAME         STATE\n1   a-long-name  queued\n22  b c\n"
        );
        assert_eq!(Table::new(&["ONLY"]).render(), "ONLY\n");
    }
}
