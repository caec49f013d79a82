//! Concurrency: many threads appending at once (single records; batches mixed with `sync()` calls and concurrent readers) get unique, dense LSNs in each thread's order, every record reads back by handle and after reopen, and group commit shares one fsync among many appenders.

use crate::common::log_model::{LogModel, agrees};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use streamwal::storage::{FaultPlan, FaultyStorage, StdStorage};
use streamwal::{RecordHandle, SyncPolicy, Wal, WalOptions};

/// The payload of record `seq` of thread `thread`: names both, and its length
/// varies so that a mixed-up length or offset shows.
fn payload(thread: usize, seq: usize) -> Vec<u8> {
    let mut p = format!("thread {thread} record {seq};").into_bytes();
    p.resize(p.len() + seq % 23, b'a' + thread as u8);
    p
}

/// The `(thread, seq)` a payload names; panics if it is not one of ours.
fn parse(p: &[u8]) -> (usize, usize) {
    let end = p
        .iter()
        .position(|&b| b == b';')
        .expect("payload has a ';'");
    let text = std::str::from_utf8(&p[..end]).expect("payload is text");
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("thread"), Some(t), Some("record"), Some(i)) => {
            (t.parse().expect("thread"), i.parse().expect("seq"))
        }
        _ => panic!("not a payload of this test: {text:?}"),
    }
}

/// Every `(thread, seq) -> handle` in `appended` reads back with its payload,
/// the LSNs are exactly `1..=n` with each thread's in increasing order, and
/// both `wal.iter()` and, after a reopen, the reopened log's `iter()` return
/// exactly those records in LSN order.
fn check_log(dir: &Path, wal: Wal, opts: WalOptions, appended: &[Vec<(RecordHandle, Vec<u8>)>]) {
    let mut by_lsn: BTreeMap<u64, (RecordHandle, &[u8])> = BTreeMap::new();
    for (thread, records) in appended.iter().enumerate() {
        for pair in records.windows(2) {
            assert!(
                pair[0].0.lsn() < pair[1].0.lsn(),
                "thread {thread}: {:?} then {:?}",
                pair[0].0,
                pair[1].0
            );
        }
        for (h, p) in records {
            let dup = by_lsn.insert(h.lsn(), (*h, p));
            assert!(dup.is_none(), "LSN {} handed out twice", h.lsn());
        }
    }
    // In LSN order, the acknowledgements must be the dense LSNs from 1.
    let mut model = LogModel::new();
    for (h, p) in by_lsn.values() {
        agrees(model.acknowledge(*h, p, None));
    }
    agrees(model.check(&wal));
    drop(wal);

    let wal = Wal::open(dir, opts).unwrap();
    let report = wal.recovery_report();
    agrees(model.check_report(report));
    assert_eq!(report.torn_bytes, 0, "{report:?}");
    agrees(model.check(&wal));
}

#[test]
fn eight_threads_of_ten_thousand_appends_share_fsyncs() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 10_000;
    const TOTAL: u64 = (THREADS * PER_THREAD) as u64;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Always,
        // About 2.6 MB of frames: several rollovers under concurrent appends.
        segment_bytes: 512 << 10,
        ..WalOptions::default()
    };
    // Count the syncs the file system really sees, not only the log's counter.
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(
        Arc::new(StdStorage::new()),
        plan.clone(),
    ));
    let wal = Wal::open(streamwal::Location::dir_on(storage, &dir), opts.clone()).unwrap();
    let syncs_at_open = plan.file_syncs();

    let started = Instant::now();
    let appended: Vec<Vec<(RecordHandle, Vec<u8>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let p = payload(t, i);
                            (wal.append(&p).unwrap(), p)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();

    let stats = wal.stats();
    let fs_syncs = plan.file_syncs() - syncs_at_open;
    println!(
        "{TOTAL} appends from {THREADS} threads in {elapsed:.2?}: {} data syncs \
         ({:.1} appends per sync), {} file syncs seen by the file system, {} batches, {} segments",
        stats.data_syncs,
        TOTAL as f64 / stats.data_syncs as f64,
        fs_syncs,
        stats.batches,
        stats.segments_created,
    );
    assert_eq!(stats.records_appended, TOTAL);
    assert!(stats.data_syncs > 0);
    assert!(
        stats.data_syncs < TOTAL / 2,
        "group commit: {} data syncs for {TOTAL} appends",
        stats.data_syncs
    );
    // The counter is honest: every sync it counts reached the file system,
    // and the file system saw few more (segment creation syncs its files).
    assert!(
        fs_syncs >= stats.data_syncs,
        "{fs_syncs} < {}",
        stats.data_syncs
    );
    assert!(
        fs_syncs < TOTAL / 2,
        "{fs_syncs} file syncs for {TOTAL} appends"
    );

    check_log(&dir, wal, opts, &appended);
}

