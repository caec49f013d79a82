//! Model test of the block tracker and of `get_or_create`: random add / allocate / commit / cleanup / checkpoint / crash-and-recover sequences agree with a plain in-memory model, and after every recovery the tracker's state, its journal position, every live block's bytes, and the batches to run with their blocks equal the model's.
//!
//! The model is written from the rules alone: unallocated blocks per stream in
//! add order; an allocation takes every unallocated block and is idempotent
//! for a time already allocated; a time at or before the newest allocated one
//! (or below the cleanup mark) gets nothing and journals nothing; commits are
//! remembered; `cleanup(before)` forgets batches (and commits) before
//! `before`. Each journaled event takes the next journal LSN.
//!
//! Recoveries come in two flavours: the tracker reopened from any remembered
//! snapshot (or none) the journal still covers, plus the journal; and
//! `get_or_create` end to end, from the checkpoints written on disk through
//! `StreamingContext::checkpoint` or `CheckpointStore::write`, at a fixed
//! `now_ms`, whose batches to run are checked against the model's.
//!
//! A fixed case runs first and surely fills segments, so journal retirement
//! and receiver-log cleanup are checked on every run; the test fails if any
//! path it exists for (each kind of recovery, retirement, cleanup, downtime
//! batches, refused allocations) was never taken.
//!
//! Cases: `PROPTEST_CASES` (default 24).

mod harness;

use harness::Harness;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore, checkpoint_file_name};
use streamwal::recovery::{
    BatchToRun, ContextOptions, JOURNAL_DIR_NAME, RunReason, StreamingContext,
};
use streamwal::tracker::{BatchBlocks, BlockInfo, BlockTracker, TrackerState};
use streamwal::{DowntimePolicy, Wal, WalOptions};

const INTERVAL_MS: u64 = 1_000;
/// "Now" for every `get_or_create`: past every batch time a case can reach
/// (at most 60 ops x 3 intervals), so downtime batches are always handed back.
const NOW_MS: u64 = 200_000;
/// The graph version `CheckpointStore::write` stamps (a fresh context has 0).
const STORE_GRAPH_VERSION: u32 = 7;

/// A non-trivial engine graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Graph {
    name: String,
    streams: Vec<u32>,
    windows: BTreeMap<String, u64>,
}

fn graph() -> Graph {
    Graph {
        name: "model-engine".into(),
        streams: vec![0, 1, 2],
        windows: BTreeMap::from([("count".into(), 3), ("sum".into(), 5)]),
    }
}

fn wal_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    }
}

fn ctx_opts() -> ContextOptions {
    ContextOptions {
        batch_interval_ms: INTERVAL_MS,
        receiver_log: wal_opts(),
        journal: wal_opts(),
        checkpoints: CheckpointOptions { keep: 3 },
        state: Default::default(),
        // The model hands back one batch per missed interval.
        downtime: DowntimePolicy::RunEach,
    }
}

/// The bytes of the `n`th block: its number first, so no two are alike.
fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut p = format!("block-{n}:").into_bytes();
    p.extend((0..len).map(|i| (i as u64 * 31 + n * 7) as u8));
    p
}

/// Which batch time an allocation asks for.
#[derive(Debug, Clone)]
enum When {
    /// The clock moves on by this many intervals.
    Next(u64),
    /// The newest time asked for so far (repeated: idempotent or nothing).
    Newest,
    /// This many half-intervals before the clock (older: gets nothing,
    /// unless it is an allocated time).
    Back(u64),
}

#[derive(Debug, Clone)]
enum Op {
    /// Append the block's bytes to the receiver log, then `add_block`.
    Add {
        stream: u32,
        len: usize,
        records: u64,
    },
    /// Several `Add`s in a row, streams taken in turn.
    AddBurst {
        count: u64,
        len: usize,
    },
    /// Append to the receiver log only (a crash before `add_block`): the
    /// tracker must never know it.
    Orphan {
        len: usize,
    },
    Allocate(When),
    /// Commit one of the candidate times (allocated, committed, or not).
    Commit(usize),
    /// Clean up before one of the candidate times; maybe also purge the
    /// receiver log.
    Cleanup {
        sel: usize,
        receiver_log: bool,
    },
    /// Remember `tracker.snapshot()` as a checkpoint; maybe retire the
    /// journal up to an earlier remembered snapshot.
    Snapshot {
        retire: Option<usize>,
    },
    /// Write a real checkpoint file (through `StreamingContext::checkpoint`
    /// when the context is open, else `CheckpointStore::write`).
    Checkpoint {
        pending_extra: bool,
    },
    /// Drop everything and recover: through `get_or_create` if asked and the
    /// journal still covers the newest checkpoint file, else the tracker
    /// alone from a remembered snapshot chosen by `snap`.
    Crash {
        via_context: bool,
        snap: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u32..3, 0usize..500, 1u64..100).prop_map(|(stream, len, records)| Op::Add { stream, len, records }),
        5 => (2u64..60, 0usize..200).prop_map(|(count, len)| Op::AddBurst { count, len }),
        3 => (0usize..300).prop_map(|len| Op::Orphan { len }),
        8 => (1u64..4).prop_map(|k| Op::Allocate(When::Next(k))),
        2 => Just(Op::Allocate(When::Newest)),
        2 => (1u64..8).prop_map(|n| Op::Allocate(When::Back(n))),
        7 => any::<usize>().prop_map(Op::Commit),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(sel, receiver_log)| Op::Cleanup { sel, receiver_log }),
        4 => prop::option::weighted(0.4, any::<usize>()).prop_map(|retire| Op::Snapshot { retire }),
        5 => any::<bool>().prop_map(|pending_extra| Op::Checkpoint { pending_extra }),
        5 => (any::<bool>(), any::<usize>()).prop_map(|(via_context, snap)| Op::Crash { via_context, snap }),
    ]
}

