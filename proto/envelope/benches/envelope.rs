//! Envelope v1 micro-benchmarks: what sealing and opening cost.
//!
//! - `job/*`: a typical job (4 KiB plaintext) in its real context, sealed
//!   with a cached [`RecipientSealer`] (what the server does per dispatch:
//!   one fixed-base and one variable-base X25519 multiplication, HKDF,
//!   XChaCha20-Poly1305) and opened with an [`Opener`] (whose `dh2` is
//!   cached). `job/seal_uncached` adds the `X25519(S, R)` a cache miss costs.
//!   Goal: seal and open ≤ 150 µs each.
//! - `bulk/*`: 1 MiB and 16 MiB (the largest envelope) sealed and opened
//!   (`open` copies the ciphertext first, `open_owned` decrypts in the
//!   envelope's buffer as the agent does); criterion prints the
//!   throughput. Goal: ≥ 800 MiB/s.
//!
//! Run with `cargo bench -p ferry-envelope --bench envelope`; see
//! BENCHMARKS.md for measured figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_envelope::{Opener, Sealer, SecretKey, job_context};

const JOB_ID: &str = "3f2c7a9e-5b1d-4e8a-9c0f-6d2b8e4a1c35";
const AGENT_ID: &str = "a41e6c2d-7f3b-4d9a-8e15-0c9b2f7d6e48";
/// A typical sealed job: steps, variables, secrets and a job token.
const JOB_LEN: usize = 4 * 1024;
const MIB: usize = 1024 * 1024;

struct Keys {
    sealer: Sealer,
    agent_secret: SecretKey,
}

fn keys() -> Keys {
    Keys {
        sealer: Sealer::new(SecretKey::from_bytes([7u8; 32])),
        agent_secret: SecretKey::from_bytes([9u8; 32]),
    }
}

/// Deterministic, incompressible-looking bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn job(c: &mut Criterion) {
    let keys = keys();
    let agent_public = keys.agent_secret.public_key();
    let Ok(to_agent) = keys.sealer.sealer_for(&agent_public) else {
        panic!("the agent key is usable");
    };
    let Ok(opener) = Opener::new(keys.agent_secret, &keys.sealer.public_key()) else {
        panic!("the server key is usable");
    };
    let context = job_context(JOB_ID, AGENT_ID);
    let plaintext = payload(JOB_LEN);
    let Ok(sealed) = to_agent.seal(&context, &plaintext) else {
        panic!("seals");
    };

    let mut group = c.benchmark_group("job");
    group.throughput(Throughput::Bytes(JOB_LEN as u64));
    group.bench_function("seal_4KiB_cached", |b| {
        b.iter(|| to_agent.seal(black_box(&context), black_box(&plaintext)));
    });
    group.bench_function("open_4KiB", |b| {
        b.iter(|| opener.open(black_box(&context), black_box(&sealed)));
    });
    group.bench_function("seal_4KiB_uncached", |b| {
        b.iter(|| {
            keys.sealer
                .sealer_for(black_box(&agent_public))
                .and_then(|sealer| sealer.seal(black_box(&context), black_box(&plaintext)))
        });
    });
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let keys = keys();
    let Ok(to_agent) = keys.sealer.sealer_for(&keys.agent_secret.public_key()) else {
        panic!("the agent key is usable");
    };
    let Ok(opener) = Opener::new(keys.agent_secret, &keys.sealer.public_key()) else {
        panic!("the server key is usable");
    };
    let context = job_context(JOB_ID, AGENT_ID);

    let mut group = c.benchmark_group("bulk");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (label, len) in [("1MiB", MIB), ("16MiB", 16 * MIB)] {
        let plaintext = payload(len);
        let Ok(sealed) = to_agent.seal(&context, &plaintext) else {
            panic!("seals");
        };
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("seal", label),
            &plaintext,
            |b, plaintext| {
                b.iter(|| to_agent.seal(black_box(&context), black_box(plaintext)));
            },
        );
        group.bench_with_input(BenchmarkId::new("open", label), &sealed, |b, sealed| {
            b.iter(|| opener.open(black_box(&context), black_box(sealed)));
        });
        // What the agent does: it owns the envelope it received, so the
        // ciphertext is decrypted in its own buffer (the clone is setup,
        // not measured).
        group.bench_with_input(
            BenchmarkId::new("open_owned", label),
            &sealed,
            |b, sealed| {
                b.iter_batched(
                    || sealed.clone(),
                    |envelope| opener.open_owned(black_box(&context), envelope),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, job, bulk);
criterion_main!(benches);
