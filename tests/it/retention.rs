//! `StreamingContext::cleanup_covered` against a model, with several receivers that append and register in any order, batches committed out of order, cleanups, checkpoints and reopens: after every operation every block a pending batch, the unallocated set or a receiver still needs reads back byte for byte, and after every cleanup every receiver-log segment the model says is dead is gone.
//!
//! The model knows each block's state from the rules alone: being stored
//! (appended, not registered), unallocated, allocated to a live batch, or
//! dead (its batch was cleaned up, or its receiver never registered it
//! before a restart). A sealed segment is dead when it and every older
//! segment hold only dead blocks (a log keeps a suffix of its segments).
//!
//! Recovery after a reopen, from the newest checkpoint or (its file deleted)
//! an older kept one, hands back exactly the uncommitted batches and the
//! unallocated blocks, all readable.
//!
//! Cases: `PROPTEST_CASES` (default 48).

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use streamwal::checkpoint::checkpoint_file_name;
use streamwal::recovery::{CheckpointAt, ContextOptions, StreamingContext};
use streamwal::storage::MemStorage;
use streamwal::tracker::{BlockInfo, PendingBlock};
use streamwal::{Location, WalOptions};

const RECEIVERS: usize = 3;
const INTERVAL_MS: u64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    /// Receiver `rx` appends a block and holds it unregistered.
    Append { rx: usize, size: usize },
    /// Receiver `rx` registers one of its pending blocks (any of them).
    Register { rx: usize, pick: usize },
    /// Receiver `rx` stores a block in one call.
    Store { rx: usize, size: usize },
    /// Allocate the next batch.
    Allocate,
    /// Commit one of the live batches, not necessarily the oldest.
    Commit { pick: usize },
    /// Forget the batches before one of the live batch times (or all).
    Cleanup { pick: usize },
    /// Free what nothing needs.
    CleanupCovered,
    /// Checkpoint at the newest batch, with the uncommitted ones pending.
    Checkpoint,
    /// Drop the context (pending blocks are never acknowledged) and reopen,
    /// perhaps after deleting the newest checkpoint file (recovery then
    /// starts from an older kept one).
    Reopen { drop_newest_checkpoint: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..RECEIVERS, 200..1_500usize).prop_map(|(rx, size)| Op::Append { rx, size }),
        3 => (0..RECEIVERS, any::<usize>()).prop_map(|(rx, pick)| Op::Register { rx, pick }),
        3 => (0..RECEIVERS, 200..1_500usize).prop_map(|(rx, size)| Op::Store { rx, size }),
        2 => Just(Op::Allocate),
        2 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Cleanup { pick }),
        3 => Just(Op::CleanupCovered),
        1 => Just(Op::Checkpoint),
        1 => any::<bool>().prop_map(|drop_newest_checkpoint| Op::Reopen { drop_newest_checkpoint }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Unallocated,
    Allocated(u64),
    Dead,
}

#[derive(Debug)]
struct Block {
    info: BlockInfo,
    payload: Vec<u8>,
    status: Status,
    /// Added to the tracker (then or later).
    registered: bool,
}

#[derive(Debug, Default)]
struct Model {
    blocks: Vec<Block>,
    /// Live batches (allocated, not cleaned up) and whether committed.
    batches: BTreeMap<u64, bool>,
    last_batch: u64,
    /// The batch times of the checkpoint files kept (the newest 10).
    checkpoints: BTreeSet<u64>,
}

impl Model {
    fn by_lsn(&mut self, lsn: u64) -> &mut Block {
        self.blocks
            .iter_mut()
            .find(|b| b.info.handle.lsn() == lsn)
            .expect("the model knows every block")
    }

    /// The blocks of the sealed segments that are dead: the oldest segments
    /// up to the first holding a block that is not dead. A segment is
    /// sealed if a later segment holds a block. A block never registered
    /// with an LSN above every registered one is kept (retention cannot tell
    /// it from a block appended by hand whose `add_block` is on its way).
    fn dead_prefix(&self) -> Vec<&Block> {
        let newest_added = self
            .blocks
            .iter()
            .filter(|b| b.registered)
            .map(|b| b.info.handle.lsn())
            .max()
            .unwrap_or(0);
        let dead = |b: &Block| b.status == Status::Dead && b.info.handle.lsn() <= newest_added;
        let mut segs: BTreeMap<u64, Vec<&Block>> = BTreeMap::new();
        for b in &self.blocks {
            segs.entry(b.info.handle.segment()).or_default().push(b);
        }
        let newest = segs.keys().next_back().copied().unwrap_or(0);
        segs.into_iter()
            .take_while(|(seq, list)| *seq < newest && list.iter().all(|b| dead(b)))
            .flat_map(|(_, list)| list)
            .collect()
    }
}

