//! Model test: random sequences of append, append_batch, read, iterate, retention (by LSN and by time), sync and close-and-reopen on small, fast-rolling segments agree exactly with an in-memory model of the log.
//!
//! The model knows every record ever appended (LSN, handle, payload, time) and
//! which LSN the retained part of the log starts at. Retention deletes only
//! whole sealed segments, so the model groups records by the segment their
//! handle names and predicts exactly which segments a purge removes: the
//! oldest sealed segments whose records all qualify, stopping at the first
//! that does not, never the segment being written.

use crate::common::rng::Rng;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;
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

#[derive(Debug)]
struct Rec {
    handle: RecordHandle,
    payload: Vec<u8>,
    /// `None`: stamped with the wall clock, so newer than any time a purge
    /// in this test names.
    time: Option<u64>,
}

#[derive(Debug)]
struct Model {
    /// Every record ever appended, purged or not.
    records: BTreeMap<u64, Rec>,
    /// Every record with an LSN at or above this is retained; below, purged.
    retained_first: u64,
    next_lsn: u64,
    /// The segment being written holds no record yet (a fresh log, or a
    /// reopen started a new segment), so every segment holding records is
    /// sealed and may be purged.
    empty_tail: bool,
}

impl Model {
    fn new() -> Self {
        Model {
            records: BTreeMap::new(),
            retained_first: 1,
            next_lsn: 1,
            empty_tail: true,
        }
    }

    fn retained(&self) -> impl Iterator<Item = &Rec> {
        self.records.range(self.retained_first..).map(|(_, r)| r)
    }

    fn retained_count(&self) -> u64 {
        self.next_lsn - self.retained_first
    }

