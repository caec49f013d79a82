//! Read paths of the log, in bytes per second:
//!
//! - `read_random_4KiB`: `Wal::read(&handle)` of 4 KiB records picked at
//!   random from a 64 MiB log;
//! - `read_iter`: a full `wal.iter()` over a large log of 64 KiB records
//!   (1 GiB by default), summing payload lengths;
//! - `read_recovery_scan`: `Wal::open` of that large log (the recovery scan
//!   that checks every record), dropped between iterations since a log
//!   directory can be open only once at a time.
//!
//! Both logs are built once, before the benchmarks, under `SyncPolicy::Never`
//! followed by one `sync()`. The figures are therefore from the page cache
//! (the logs were just written), not from the disk: they measure the
//! checksum and copy cost, not the device. Drop the caches between building
//! and measuring to see cold figures.
//!
//! Run: `cargo bench --bench read`. `STREAMWAL_BENCH_LOG_MIB` sizes the large
//! log (default 1024); logs go under `$STREAMWAL_BENCH_DIR` if set, else under
//! the system temporary directory. Under `cargo test` (criterion's test mode)
//! both logs are shrunk to a few MiB.

mod common;
use common::{Rng, bench_dir, test_mode};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use streamwal::{RecordHandle, SyncPolicy, Wal, WalOptions};

/// Record size of the large log (iteration and recovery scan).
const BIG_RECORD_BYTES: usize = 64 << 10;

/// Record size and total size of the random-read log.
const SMALL_RECORD_BYTES: usize = 4 << 10;
const SMALL_LOG_BYTES: usize = 64 << 20;

/// Records per `append_batch` call while building (4 MiB of 64 KiB records).
const BUILD_BATCH_RECORDS: usize = 64;

/// Distinct payloads cycled through while building: enough that the data is
/// not one repeated block, few enough that generating them costs nothing.
const DISTINCT_PAYLOADS: usize = 16;

/// Size of the large log in MiB: `STREAMWAL_BENCH_LOG_MIB`, default 1024.
fn big_log_mib() -> usize {
    if test_mode() {
        return 4;
    }
    match std::env::var("STREAMWAL_BENCH_LOG_MIB") {
        Ok(v) => v
            .parse()
            .expect("STREAMWAL_BENCH_LOG_MIB must be a whole number of MiB"),
        Err(_) => 1024,
    }
}

/// The options both logs are written and reopened with.
fn log_options() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Never,
        ..WalOptions::default()
    }
}

/// Write `total_bytes` of `record_bytes` records of pseudo-random bytes into
/// a new log at `dir`, sync it, and return the log and its handles.
fn build_log(dir: &Path, record_bytes: usize, total_bytes: usize) -> (Wal, Vec<RecordHandle>) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let payloads: Vec<Vec<u8>> = (0..DISTINCT_PAYLOADS)
        .map(|_| {
            (0..record_bytes / 8)
                .flat_map(|_| rng.next().to_le_bytes())
                .collect()
        })
        .collect();
    let records = total_bytes / record_bytes;
    let wal = Wal::open(dir, log_options()).expect("open log");
    let mut handles = Vec::with_capacity(records);
    let mut batch: Vec<&[u8]> = Vec::with_capacity(BUILD_BATCH_RECORDS);
    for i in 0..records {
        batch.push(&payloads[i % DISTINCT_PAYLOADS]);
        if batch.len() == BUILD_BATCH_RECORDS || i + 1 == records {
            handles.extend(wal.append_batch(&batch).expect("append batch"));
            batch.clear();
        }
    }
    wal.sync().expect("sync");
    (wal, handles)
}

fn read(c: &mut Criterion) {
    let root = bench_dir();
    let small_bytes = if test_mode() {
        4 << 20
    } else {
        SMALL_LOG_BYTES
    };
    let big_bytes = big_log_mib() << 20;

    let started = Instant::now();
    let (small, small_handles) =
        build_log(&root.path().join("small"), SMALL_RECORD_BYTES, small_bytes);
    let big_dir = root.path().join("big");
    let (big, big_handles) = build_log(&big_dir, BIG_RECORD_BYTES, big_bytes);
    let big_payload_bytes: u64 = big_handles.iter().map(|h| u64::from(h.len())).sum();
    println!(
        "read: built {} x 4 KiB and {} x 64 KiB records ({} MiB) in {:.1} s",
        small_handles.len(),
        big_handles.len(),
        big_payload_bytes >> 20,
        started.elapsed().as_secs_f64()
    );

    // (a) Random reads by handle.
    let mut group = c.benchmark_group("read_random_4KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(SMALL_RECORD_BYTES as u64));
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    group.bench_function("read", |b| {
        b.iter(|| {
            let h = &small_handles[(rng.next() % small_handles.len() as u64) as usize];
            black_box(small.read(h).expect("read"))
        })
    });
    group.finish();
    drop(small);

    // (b) A full iteration of the large log.
    let mut group = c.benchmark_group("read_iter");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(big_payload_bytes));
    group.bench_function("64KiB_records", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for record in big.iter() {
                let (_, payload) = record.expect("iterate");
                sum += payload.len() as u64;
            }
            assert_eq!(sum, big_payload_bytes);
            sum
        })
    });
    group.finish();

    // (c) The recovery scan: reopen the large log. The writer must be gone
    // first (the directory lock); each opened log is dropped outside the
    // timed region, before the next open.
    drop(big);
    let mut group = c.benchmark_group("read_recovery_scan");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(big_payload_bytes));
    group.bench_function("open_64KiB_records", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let wal = Wal::open(&big_dir, log_options()).expect("reopen");
                total += t0.elapsed();
                assert_eq!(wal.recovery_report().records, big_handles.len() as u64);
                drop(wal);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
