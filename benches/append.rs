//! Durable append throughput (placeholder until the benchmark issue).
use criterion::{Criterion, criterion_group, criterion_main};
use streamwal::{Wal, WalOptions};

fn append_4k(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(tmp.path().join("wal"), WalOptions::default()).expect("open");
    let payload = vec![7u8; 4096];
    c.bench_function("append_4k_always", |b| {
        b.iter(|| wal.append(&payload).expect("append"))
    });
}

criterion_group!(benches, append_4k);
criterion_main!(benches);
