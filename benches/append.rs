//! Single-thread append throughput of `Wal::append`, by payload size and sync
//! policy.
//!
//! - `append_always`: `SyncPolicy::Always` (one `fdatasync` per append, no
//!   concurrency to share it), payloads of 100 B, 4 KiB, 64 KiB and 1 MiB, in
//!   bytes per second;
//! - `append_always_records`: the 100 B and 4 KiB cases again, in records per
//!   second;
//! - `append_periodic`: 4 KiB and 1 MiB under `SyncPolicy::Periodic` (100 ms,
//!   16 MiB);
//! - `append_never`: 4 KiB and 1 MiB under `SyncPolicy::Never`.
//!
//! Every benchmark appends to a fresh log with the default 64 MiB segments, so
//! segment rollover (creating and zero-filling the next segment) is part of
//! the figure, amortized over the records, as it is in production.
//!
//! Run: `cargo bench --bench append` (one group: `cargo bench --bench append
//! -- append_never`). Logs go to a temporary directory under
//! `$STREAMWAL_BENCH_DIR` if set, else under the system temporary directory.
//! Durable figures (`Always`, `Periodic`) only mean something on a real disk:
//! on tmpfs `fdatasync` costs nothing.

mod common;
use common::{bench_dir, payload};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use streamwal::{SyncPolicy, Wal, WalOptions};
use tempfile::TempDir;

/// Payload sizes of the `Always` group, with their labels.
const SIZES_ALWAYS: [(&str, usize); 4] = [
    ("100B", 100),
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
];

/// Payload sizes of the `Periodic` and `Never` groups.
const SIZES_RELAXED: [(&str, usize); 2] = [("4KiB", 4 << 10), ("1MiB", 1 << 20)];

/// A fresh log with the default options (64 MiB segments) but `policy`. The
/// directory must outlive the log.
fn fresh_wal(policy: SyncPolicy) -> (TempDir, Wal) {
    let dir = bench_dir();
    let opts = WalOptions {
        sync_policy: policy,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path().join("wal"), opts).expect("open log");
    (dir, wal)
}

/// One benchmark per size in `sizes`, each appending to its own fresh log.
fn bench_sizes(
    c: &mut Criterion,
    group_name: &str,
    policy: SyncPolicy,
    sizes: &[(&str, usize)],
    records_per_sec: bool,
) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for &(label, len) in sizes {
        group.throughput(if records_per_sec {
            Throughput::Elements(1)
        } else {
            Throughput::Bytes(len as u64)
        });
        let data = payload(len);
        let (_dir, wal) = fresh_wal(policy);
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| black_box(wal.append(data).expect("append")))
        });
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    bench_sizes(c, "append_always", SyncPolicy::Always, &SIZES_ALWAYS, false);
    bench_sizes(
        c,
        "append_always_records",
        SyncPolicy::Always,
        &SIZES_ALWAYS[..2],
        true,
    );
    let periodic = SyncPolicy::Periodic {
        interval: Duration::from_millis(100),
        max_unsynced_bytes: 16 << 20,
    };
    bench_sizes(c, "append_periodic", periodic, &SIZES_RELAXED, false);
    bench_sizes(c, "append_never", SyncPolicy::Never, &SIZES_RELAXED, false);
}

criterion_group!(benches, append);
criterion_main!(benches);
