//! What masking costs per log line: ferry-agent passes every line of a
//! step's output through [`Masker::mask`] before it leaves the machine.
//!
//! 1,000 lines of ~90 bytes like ferry-bench's log text (a compiler's
//! progress), one in 100 printing the secret, masked by a `Masker` for one
//! secret (its value, lines and encodings). Criterion prints lines/s.
//!
//! Run with `cargo bench -p ferry-agent --bench masking`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_agent::masking::Masker;

const SECRET: &str = "bench-secret-3f9a1c2e7d5b4a60";

fn lines() -> Vec<String> {
    (1..=1000u64)
        .map(|n| {
            if n % 100 == 0 {
                format!("{n:>9} uploading with token {SECRET} to the artifact store")
            } else {
                format!(
                    "{n:>9}    Compiling crate-{} v0.{}.{} (/work/src/crates/crate-{})",
                    n % 997,
                    n % 31,
                    n % 7,
                    n % 997
                )
            }
        })
        .collect()
}

fn masking(c: &mut Criterion) {
    let masker = Masker::new([SECRET]);
    let lines = lines();
    let masked = lines
        .iter()
        .filter(|line| masker.mask(line).contains("***"))
        .count();
    assert_eq!(masked, 10, "every line with the secret is masked");
    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("1000_lines", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(masker.mask(black_box(line)));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
