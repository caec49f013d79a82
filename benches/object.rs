//! The log on object storage: append throughput and latency, and PUTs per
//! append under group commit, by number of appending threads; then the
//! time to open (recover) a log of many objects.
//!
//! Runs against `STREAMWAL_S3_URL` (with the `AWS_*` variables, as
//! `.ci/s3-server` prints them) or, without it, an in-memory store. Not a
//! criterion bench: each configuration runs for a fixed time
//! (`STREAMWAL_OBJECT_SECS`, default 5) and prints one line:
//!
//! ```text
//! eval "$(.ci/s3-server target/s3.pid)"
//! cargo bench --features object-store --bench object
//! ```
//!
//! Under `cargo test --all-targets` it runs each configuration for a
//! moment, on memory unless the URL is set, to prove it works.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use streamwal::object::ObjectLocation;
use streamwal::{Wal, WalOptions};

fn main() {
    let quick = common::test_mode();
    let secs = if quick {
        0.2
    } else {
        std::env::var("STREAMWAL_OBJECT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0)
    };
    let base = std::env::var("STREAMWAL_S3_URL").unwrap_or_else(|_| "memory:///bench".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    println!("object-store log: {base}, {secs} s per configuration");
    println!("threads  record  appends/s  MB/s    PUTs/append  p50 ms  p99 ms");
    for &(threads, len) in &[(1, 4096), (8, 4096), (32, 4096), (64, 4096), (8, 256 << 10)] {
        let url = format!(
            "{}/bench-{nanos}-{threads}-{len}",
            base.trim_end_matches('/')
        );
        let location = streamwal::Location::parse(&url).expect("parse");
        let wal = Arc::new(Wal::open(location, WalOptions::default()).expect("open"));
        let stop = Arc::new(AtomicBool::new(false));
        let puts_before = wal.stats().batches;
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (wal, stop) = (wal.clone(), stop.clone());
                std::thread::spawn(move || {
                    let payload = common::payload(len);
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        wal.append(&payload).expect("append");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let mut lat: Vec<Duration> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        let puts = wal.stats().batches - puts_before;
        lat.sort_unstable();
        let n = lat.len().max(1);
        let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3;
        println!(
            "{threads:>7}  {:>6}  {:>9.0}  {:>6.1}  {:>11.3}  {:>6.2}  {:>6.2}",
            if len >= 1024 {
                format!("{}K", len / 1024)
            } else {
                len.to_string()
            },
            lat.len() as f64 / elapsed,
            (lat.len() * len) as f64 / elapsed / 1e6,
            puts as f64 / lat.len().max(1) as f64,
            pct(0.5),
            pct(0.99)
        );
    }
    // Recovery: opening a log reads every object. One appender makes one
    // object per record. Every open goes through children of one parsed
    // location, so that a `memory://` store (new and empty at each parse)
    // is the same store at the reopen.
    let objects = if quick { 20 } else { 1_000 };
    let url = format!("{}/bench-{nanos}", base.trim_end_matches('/'));
    let root = ObjectLocation::parse(&url).expect("parse the URL");
    let wal = Wal::open(root.child("open").expect("child"), WalOptions::default()).expect("open");
    let payload = common::payload(4096);
    for _ in 0..objects {
        wal.append(&payload).expect("append");
    }
    drop(wal);
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let wal =
            Wal::open(root.child("open").expect("child"), WalOptions::default()).expect("reopen");
        times.push(started.elapsed().as_secs_f64());
        assert!(wal.recovery_report().records >= objects as u64);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "open of a log of {objects} objects (4 KiB records): median {:.2} s over 3 opens (min {:.2}, max {:.2})",
        times[1], times[0], times[2]
    );
}