fn payload(id: usize, size: usize) -> Vec<u8> {
    let mut p = format!("block {id}:").into_bytes();
    p.resize(size, b'a' + (id % 26) as u8);
    p
}

fn open(storage: &Arc<MemStorage>, now_ms: u64) -> StreamingContext<()> {
    let small = WalOptions {
        segment_bytes: 4 << 10,
        ..WalOptions::default()
    };
    let opts = ContextOptions {
        receiver_log: small.clone(),
        journal: small,
        ..ContextOptions::new(INTERVAL_MS)
    };
    let storage: Arc<dyn streamwal::storage::Storage> = storage.clone();
    StreamingContext::builder(Location::dir_on(storage, "/ctx"))
        .options(opts)
        .now_ms(now_ms)
        .get_or_create(|| ())
        .expect("the context opens")
}

/// Every block that is not dead reads back; every block of a dead segment
/// is gone once a cleanup ran.
fn check(ctx: &StreamingContext<()>, model: &Model, after_cleanup: bool) {
    for b in model.blocks.iter().filter(|b| b.status != Status::Dead) {
        let got = ctx.read_block(&b.info).unwrap_or_else(|e| {
            panic!("block {:?} ({:?}) is needed: {e}", b.info.handle, b.status)
        });
        assert_eq!(got, b.payload, "block {:?}", b.info.handle);
    }
    if after_cleanup {
        let dead = model.dead_prefix();
        for b in &dead {
            assert!(
                ctx.read_block(&b.info).is_err(),
                "block {:?} lies in a dead segment and was kept",
                b.info.handle
            );
        }
        if let Some(max) = dead.iter().map(|b| b.info.handle.lsn()).max() {
            let first = ctx.receiver_log.first_lsn();
            assert!(
                first.is_none_or(|f| f > max),
                "log starts at {first:?}, dead up to {max}"
            );
        }
    }
}

