//! Model test: random sequences of append, append_batch, read, iterate, retention (by LSN and by time), sync and close-and-reopen on small, fast-rolling segments agree exactly with an in-memory model of the log.
//!
//! The model (`common/log_model.rs`) knows every record ever appended (LSN,
//! handle, payload, time) and which LSN the retained part of the log starts
//! at; this test adds the file layout it expects of handles. Retention
//! deletes only whole sealed segments, so the model groups records by the
//! segment their handle names and predicts exactly which segments a purge
//! removes: the oldest sealed segments whose records all qualify, stopping
//! at the first that does not, never the segment being written.

use crate::common::log_model::{Checked, LogModel};
use crate::common::rng::Rng;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::path::Path;
use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::{Error, RecordHandle, SyncPolicy, Wal, WalOptions};

const SEGMENT_BYTES: u64 = 4096;
const MAX_RECORD_BYTES: u32 = 8192;

type TestResult<T = ()> = Result<T, TestCaseError>;

/// The options a case opens the log with (a reopen may change them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    never: bool,
    preallocate: bool,
}

impl Config {
    fn options(self) -> WalOptions {
        WalOptions {
            sync_policy: if self.never {
                SyncPolicy::Never
            } else {
                SyncPolicy::Always
            },
            segment_bytes: SEGMENT_BYTES,
            max_record_bytes: MAX_RECORD_BYTES,
            preallocate: self.preallocate,
            ..WalOptions::default()
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `append` (time `None`: stamped with the clock) or `append_at`.
    Append {
        payload: Vec<u8>,
        time: Option<u64>,
    },
    /// `append_batch` or `append_batch_at`.
    AppendBatch {
        payloads: Vec<Vec<u8>>,
        time: Option<u64>,
    },
    /// A payload one byte over the maximum, alone or at the end of a batch:
    /// must fail with `TooLarge` and consume no LSN.
    AppendTooLarge {
        in_batch: bool,
    },
    /// Read the handle of a record appended earlier (perhaps purged since),
    /// after a serde round trip of the handle.
    Read {
        pick: Index,
    },
    /// `iter()` and `iter_from(first_lsn())`.
    IterAll,
    /// An `iter()` created before an append sees the log as it was.
    IterThenAppend {
        payload: Vec<u8>,
    },
    /// `iter_from(lsn)` for an LSN in `1..=next_lsn + 1`.
    IterFrom {
        pick: Index,
    },
    /// `purge_before_lsn(lsn)` for an LSN in `0..=next_lsn + 1`.
    PurgeLsn {
        pick: Index,
    },
    /// `purge_before_time(t)`.
    PurgeTime {
        time: u64,
    },
    Sync,
    /// Close (`close()` or drop) and open again, maybe with other options.
    Reopen {
        close: bool,
        change: Option<Config>,
    },
}

/// A payload of a random length (mostly small, so that a 4 KiB segment holds
/// a few; sometimes empty; now and then larger than a segment, which then
/// gets a segment of its own), filled from a random seed.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        1 => Just(0usize),
        4 => 1usize..64,
        3 => 64usize..1000,
        2 => 1000usize..3000,
        1 => 4100usize..6000,
    ];
    (len, any::<u64>()).prop_map(|(len, seed)| fill(len, seed))
}

/// `len` pseudo-random bytes from `seed`.
fn fill(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

fn time() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.6, 0u64..1000)
}

fn config() -> impl Strategy<Value = Config> {
    (prop::bool::weighted(0.25), prop::bool::weighted(0.35))
        .prop_map(|(never, preallocate)| Config { never, preallocate })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (payload(), time()).prop_map(|(payload, time)| Op::Append { payload, time }),
        4 => (prop::collection::vec(payload(), 1..5), time())
            .prop_map(|(payloads, time)| Op::AppendBatch { payloads, time }),
        1 => any::<bool>().prop_map(|in_batch| Op::AppendTooLarge { in_batch }),
        6 => any::<Index>().prop_map(|pick| Op::Read { pick }),
        2 => Just(Op::IterAll),
        1 => payload().prop_map(|payload| Op::IterThenAppend { payload }),
        3 => any::<Index>().prop_map(|pick| Op::IterFrom { pick }),
        3 => any::<Index>().prop_map(|pick| Op::PurgeLsn { pick }),
        1 => (0u64..1100).prop_map(|time| Op::PurgeTime { time }),
        1 => Just(Op::Sync),
        3 => (any::<bool>(), prop::option::weighted(0.3, config()))
            .prop_map(|(close, change)| Op::Reopen { close, change }),
    ]
}