/// The tracker's rules, implemented plainly.
#[derive(Debug, Default)]
struct Model {
    unallocated: BTreeMap<u32, Vec<BlockInfo>>,
    allocated: BTreeMap<u64, BTreeMap<u32, Vec<BlockInfo>>>,
    committed: BTreeSet<u64>,
    newest_allocated: Option<u64>,
    cleaned_before: u64,
    max_block_lsn: u64,
    /// Journal events written so far (the journal's newest LSN).
    events: u64,
    /// Receiver-log LSN -> bytes of every block ever added.
    payloads: BTreeMap<u64, Vec<u8>>,
}

impl Model {
    fn add(&mut self, b: BlockInfo, bytes: Vec<u8>) {
        self.max_block_lsn = self.max_block_lsn.max(b.handle.lsn());
        self.payloads.insert(b.handle.lsn(), bytes);
        self.unallocated.entry(b.stream_id).or_default().push(b);
        self.events += 1;
    }

    fn allocate(&mut self, t: u64) -> BatchBlocks {
        if let Some(blocks) = self.allocated.get(&t) {
            return blocks.clone();
        }
        let too_old = self.newest_allocated.is_some_and(|n| t <= n) || t < self.cleaned_before;
        if too_old {
            return BatchBlocks::new();
        }
        let blocks = std::mem::take(&mut self.unallocated);
        self.allocated.insert(t, blocks.clone());
        self.newest_allocated = Some(t);
        self.events += 1;
        blocks
    }

    fn commit(&mut self, t: u64) {
        if t >= self.cleaned_before {
            self.committed.insert(t);
        }
        self.events += 1;
    }

    fn cleanup(&mut self, before: u64) {
        self.allocated.retain(|&t, _| t >= before);
        self.committed.retain(|&t| t >= before);
        self.cleaned_before = self.cleaned_before.max(before);
        self.events += 1;
    }

    /// Every block the tracker still knows (unallocated or in a live batch).
    fn live_blocks(&self) -> Vec<&BlockInfo> {
        self.unallocated
            .values()
            .chain(self.allocated.values().flat_map(|b| b.values()))
            .flatten()
            .collect()
    }