fn run(ops: &[Op]) -> usize {
    let storage = Arc::new(MemStorage::new());
    let mut model = Model::default();
    let mut removed_total = 0;
    let mut drop_newest = false;
    for epoch in ops.split_inclusive(|o| matches!(o, Op::Reopen { .. })) {
        if std::mem::take(&mut drop_newest) && model.checkpoints.len() > 1 {
            let t = model.checkpoints.pop_last().unwrap();
            let path = Path::new("/ctx").join(checkpoint_file_name(t));
            streamwal::storage::Storage::remove(&*storage, &path).unwrap();
        }
        // No downtime: the clock stands at the newest batch.
        let ctx = open(&storage, model.last_batch);
        if let Some(r) = &ctx.recovered {
            let unallocated: BTreeSet<u64> = r
                .unallocated
                .values()
                .flatten()
                .map(|b| b.handle.lsn())
                .collect();
            let expected: BTreeSet<u64> = model
                .blocks
                .iter()
                .filter(|b| b.status == Status::Unallocated)
                .map(|b| b.info.handle.lsn())
                .collect();
            assert_eq!(unallocated, expected, "recovered unallocated blocks");
            let to_run: Vec<u64> = r.batches.iter().map(|b| b.batch_time).collect();
            let open: Vec<u64> = model
                .batches
                .iter()
                .filter(|(_, c)| !**c)
                .map(|(t, _)| *t)
                .collect();
            assert_eq!(to_run, open, "the batches to run are the uncommitted ones");
            for batch in &r.batches {
                for b in batch.blocks.iter().flat_map(|m| m.values()).flatten() {
                    assert_eq!(
                        model.by_lsn(b.handle.lsn()).status,
                        Status::Allocated(batch.batch_time)
                    );
                }
            }
        }
        check(&ctx, &model, false);
        let mut pending: Vec<Vec<PendingBlock<'_>>> = (0..RECEIVERS).map(|_| Vec::new()).collect();
        for op in epoch {
            let mut cleaned = false;
            match op {
                Op::Append { rx, size } => {
                    let bytes = payload(model.blocks.len(), *size);
                    let p = ctx.append_block(*rx as u32, &bytes, 1, 0).unwrap();
                    model.blocks.push(Block {
                        info: p.info().clone(),
                        payload: bytes,
                        status: Status::Pending,
                        registered: false,
                    });
                    pending[*rx].push(p);
                }
                Op::Register { rx, pick } => {
                    if !pending[*rx].is_empty() {
                        let n = pending[*rx].len();
                        let info = pending[*rx].remove(pick % n).register().unwrap();
                        let b = model.by_lsn(info.handle.lsn());
                        b.status = Status::Unallocated;
                        b.registered = true;
                    }
                }
                Op::Store { rx, size } => {
                    let bytes = payload(model.blocks.len(), *size);
                    let info = ctx.store_block(*rx as u32, &bytes, 1, 0).unwrap();
                    model.blocks.push(Block {
                        info,
                        payload: bytes,
                        status: Status::Unallocated,
                        registered: true,
                    });
                }
                Op::Allocate => {
                    let t = model.last_batch + INTERVAL_MS;
                    let got: BTreeSet<u64> = ctx
                        .tracker
                        .allocate_blocks_to_batch(t)
                        .unwrap()
                        .values()
                        .flatten()
                        .map(|b| b.handle.lsn())
                        .collect();
                    let mut want = BTreeSet::new();
                    for b in model
                        .blocks
                        .iter_mut()
                        .filter(|b| b.status == Status::Unallocated)
                    {
                        b.status = Status::Allocated(t);
                        want.insert(b.info.handle.lsn());
                    }
                    assert_eq!(got, want, "batch {t} takes every unallocated block");
                    model.batches.insert(t, false);
                    model.last_batch = t;
                }
                Op::Commit { pick } => {
                    let open: Vec<u64> = model
                        .batches
                        .iter()
                        .filter(|(_, c)| !**c)
                        .map(|(t, _)| *t)
                        .collect();
                    if !open.is_empty() {
                        let t = open[pick % open.len()];
                        ctx.commit_batch(t).unwrap();
                        model.batches.insert(t, true);
                    }
                }
                Op::Cleanup { pick } => {
                    let times: Vec<u64> = model.batches.keys().copied().collect();
                    let before = match times.len() {
                        0 => continue,
                        n if pick % (n + 1) == n => model.last_batch + 1,
                        n => times[pick % n],
                    };
                    ctx.tracker.cleanup(before).unwrap();
                    model.batches.retain(|t, _| *t >= before);
                    for b in &mut model.blocks {
                        if matches!(b.status, Status::Allocated(t) if t < before) {
                            b.status = Status::Dead;
                        }
                    }
                }
                Op::CleanupCovered => {
                    let report = ctx.cleanup_covered().unwrap();
                    removed_total += report.receiver_segments_removed;
                    cleaned = true;
                }
                Op::Checkpoint => {
                    let at = CheckpointAt {
                        batch_time: model.last_batch.max(1),
                        pending_batches: model
                            .batches
                            .iter()
                            .filter(|(_, c)| !**c)
                            .map(|(t, _)| *t)
                            .collect(),
                        ..CheckpointAt::default()
                    };
                    let t = at.batch_time;
                    ctx.checkpoint(at).unwrap();
                    model.checkpoints.insert(t);
                    while model.checkpoints.len() > 10 {
                        model.checkpoints.pop_first();
                    }
                }
                Op::Reopen {
                    drop_newest_checkpoint,
                } => drop_newest = *drop_newest_checkpoint,
            }
            check(&ctx, &model, cleaned);
        }
        if matches!(epoch.last(), Some(Op::Reopen { .. })) {
            // Never registered, never acknowledged: recovery does not hand
            // them back, and retention may drop them.
            drop(pending);
            for b in &mut model.blocks {
                if b.status == Status::Pending {
                    b.status = Status::Dead;
                }
            }
        }
    }
    removed_total
}