/// Check the handle an append returned against the segment layout (frames
/// packed back to back; a segment rolls over only when the next frame would
/// not fit), then acknowledge it in the model.
fn accept(model: &mut LogModel, h: RecordHandle, payload: &[u8], time: Option<u64>) -> TestResult {
    let prev = model.last().map(|r| r.handle);
    let after_empty_tail = model.tail_empty();
    agreed(model.acknowledge(h, payload, time))?;
    let frame = FRAME_HEADER_BYTES + payload.len() as u64;
    match prev {
        None => {
            prop_assert_eq!(h.offset(), SEGMENT_HEADER_BYTES, "first record: {:?}", h);
        }
        Some(prev) => {
            let prev_end = prev.offset() + FRAME_HEADER_BYTES + u64::from(prev.len());
            if after_empty_tail {
                prop_assert!(h.segment() > prev.segment(), "{:?} after {:?}", h, prev);
                prop_assert_eq!(h.offset(), SEGMENT_HEADER_BYTES);
            } else if prev_end + frame > SEGMENT_BYTES {
                prop_assert_eq!(h.segment(), prev.segment() + 1, "rollover: {:?}", h);
                prop_assert_eq!(h.offset(), SEGMENT_HEADER_BYTES);
            } else {
                prop_assert_eq!(h.segment(), prev.segment(), "no rollover: {:?}", h);
                prop_assert_eq!(h.offset(), prev_end, "packed frames: {:?}", h);
            }
        }
    }
    prop_assert!(
        h.offset() + frame <= SEGMENT_BYTES || h.offset() == SEGMENT_HEADER_BYTES,
        "a record only overflows a segment it has alone: {:?}",
        h
    );
    Ok(())
}

/// A model check as a proptest failure, so that the case shrinks.
fn agreed(checked: Checked) -> TestResult {
    checked.map_err(TestCaseError::fail)
}

fn ok<T>(r: streamwal::Result<T>, what: &str) -> TestResult<T> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed: {e:?}")))
}

fn open(dir: &Path, config: Config, model: &mut LogModel) -> TestResult<Wal> {
    let wal = ok(Wal::open(dir, config.options()), "open")?;
    let report = wal.recovery_report();
    agreed(model.check_report(report))?;
    prop_assert_eq!(report.torn_bytes, 0, "clean close leaves no torn tail");
    prop_assert!(report.problems.is_empty(), "{:?}", report);
    let created = wal.stats().segments_created;
    prop_assert!(created <= 1, "open created {} segments", created);
    if created == 1 {
        model.set_tail_empty(true);
    }
    Ok(wal)
}

