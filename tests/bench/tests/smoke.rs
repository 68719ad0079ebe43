//! A few seconds of `ferry-bench` against a ferryd it starts itself: the
//! debug binaries `cargo test --workspace` builds (ferryd must sit next to
//! ferry-bench in target/debug).

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs ferry-bench with `args`; its stdout and stderr once it succeeded.
fn bench(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(args)
        .output()
        .expect("ferry-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "ferry-bench failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    (stdout, stderr)
}

#[test]
fn smoke_throughput_every_job_ends_exactly_once() {
    let started = Instant::now();
    let (stdout, stderr) = bench(&[
        "throughput",
        "--agents",
        "10",
        "--jobs",
        "200",
        "--timeout",
        "60s",
    ]);
    // The tool checks it before it reports: every job id opened once and
    // completed once by the agents, and listed once, succeeded, by ListJobs.
    assert!(
        stderr.contains("every job ended exactly once"),
        "no exactly-once confirmation:\n{stderr}"
    );
    assert!(
        stdout.contains("| Throughput, jobs/s queued / dispatched / completed |"),
        "no table row:\n{stdout}"
    );
    eprintln!("smoke run took {:.1} s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn smoke_calls_measure_the_floor() {
    let (stdout, _) = bench(&[
        "calls",
        "--connections",
        "4",
        "--calls",
        "400",
        "--timeout",
        "60s",
    ]);
    let row = stdout
        .lines()
        .find(|line| line.starts_with("| One gRPC call over TLS"))
        .unwrap_or_else(|| panic!("no table row:\n{stdout}"));
    // ferryd's CPU per call was measured (its process is known).
    assert!(
        row.contains("CPU per call: ferryd ") && !row.contains("unknown"),
        "{row}"
    );
}
