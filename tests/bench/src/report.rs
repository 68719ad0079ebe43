//! Statistics and the markdown report: the machine, the versions, the exact
//! command, and one table row per figure.

use std::time::Duration;

use crate::server::status_kib;

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// Under which conditions.
    pub setup: String,
    /// The measured value(s).
    pub result: String,
    /// The goal, in words.
    pub goal: String,
    /// Whether the goal is met (`None`: no goal or not measurable).
    pub met: Option<bool>,
}

impl Row {
    /// The markdown line.
    pub fn markdown(&self) -> String {
        let met = match self.met {
            Some(true) => "✅ met",
            Some(false) => "❌ missed",
            None => "—",
        };
        format!(
            "| {} | {} | {} | {} | {} |",
            self.figure, self.setup, self.result, self.goal, met
        )
    }
}

/// The table's header.
pub const HEADER: &str = "| figure | setup | measured | goal | status |\n|---|---|---|---|---|";

/// The `q` quantile (0..=1) of sorted values, nearest-rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles of one run.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// Of unsorted samples.
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        Percentiles {
            p50: quantile(samples, 0.50),
            p95: quantile(samples, 0.95),
            p99: quantile(samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }

    /// Each statistic's median over runs.
    pub fn median_of(runs: &[Percentiles]) -> Percentiles {
        let pick = |get: fn(&Percentiles) -> Duration| {
            let mut values: Vec<Duration> = runs.iter().map(get).collect();
            values.sort_unstable();
            values
                .get(values.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or_default()
        };
        Percentiles {
            p50: pick(|p| p.p50),
            p95: pick(|p| p.p95),
            p99: pick(|p| p.p99),
            max: pick(|p| p.max),
        }
    }

    /// `0.81 / 1.20 / 1.90 / 4.10 ms`.
    pub fn display(&self) -> String {
        format!(
            "{} / {} / {} / {} ms",
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// The median of values (lower median for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// A CPU time in milliseconds ("1.23 ms"), or "unknown".
pub fn ms_note(ms: Option<f64>) -> String {
    ms.map_or_else(|| "unknown".to_owned(), |ms| format!("{ms:.2} ms"))
}

/// A CPU time in microseconds ("44 µs"), or "unknown".
pub fn micros_note(micros: Option<f64>) -> String {
    micros.map_or_else(|| "unknown".to_owned(), |micros| format!("{micros:.0} µs"))
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "median of 3 runs (min–max …)" or "1 run".
pub fn runs_note(values: &[f64], unit: &str) -> String {
    if values.len() <= 1 {
        return "1 run".to_owned();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "median of {} runs (range {}–{}{unit})",
        values.len(),
        thousands(min),
        thousands(max)
    )
}

/// The machine, versions and command, as markdown.
pub fn environment(command: &str, ferryd_version: Option<String>, database: &str) -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = status_kib(&meminfo, "MemTotal:")
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "- machine: {cpus} CPUs (nproc), {cpu}, {memory} memory, Linux {kernel}, load average before the run {load}\n\
         - versions: ferry-bench {} ({} build, {}), {}; database {database}\n\
         - command: `{command}`",
        env!("CARGO_PKG_VERSION"),
        env!("FERRY_BENCH_PROFILE"),
        env!("FERRY_BENCH_RUSTC"),
        ferryd_version.unwrap_or_else(|| "ferryd (external server)".to_owned()),
    )
}

/// The command line as typed (arguments with spaces quoted).
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(index, arg)| {
            let arg = if index == 0 {
                std::path::Path::new(&arg)
                    .file_name()
                    .map_or(arg.clone(), |name| name.to_string_lossy().into_owned())
            } else {
                arg
            };
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        samples.reverse();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn medians_and_numbers_read_well() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.0);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(runs_note(&[1.0], "/s"), "1 run");
        assert!(runs_note(&[1000.0, 3000.0, 2000.0], "/s").contains("1,000–3,000/s"));
    }
}