    /// Check the handle an append returned against the model and the segment
    /// layout (frames packed back to back; a segment rolls over only when the
    /// next frame would not fit), then record it.
    fn accept(&mut self, h: RecordHandle, payload: &[u8], time: Option<u64>) -> TestResult {
        prop_assert_eq!(h.lsn(), self.next_lsn, "LSNs are dense");
        prop_assert_eq!(h.len() as usize, payload.len());
        let frame = FRAME_HEADER_BYTES + payload.len() as u64;
        match self.records.last_key_value().map(|(_, r)| r.handle) {
            None => {
                prop_assert_eq!(h.offset(), SEGMENT_HEADER_BYTES, "first record: {:?}", h);
            }
            Some(prev) => {
                let prev_end = prev.offset() + FRAME_HEADER_BYTES + u64::from(prev.len());
                if self.empty_tail {
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
        self.records.insert(
            h.lsn(),
            Rec {
                handle: h,
                payload: payload.to_vec(),
                time,
            },
        );
        self.next_lsn += 1;
        self.empty_tail = false;
        Ok(())
    }

    /// Predict a purge: the oldest sealed segments whose records all satisfy
    /// `qualifies` go, stopping at the first that does not. Returns the new
    /// first retained LSN and the number of record-holding segments removed.
    fn predict_purge(&self, qualifies: impl Fn(&Rec) -> bool) -> (u64, usize) {
        let mut groups: Vec<Vec<&Rec>> = Vec::new();
        for r in self.retained() {
            match groups.last_mut() {
                Some(g) if g[0].handle.segment() == r.handle.segment() => g.push(r),
                _ => groups.push(vec![r]),
            }
        }
        let sealed = if self.empty_tail {
            groups.len()
        } else {
            groups.len().saturating_sub(1)
        };
        let removed = groups[..sealed]
            .iter()
            .take_while(|g| g.iter().all(|r| qualifies(r)))
            .count();
        let first = groups
            .get(removed)
            .map_or(self.next_lsn, |g| g[0].handle.lsn());
        (first, removed)
    }
}

fn ok<T>(r: streamwal::Result<T>, what: &str) -> TestResult<T> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed: {e:?}")))
}

fn check_read(wal: &Wal, model: &Model, rec: &Rec) -> TestResult {
    let h = rec.handle;
    let got = wal.read(&h);
    if h.lsn() >= model.retained_first {
        let got = ok(got, &format!("read of retained {h:?}"))?;
        prop_assert!(got == rec.payload, "payload of {:?} differs", h);
    } else {
        match got {
            Err(Error::NotFound { lsn, segment }) => {
                prop_assert_eq!((lsn, segment), (h.lsn(), h.segment()));
            }
            other => prop_assert!(
                false,
                "read of purged {:?} (retained from {}): {:?}",
                h,
                model.retained_first,
                other.map(|p| p.len())
            ),
        }
    }
    Ok(())
}

/// `iter_from(from)` (or `iter()`) yields exactly the model's records from
/// `from` on: same handles, same payloads, in order, nothing extra.
fn check_iter(
    iter: impl Iterator<Item = streamwal::Result<(RecordHandle, Vec<u8>)>>,
    model: &Model,
    from: u64,
    what: &str,
) -> TestResult {
    let mut expected = model.records.range(from.max(model.retained_first)..);
    for item in iter {
        let (h, p) = ok(item, what)?;
        let Some((_, rec)) = expected.next() else {
            return Err(TestCaseError::fail(format!(
                "{what}: extra record {h:?} (model ends at {})",
                model.next_lsn - 1
            )));
        };
        prop_assert_eq!(h, rec.handle, "{}", what);
        prop_assert!(p == rec.payload, "{}: payload of {:?} differs", what, h);
    }
    if let Some((lsn, _)) = expected.next() {
        return Err(TestCaseError::fail(format!(
            "{what}: ended before record {lsn}"
        )));
    }
    Ok(())
}

fn check_bounds(wal: &Wal, model: &Model) -> TestResult {
    let (first, last) = if model.retained_count() > 0 {
        (Some(model.retained_first), Some(model.next_lsn - 1))
    } else {
        (None, None)
    };
    prop_assert_eq!(wal.first_lsn(), first, "first_lsn");
    prop_assert_eq!(wal.last_lsn(), last, "last_lsn");
    Ok(())
}

/// Everything the log shows agrees with the model.
fn check_all(wal: &Wal, model: &Model) -> TestResult {
    check_bounds(wal, model)?;
    for rec in model.records.values() {
        check_read(wal, model, rec)?;
    }
    check_iter(wal.iter(), model, model.retained_first, "iter()")?;
    if let Some(first) = wal.first_lsn() {
        check_iter(wal.iter_from(first), model, first, "iter_from(first_lsn)")?;
    }
    Ok(())
}

fn open(dir: &Path, config: Config, model: &mut Model) -> TestResult<Wal> {
    let wal = ok(Wal::open(dir, config.options()), "open")?;
    let report = wal.recovery_report();
    prop_assert_eq!(report.records, model.retained_count(), "{:?}", report);
    prop_assert_eq!(report.torn_bytes, 0, "clean close leaves no torn tail");
    prop_assert!(report.problems.is_empty(), "{:?}", report);
    let (first, last) = if model.retained_count() > 0 {
        (Some(model.retained_first), Some(model.next_lsn - 1))
    } else {
        (None, None)
    };
    prop_assert_eq!(report.first_lsn, first, "{:?}", report);
    prop_assert_eq!(report.last_lsn, last, "{:?}", report);
    let created = wal.stats().segments_created;
    prop_assert!(created <= 1, "open created {} segments", created);
    if created == 1 {
        model.empty_tail = true;
    }
    Ok(wal)
}

fn run(config: Config, ops: Vec<Op>) -> TestResult {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wal");
    let mut config = config;
    let mut model = Model::new();
    let mut wal = open(&dir, config, &mut model)?;
    check_all(&wal, &model)?;

    for op in ops {
        match op {
            Op::Append { payload, time } => {
                let h = match time {
                    Some(t) => ok(wal.append_at(&payload, t), "append_at")?,
                    None => ok(wal.append(&payload), "append")?,
                };
                model.accept(h, &payload, time)?;
            }
            Op::AppendBatch { payloads, time } => {
                let handles = match time {
                    Some(t) => ok(wal.append_batch_at(&payloads, t), "append_batch_at")?,
                    None => ok(wal.append_batch(&payloads), "append_batch")?,
                };
                prop_assert_eq!(handles.len(), payloads.len());
                for (h, p) in handles.into_iter().zip(&payloads) {
                    model.accept(h, p, time)?;
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
                if !model.records.is_empty() {
                    let lsn = 1 + pick.index(model.records.len()) as u64;
                    let rec = &model.records[&lsn];
                    let json = serde_json::to_string(&rec.handle).expect("serialize handle");
                    let back: RecordHandle = serde_json::from_str(&json).expect("deserialize");
                    prop_assert_eq!(back, rec.handle);
                    check_read(&wal, &model, rec)?;
                }
            }
            Op::IterAll => {
                check_iter(wal.iter(), &model, model.retained_first, "iter()")?;
                if let Some(first) = wal.first_lsn() {
                    check_iter(wal.iter_from(first), &model, first, "iter_from(first)")?;
                }
            }
            Op::IterThenAppend { payload } => {
                let held = wal.iter();
                let h = ok(wal.append(&payload), "append")?;
                check_iter(
                    held,
                    &model,
                    model.retained_first,
                    "iter() created before append",
                )?;
                model.accept(h, &payload, None)?;
            }
            Op::IterFrom { pick } => {
                let from = 1 + pick.index(model.next_lsn as usize + 1) as u64;
                let what = format!("iter_from({from})");
                let mut iter = wal.iter_from(from);
                if from < model.retained_first {
                    match iter.next() {
                        Some(Err(Error::NotFound { lsn, .. })) => {
                            prop_assert_eq!(lsn, from, "{}", what);
                        }
                        other => prop_assert!(
                            false,
                            "{}: purged start gave {:?} (retained from {})",
                            what,
                            other.map(|r| r.map(|(h, _)| h)),
                            model.retained_first
                        ),
                    }
                    prop_assert!(iter.next().is_none(), "{}: items after the error", what);
                } else {
                    check_iter(iter, &model, from, &what)?;
                }
            }
            Op::PurgeLsn { pick } => {
                let lsn = pick.index(model.next_lsn as usize + 2) as u64;
                let (first, removed) = model.predict_purge(|r| r.handle.lsn() < lsn);
                let held = wal.iter();
                let n = ok(wal.purge_before_lsn(lsn), "purge_before_lsn")?;
                // An iterator created before the purge still reads it all.
                check_iter(
                    held,
                    &model,
                    model.retained_first,
                    "iter() created before purge",
                )?;
                prop_assert!(
                    n >= removed,
                    "purge_before_lsn({}) removed {} < {}",
                    lsn,
                    n,
                    removed
                );
                prop_assert!(first <= lsn.max(model.retained_first), "model keeps >= lsn");
                model.retained_first = first;
                check_all(&wal, &model)?;
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
                model.retained_first = first;
                check_all(&wal, &model)?;
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
                check_all(&wal, &model)?;
            }
        }
        check_bounds(&wal, &model)?;
    }

    check_all(&wal, &model)?;
    drop(wal);
    let wal = open(&dir, config, &mut model)?;
    check_all(&wal, &model)?;
    // The next LSN is never reused, even after every record was purged.
    let h = ok(wal.append(b"last"), "final append")?;
    model.accept(h, b"last", None)?;
    check_all(&wal, &model)?;
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