/// Appender threads call `append_batch` while one thread calls `sync()` and
/// another iterates and reads: every iteration is a gapless prefix of the log
/// whose records are whole and read back by handle.
fn batches_with_concurrent_syncs(policy: SyncPolicy) {
    const THREADS: usize = 4;
    const CALLS: usize = 250;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: policy,
        // Batches straddle segment boundaries now and then.
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let appenders_done = AtomicBool::new(false);
    let sync_calls = AtomicU64::new(0);
    let scans = AtomicU64::new(0);

    let appended: Vec<Vec<(RecordHandle, Vec<u8>)>> = std::thread::scope(|s| {
        let syncer = s.spawn(|| {
            // At least 100 calls, and on until the appenders are done.
            while sync_calls.load(Ordering::Relaxed) < 100
                || !appenders_done.load(Ordering::Acquire)
            {
                wal.sync().unwrap();
                sync_calls.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        let reader = s.spawn(|| {
            while scans.load(Ordering::Relaxed) < 3 || !appenders_done.load(Ordering::Acquire) {
                for (item, lsn) in wal.iter().zip(1u64..) {
                    let (h, p) = item.unwrap();
                    assert_eq!(h.lsn(), lsn, "a concurrent iter() is a gapless prefix");
                    let (t, i) = parse(&p);
                    assert_eq!(p, payload(t, i), "whole record at {h:?}");
                    assert_eq!(wal.read(&h).unwrap(), p, "read of {h:?} during appends");
                }
                scans.fetch_add(1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut seq = 0;
                    for call in 0..CALLS {
                        let size = 1 + (call * 7 + t) % 8;
                        let payloads: Vec<Vec<u8>> =
                            (seq..seq + size).map(|i| payload(t, i)).collect();
                        seq += size;
                        let handles = wal.append_batch(&payloads).unwrap();
                        assert_eq!(handles.len(), size);
                        for pair in handles.windows(2) {
                            assert_eq!(
                                pair[0].lsn() + 1,
                                pair[1].lsn(),
                                "a batch's LSNs are consecutive"
                            );
                        }
                        mine.extend(handles.into_iter().zip(payloads));
                    }
                    mine
                })
            })
            .collect();
        let appended = workers.into_iter().map(|w| w.join().unwrap()).collect();
        appenders_done.store(true, Ordering::Release);
        syncer.join().unwrap();
        reader.join().unwrap();
        appended
    });
    wal.sync().unwrap();

    let records: u64 = appended.iter().map(|a| a.len() as u64).sum();
    let stats = wal.stats();
    println!(
        "{policy:?}: {records} records in {} batch calls, {} sync() calls, {} scans; \
         {} data syncs, {} segments",
        THREADS * CALLS,
        sync_calls.load(Ordering::Relaxed),
        scans.load(Ordering::Relaxed),
        stats.data_syncs,
        stats.segments_created,
    );
    assert_eq!(stats.records_appended, records);
    assert!(
        stats.segments_created > 1,
        "the batches rolled over segments"
    );
    if policy == SyncPolicy::Always {
        // One sync per batch call at most, plus the syncs of a rollover (the
        // old segment, then the chunk in the new one): `sync()` calls add none
        // under `Always`, and concurrent calls share syncs.
        let bound = (THREADS * CALLS) as u64 + 2 * stats.segments_created;
        assert!(
            stats.data_syncs <= bound,
            "{} data syncs for {} batch calls",
            stats.data_syncs,
            THREADS * CALLS
        );
    }
    check_log(&dir, wal, opts, &appended);
}

#[test]
fn concurrent_batches_and_syncs_durable_policy() {
    batches_with_concurrent_syncs(SyncPolicy::Always);
}

#[test]
fn concurrent_batches_and_syncs_never_policy() {
    batches_with_concurrent_syncs(SyncPolicy::Never);
}
