//! The downtime policy: by default the intervals missed while the driver was down are one batch (a day at 500 ms batches is one batch, a week does not fail) that takes every block received before the crash; `DowntimePolicy::RunEach` hands back one batch per interval, and past `DOWNTIME_BATCHES_MAX` fails with `DowntimeTooLong`, which names the policy to change and leaves the context as it was.

use std::path::Path;
use streamwal::limits::DOWNTIME_BATCHES_MAX;
use streamwal::recovery::{BatchToRun, RunReason, StreamingContext};
use streamwal::{DowntimePolicy, Error};

const INTERVAL_MS: u64 = 500;
const DAY_MS: u64 = 86_400_000;

fn open(
    dir: &Path,
    now: u64,
    policy: Option<DowntimePolicy>,
) -> streamwal::Result<StreamingContext<()>> {
    let b = StreamingContext::builder(dir)
        .batch_interval_ms(INTERVAL_MS)
        .now_ms(now);
    match policy {
        Some(p) => b.downtime_policy(p),
        None => b,
    }
    .get_or_create(|| ())
}

/// A driver that ran batches 500 and 1_000 (the second not committed),
/// received one more block, and died.
fn crashed_driver(dir: &Path) -> Vec<u8> {
    let ctx = open(dir, 0, None).unwrap();
    ctx.store_block(0, b"first", 1, 100).unwrap();
    ctx.tracker.allocate_blocks_to_batch(500).unwrap();
    ctx.commit_batch(500).unwrap();
    ctx.store_block(0, b"second", 1, 700).unwrap();
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.store_block(1, b"late", 1, 1_100).unwrap();
    b"late".to_vec()
}

fn times(batches: &[BatchToRun]) -> Vec<(u64, RunReason)> {
    batches.iter().map(|b| (b.batch_time, b.reason)).collect()
}

#[test]
fn by_default_a_day_of_downtime_is_one_batch_that_takes_the_waiting_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let late = crashed_driver(tmp.path());
    // Down for a day and a bit: 172,800 intervals missed.
    let now = 1_000 + DAY_MS + 321;
    let ctx = open(tmp.path(), now, None).unwrap();
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(
        times(&rec.batches),
        [
            (1_000, RunReason::AllocatedNotCommitted),
            (1_000 + DAY_MS, RunReason::Downtime)
        ]
    );
    assert_eq!(ctx.report.batches_to_run, 2);
    assert_eq!(rec.batches[1].blocks, None, "not allocated yet");
    let blocks = ctx
        .tracker
        .allocate_blocks_to_batch(1_000 + DAY_MS)
        .unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(ctx.read_block(&blocks[&1][0]).unwrap(), late);
}

#[test]
fn by_default_a_week_of_downtime_does_not_fail() {
    let tmp = tempfile::tempdir().unwrap();
    crashed_driver(tmp.path());
    let now = 1_000 + 7 * DAY_MS;
    let ctx = open(tmp.path(), now, Some(DowntimePolicy::Coalesce)).unwrap();
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(
        times(&rec.batches),
        [
            (1_000, RunReason::AllocatedNotCommitted),
            (now, RunReason::Downtime)
        ]
    );
}

#[test]
fn run_each_hands_back_one_batch_per_missed_interval() {
    let tmp = tempfile::tempdir().unwrap();
    crashed_driver(tmp.path());
    let ctx = open(tmp.path(), 2_700, Some(DowntimePolicy::RunEach)).unwrap();
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(
        times(&rec.batches),
        [
            (1_000, RunReason::AllocatedNotCommitted),
            (1_500, RunReason::Downtime),
            (2_000, RunReason::Downtime),
            (2_500, RunReason::Downtime)
        ]
    );
}

#[test]
fn run_each_past_the_bound_fails_naming_the_policy_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    crashed_driver(tmp.path());
    let missed = DOWNTIME_BATCHES_MAX + 1;
    let now = 1_000 + missed * INTERVAL_MS;
    let err = open(tmp.path(), now, Some(DowntimePolicy::RunEach)).unwrap_err();
    match &err {
        Error::DowntimeTooLong { intervals, max } => {
            assert_eq!((*intervals, *max), (missed, DOWNTIME_BATCHES_MAX));
        }
        other => panic!("expected DowntimeTooLong, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("DowntimePolicy::Coalesce"), "{text}");
    assert!(text.contains(&missed.to_string()), "{text}");
    // At the bound it runs each; and the context is as it was: coalescing
    // now recovers the same pending batch.
    let at_bound = 1_000 + DOWNTIME_BATCHES_MAX * INTERVAL_MS;
    let ctx = open(tmp.path(), at_bound, Some(DowntimePolicy::RunEach)).unwrap();
    let n = ctx.recovered.as_ref().unwrap().batches.len() as u64;
    assert_eq!(n, 1 + DOWNTIME_BATCHES_MAX);
    drop(ctx);
    let ctx = open(tmp.path(), now, None).unwrap();
    assert_eq!(
        times(&ctx.recovered.as_ref().unwrap().batches),
        [
            (1_000, RunReason::AllocatedNotCommitted),
            (now, RunReason::Downtime)
        ]
    );
}