/// Two receivers: one appends first and registers last, the other stores
/// enough to fill segments, its batch is allocated and cleaned up. The
/// first block must survive `cleanup_covered` (before, a block appended but
/// not yet added below the newest added one was deleted).
#[test]
fn a_block_appended_before_others_and_registered_after_them_survives() {
    let storage = Arc::new(MemStorage::new());
    let ctx = open(&storage, 0);
    let slow = ctx.append_block(0, &payload(0, 1_000), 1, 0).unwrap();
    for i in 1..20 {
        ctx.store_block(1, &payload(i, 1_000), 1, 0).unwrap();
    }
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.commit_batch(1_000).unwrap();
    ctx.tracker.cleanup(1_001).unwrap();
    let report = ctx.cleanup_covered().unwrap();
    assert_eq!(
        report.receiver_segments_removed, 0,
        "the slow block's segment is the oldest"
    );
    assert_eq!(report.receiver_floor_lsn, slow.info().handle.lsn());
    let info = slow.register().unwrap();
    assert_eq!(ctx.read_block(&info).unwrap(), payload(0, 1_000));
    // Registered and allocated to a batch that is cleaned up: now it goes,
    // and every segment but the tail with it.
    ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    ctx.tracker.cleanup(2_001).unwrap();
    let report = ctx.cleanup_covered().unwrap();
    assert!(report.receiver_segments_removed >= 4, "{report:?}");
    assert!(ctx.read_block(&info).is_err());
}

#[test]
fn cleanup_covered_matches_the_model() {
    // A fixed case that surely fills and frees segments.
    let mut fixed = Vec::new();
    for round in 0..4 {
        for i in 0..8 {
            fixed.push(Op::Append {
                rx: i % RECEIVERS,
                size: 1_200,
            });
        }
        for i in 0..8 {
            fixed.push(Op::Register {
                rx: i % RECEIVERS,
                pick: 7 - i,
            });
        }
        fixed.push(Op::Allocate);
        fixed.push(Op::Commit { pick: 0 });
        fixed.push(Op::Checkpoint);
        // One live batch: pick 1 of 0..=1 forgets every batch.
        fixed.push(Op::Cleanup { pick: 1 });
        fixed.push(Op::CleanupCovered);
        if round == 2 {
            fixed.push(Op::Reopen {
                drop_newest_checkpoint: true,
            });
        }
    }
    assert!(run(&fixed) > 0, "the fixed case frees segments");

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..80), |ops| {
            run(&ops);
            Ok(())
        })
        .unwrap();
}

/// Real threads: three receivers store blocks while the batch loop
/// allocates, reads, commits, cleans up and runs `cleanup_covered` after
/// every batch. Every block of every batch reads back when its batch runs
/// (a block deleted while being stored would fail then), and every block
/// stored is in exactly one batch.
#[test]
fn receivers_on_threads_and_cleanup_covered_after_every_batch() {
    const PER_RECEIVER: usize = 150;
    let storage = Arc::new(MemStorage::new());
    let ctx = open(&storage, 0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut seen = BTreeSet::new();
    let mut removed = 0;
    std::thread::scope(|s| {
        for rx in 0..RECEIVERS {
            let (ctx, done) = (&ctx, &done);
            s.spawn(move || {
                for i in 0..PER_RECEIVER {
                    ctx.store_block(rx as u32, &payload(rx * PER_RECEIVER + i, 700), 1, 0)
                        .unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let mut t = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == RECEIVERS;
            t += INTERVAL_MS;
            let blocks = ctx.tracker.allocate_blocks_to_batch(t).unwrap();
            for (stream, data) in ctx.read_batch(&blocks).unwrap() {
                for bytes in data {
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
                    let id: usize = text["block ".len()..text.find(':').unwrap()]
                        .parse()
                        .unwrap();
                    assert_eq!(id / PER_RECEIVER, stream as usize);
                    assert_eq!(bytes, payload(id, 700));
                    assert!(seen.insert(id), "block {id} in two batches");
                }
            }
            ctx.commit_batch(t).unwrap();
            ctx.tracker.cleanup(t + 1).unwrap();
            removed += ctx.cleanup_covered().unwrap().receiver_segments_removed;
            if finished {
                break;
            }
        }
    });
    assert_eq!(
        seen.len(),
        RECEIVERS * PER_RECEIVER,
        "every block in a batch"
    );
    assert!(removed > 0, "segments were freed");
}