    /// The batches a recovery at `NOW_MS` must hand back, given the newest
    /// checkpoint file: pending at the checkpoint, then allocated and not
    /// committed, then one per interval after the newest known batch time up
    /// to now; never a committed or cleaned-up batch; in time order.
    fn batches_to_run(&self, disk: Option<&DiskCheckpoint>) -> Vec<BatchToRun> {
        let live = |t: u64| !self.committed.contains(&t) && t >= self.cleaned_before;
        let mut out: BTreeMap<u64, BatchToRun> = BTreeMap::new();
        let mut put = |t: u64, reason: RunReason| {
            if live(t) {
                out.entry(t).or_insert_with(|| BatchToRun {
                    batch_time: t,
                    blocks: self.allocated.get(&t).cloned(),
                    reason,
                });
            }
        };
        let pending = disk.map_or(&[][..], |d| &d.pending[..]);
        for &t in pending {
            put(t, RunReason::PendingAtCheckpoint);
        }
        for &t in self.allocated.keys() {
            put(t, RunReason::AllocatedNotCommitted);
        }
        // Batch times are positive: 0 means "no batch time known yet".
        let newest = [
            disk.map_or(0, |d| d.time),
            self.newest_allocated.unwrap_or(0),
            pending.iter().copied().max().unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if newest > 0 {
            let mut t = newest + INTERVAL_MS;
            while t <= NOW_MS {
                put(t, RunReason::Downtime);
                t += INTERVAL_MS;
            }
        }
        out.into_values().collect()
    }
}

/// The newest checkpoint file on disk (times only grow, so the last written).
#[derive(Debug, Clone)]
struct DiskCheckpoint {
    time: u64,
    lsn: u64,
    pending: Vec<u64>,
    graph_version: u32,
    offsets: BTreeMap<String, String>,
}

/// What is open: a whole context, or the parts opened one by one.
enum Sut {
    Ctx(Box<StreamingContext<Graph>>),
    Parts(Box<Parts>),
}

struct Parts {
    rx: Wal,
    tracker: BlockTracker,
    store: CheckpointStore,
}

impl Sut {
    fn rx(&self) -> &Wal {
        match self {
            Sut::Ctx(c) => &c.receiver_log,
            Sut::Parts(p) => &p.rx,
        }
    }
    fn tracker(&self) -> &BlockTracker {
        match self {
            Sut::Ctx(c) => &c.tracker,
            Sut::Parts(p) => &p.tracker,
        }
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
    }
    finish(h, ops.len());
}

/// Always end with a crash through each path.
fn finish(mut h: Harness, snap: usize) {
    h.apply(&Op::Crash {
        via_context: false,
        snap,
    });
    h.apply(&Op::Crash {
        via_context: true,
        snap: 0,
    });
    assert!(h.recoveries >= 2);
    covered_stat(|c| c.cases += 1);
}

/// One fixed case that surely fills segments, so every run checks journal
/// retirement (by the context and by hand) and receiver-log cleanup against
/// the model, whatever the random cases draw.
fn directed_case() {
    let mut h = Harness::new();
    let burst = |h: &mut Harness| {
        for _ in 0..4 {
            h.apply(&Op::AddBurst {
                count: 29,
                len: 150,
            });
        }
    };
    burst(&mut h);
    // No checkpoint yet: `get_or_create` recovers from the journal alone.
    h.apply(&Op::Crash {
        via_context: true,
        snap: 0,
    });
    h.apply(&Op::Allocate(When::Next(1)));
    h.apply(&Op::Checkpoint {
        pending_extra: false,
    });
    burst(&mut h);
    h.apply(&Op::Allocate(When::Next(2)));
    // The context retires the journal up to its first checkpoint.
    h.apply(&Op::Checkpoint {
        pending_extra: true,
    });
    h.apply(&Op::Crash {
        via_context: true,
        snap: 0,
    });
    burst(&mut h);
    h.apply(&Op::Allocate(When::Next(1)));
    h.apply(&Op::Commit(0));
    // Clean up before the largest candidate: every batch goes, and the
    // receiver log's sealed segments with them.
    let last = h.candidate_times().len() - 1;
    h.apply(&Op::Cleanup {
        sel: last,
        receiver_log: true,
    });
    h.apply(&Op::Snapshot { retire: None });
    burst(&mut h);
    h.apply(&Op::Allocate(When::Newest));
    h.apply(&Op::Allocate(When::Back(3)));
    // By hand: retire up to the snapshot just taken.
    let newest = h.snaps.len() - 1;
    h.apply(&Op::Snapshot {
        retire: Some(newest),
    });
    finish(h, 0);
}

/// What the cases exercised, summed: the test fails if a path it exists to
/// check was never taken.
#[derive(Debug, Default)]
struct Coverage {
    cases: u64,
    context_recoveries_from_checkpoint: u64,
    context_recoveries_from_journal: u64,
    tracker_recoveries_from_snapshot: u64,
    journal_segments_retired: u64,
    receiver_segments_purged: u64,
    downtime_batches: u64,
    allocated_batches_to_run: u64,
    refused_allocations: u64,
}

static COVERAGE: std::sync::Mutex<Coverage> = std::sync::Mutex::new(Coverage {
    cases: 0,
    context_recoveries_from_checkpoint: 0,
    context_recoveries_from_journal: 0,
    tracker_recoveries_from_snapshot: 0,
    journal_segments_retired: 0,
    receiver_segments_purged: 0,
    downtime_batches: 0,
    allocated_batches_to_run: 0,
    refused_allocations: 0,
});

fn covered_stat(f: impl FnOnce(&mut Coverage)) {
    f(&mut COVERAGE.lock().unwrap_or_else(|e| e.into_inner()));
}

#[test]
fn tracker_and_recovery_agree_with_model() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    directed_case();
    let result = runner.run(&prop::collection::vec(op(), 1..100), |ops| {
        run(&ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    println!("{c:?}");
    assert!(c.cases >= u64::from(cases));
    assert!(c.context_recoveries_from_checkpoint > 0, "{c:?}");
    assert!(c.context_recoveries_from_journal > 0, "{c:?}");
    assert!(c.tracker_recoveries_from_snapshot > 0, "{c:?}");
    assert!(c.journal_segments_retired > 0, "{c:?}");
    assert!(c.receiver_segments_purged > 0, "{c:?}");
    assert!(c.downtime_batches > 0, "{c:?}");
    assert!(c.allocated_batches_to_run > 0, "{c:?}");
    assert!(c.refused_allocations > 0, "{c:?}");
}