fn run(config: Config, ops: Vec<Op>) -> TestResult {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wal");
    let mut config = config;
    let mut model = LogModel::new();
    let mut wal = open(&dir, config, &mut model)?;
    agreed(model.check(&wal))?;

    for op in ops {
        match op {
            Op::Append { payload, time } => {
                let h = match time {
                    Some(t) => ok(wal.append_at(&payload, t), "append_at")?,
                    None => ok(wal.append(&payload), "append")?,
                };
                accept(&mut model, h, &payload, time)?;
            }
            Op::AppendBatch { payloads, time } => {
                let handles = match time {
                    Some(t) => ok(wal.append_batch_at(&payloads, t), "append_batch_at")?,
                    None => ok(wal.append_batch(&payloads), "append_batch")?,
                };
                prop_assert_eq!(handles.len(), payloads.len());
                for (h, p) in handles.into_iter().zip(&payloads) {
                    accept(&mut model, h, p, time)?;
                }
            }
            Op::AppendTooLarge { in_batch } => {
                let big = vec![0xA5u8; MAX_RECORD_BYTES as usize + 1];
                let err = if in_batch {
                    wal.append_batch(&[b"fits".to_vec(), big]).err()
                } else {
                    wal.append(&big).err()
                };
                match err {
                    Some(Error::TooLarge { size, max }) => {
                        prop_assert_eq!(size, u64::from(MAX_RECORD_BYTES) + 1);
                        prop_assert_eq!(max, u64::from(MAX_RECORD_BYTES));
                    }
                    other => prop_assert!(false, "oversized append gave {:?}", other),
                }
            }
            Op::Read { pick } => {
                if !model.records().is_empty() {
                    let lsn = 1 + pick.index(model.records().len()) as u64;
                    let rec = model.record(lsn).expect("a record of the model");
                    let json = serde_json::to_string(&rec.handle).expect("serialize handle");
                    let back: RecordHandle = serde_json::from_str(&json).expect("deserialize");
                    prop_assert_eq!(back, rec.handle);
                    agreed(model.check_read(&wal, rec))?;
                }
            }
            Op::IterAll => {
                agreed(model.check_iter(wal.iter(), model.retained_first(), "iter()"))?;
                if let Some(first) = wal.first_lsn() {
                    agreed(model.check_iter(wal.iter_from(first), first, "iter_from(first)"))?;
                }
            }
            Op::IterThenAppend { payload } => {
                let held = wal.iter();
                let h = ok(wal.append(&payload), "append")?;
                agreed(model.check_iter(
                    held,
                    model.retained_first(),
                    "iter() created before append",
                ))?;
                accept(&mut model, h, &payload, None)?;
            }
            Op::IterFrom { pick } => {
                let from = 1 + pick.index(model.next_lsn() as usize + 1) as u64;
                agreed(model.check_iter_from(&wal, from))?;
            }
            Op::PurgeLsn { pick } => {
                let lsn = pick.index(model.next_lsn() as usize + 2) as u64;
                let (first, removed) = model.predict_purge(|r| r.handle.lsn() < lsn);
                let held = wal.iter();
                let n = ok(wal.purge_before_lsn(lsn), "purge_before_lsn")?;
                // An iterator created before the purge still reads it all.
                agreed(model.check_iter(
                    held,
                    model.retained_first(),
                    "iter() created before purge",
                ))?;
                prop_assert!(
                    n >= removed,
                    "purge_before_lsn({}) removed {} < {}",
                    lsn,
                    n,
                    removed
                );
                prop_assert!(
                    first <= lsn.max(model.retained_first()),
                    "model keeps >= lsn"
                );
                model.purged_before(first);
                agreed(model.check(&wal))?;
            }
            Op::PurgeTime { time } => {
                let (first, removed) = model.predict_purge(|r| r.time.is_some_and(|t| t < time));
                let n = ok(wal.purge_before_time(time), "purge_before_time")?;
                prop_assert!(
                    n >= removed,
                    "purge_before_time({}) removed {} < {}",
                    time,
                    n,
                    removed
                );
                model.purged_before(first);
                agreed(model.check(&wal))?;
            }
            Op::Sync => ok(wal.sync(), "sync")?,
            Op::Reopen { close, change } => {
                if close {
                    ok(wal.close(), "close")?;
                } else {
                    drop(wal);
                }
                if let Some(c) = change {
                    config = c;
                }
                wal = open(&dir, config, &mut model)?;
                agreed(model.check(&wal))?;
            }
        }
        agreed(model.check_bounds(&wal))?;
    }

    agreed(model.check(&wal))?;
    drop(wal);
    let wal = open(&dir, config, &mut model)?;
    agreed(model.check(&wal))?;
    // The next LSN is never reused, even after every record was purged.
    let h = ok(wal.append(b"last"), "final append")?;
    accept(&mut model, h, b"last", None)?;
    agreed(model.check(&wal))?;
    Ok(())
}

proptest! {
    // 64 cases by default; `PROPTEST_CASES=N` runs more (a soak).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wal_agrees_with_model(config in config(), ops in prop::collection::vec(op(), 1..60)) {
        run(config, ops)?;
    }
}
