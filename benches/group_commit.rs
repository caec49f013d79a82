//! Group commit: N threads (1, 4, 16, 64) appending 4 KiB records to one
//! shared `Arc<Wal>` under `SyncPolicy::Always`, in records per second; then,
//! per N, one extra timed pass of about a second that prints append latency
//! percentiles and how many `fdatasync`s each record cost:
//!
//! ```text
//! group_commit latency: threads=N records/s=… p50=…us p99=…us syncs/record=…
//! ```
//!
//! Run: `cargo bench --bench group_commit`. Logs go to a temporary directory
//! under `$STREAMWAL_BENCH_DIR` if set, else under the system temporary
//! directory; the figures only mean something on a real disk (on tmpfs
//! `fdatasync` is free). Under `cargo test` (criterion's test mode) the
//! latency pass is shortened to a few milliseconds.

mod common;
use common::{bench_dir, test_mode};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamwal::{SyncPolicy, Wal, WalOptions};
use tempfile::TempDir;

/// Appender thread counts.
const THREADS: [usize; 4] = [1, 4, 16, 64];

/// Payload size of every record.
const RECORD_BYTES: usize = 4 << 10;

/// Records one criterion iteration appends, spread over the threads, so that
/// every sample holds at least this many records and thread start-up is
/// amortized.
const RECORDS_PER_ITER: u64 = 256;

/// How long each thread appends in the latency pass (benchmark mode).
const LATENCY_PASS: Duration = Duration::from_secs(1);

/// Latency samples each thread can hold without reallocating (a thread
/// appending for `LATENCY_PASS` at 20 µs per durable append would need 50k).
const LATENCY_SAMPLES_MAX: usize = 100_000;

/// A fresh durable log (default options: `Always`, 64 MiB segments).
fn fresh_wal() -> (TempDir, Arc<Wal>) {
    let dir = bench_dir();
    let opts = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path().join("wal"), opts).expect("open log");
    (dir, Arc::new(wal))
}

/// Append `total` records from `threads` threads (the remainder spread over
/// the first threads); return the wall time from the first spawn to the
/// last join.
fn append_concurrently(wal: &Wal, threads: usize, total: u64, payload: &[u8]) -> Duration {
    let share = total / threads as u64;
    let extra = total % threads as u64;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let n = share + u64::from(t < extra);
            s.spawn(move || {
                for _ in 0..n {
                    wal.append(payload).expect("append");
                }
            });
        }
    });
    started.elapsed()
}

/// The latency pass: every thread appends for `run` and records each
/// append's latency (µs); prints one line of the table.
fn latency_pass(threads: usize, run: Duration, payload: &[u8]) {
    let (_dir, wal) = fresh_wal();
    let before = wal.stats();
    let started = Instant::now();
    let per_thread: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let wal = &wal;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(LATENCY_SAMPLES_MAX);
                    let deadline = Instant::now() + run;
                    while lat.len() < LATENCY_SAMPLES_MAX && Instant::now() < deadline {
                        let t0 = Instant::now();
                        wal.append(payload).expect("append");
                        let us = t0.elapsed().as_micros();
                        lat.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    let after = wal.stats();
    let mut all: Vec<u32> = per_thread.into_iter().flatten().collect();
    all.sort_unstable();
    let records = after.records_appended - before.records_appended;
    let syncs = after.data_syncs - before.data_syncs;
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    println!(
        "group_commit latency: threads={threads} records/s={:.0} p50={}us p99={}us syncs/record={:.3}",
        records as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        syncs as f64 / records.max(1) as f64,
    );
}

fn group_commit(c: &mut Criterion) {
    let payload = vec![0xA5u8; RECORD_BYTES];
    // Criterion's time is per iteration, i.e. per RECORDS_PER_ITER records;
    // its throughput line is in records per second.
    let mut group = c.benchmark_group("group_commit_4KiB");
    // Flat: every sample runs the same number of iterations, so one slow
    // (single-thread, one sync per record) iteration does not stretch the
    // run to 55 iterations as linear sampling would.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(RECORDS_PER_ITER));
    for threads in THREADS {
        let (_dir, wal) = fresh_wal();
        group.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, &n| {
            b.iter_custom(|iters| append_concurrently(&wal, n, iters * RECORDS_PER_ITER, &payload))
        });
    }
    group.finish();

    let run = if test_mode() {
        Duration::from_millis(20)
    } else {
        LATENCY_PASS
    };
    for threads in THREADS {
        latency_pass(threads, run, &payload);
    }
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
