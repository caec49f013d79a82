//! Driver recovery with `get_or_create`: a fresh start, recovery from the journal alone, from a checkpoint plus the journal's tail, and from an older checkpoint when the newest is damaged; the batches to run are exactly the uncommitted ones (pending, allocated, downtime) in time order with unchanged block lists; a receiver log or journal that lost acknowledged data is an error, never a silent loss.

use crate::common;

use common::context::add;

use std::collections::BTreeMap;
use std::path::Path;
use streamwal::recovery::{ContextOptions, RunReason, StreamingContext};
use streamwal::{CorruptionKind, DowntimePolicy, Error, WalOptions};

type Graph = BTreeMap<String, u64>;

fn opts() -> ContextOptions {
    let small = WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    };
    ContextOptions {
        receiver_log: small.clone(),
        journal: small,
        // These tests count one batch per missed interval.
        downtime: DowntimePolicy::RunEach,
        ..ContextOptions::new(1_000)
    }
}

fn open(root: &Path, now: u64) -> streamwal::Result<StreamingContext<Graph>> {
    streamwal::StreamingContext::builder(root.join("ckpt"))
        .receiver_log(root.join("rx"))
        .options(opts())
        .now_ms(now)
        .get_or_create(|| Graph::from([("fresh".to_string(), 1)]))
}

#[test]
fn fresh_start_then_recovery_from_the_journal_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path(), 0).unwrap();
    assert!(ctx.recovered.is_none());
    assert_eq!(ctx.graph["fresh"], 1);
    let a = add(&ctx, 0, b"a", 1);
    let b1 = ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    let b = add(&ctx, 1, b"b", 2);
    drop(ctx);

    let ctx = open(tmp.path(), 3_000).unwrap();
    let rec = ctx.recovered.as_ref().expect("journal has events");
    assert_eq!(rec.checkpoint_time, None);
    let times: Vec<_> = rec
        .batches
        .iter()
        .map(|b| (b.batch_time, b.reason))
        .collect();
    assert_eq!(
        times,
        [
            (1_000, RunReason::AllocatedNotCommitted),
            (2_000, RunReason::Downtime),
            (3_000, RunReason::Downtime)
        ]
    );
    assert_eq!(rec.batches[0].blocks.as_ref(), Some(&b1));
    assert_eq!(rec.batches[0].blocks.as_ref().unwrap()[&0], vec![a.clone()]);
    assert_eq!(rec.batches[1].blocks, None);
    assert_eq!(rec.unallocated[&1], vec![b.clone()]);
    assert_eq!(ctx.read_block(&a).unwrap(), b"a");
    // Running the downtime batch hands it the unallocated block.
    assert_eq!(
        ctx.tracker.allocate_blocks_to_batch(2_000).unwrap()[&1],
        vec![b]
    );
}

#[test]
fn checkpoint_plus_journal_tail_and_committed_batches_do_not_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = open(tmp.path(), 0).unwrap();
    ctx.graph.insert("words".into(), 42);
    add(&ctx, 0, b"one", 1);
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.tracker.commit_batch(1_000).unwrap();
    add(&ctx, 0, b"two", 2);
    let pending = ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 2_000,
        pending_batches: vec![2_000],
        source_offsets: BTreeMap::from([("src".into(), "7".into())]),
    })
    .unwrap();
    add(&ctx, 0, b"three", 3);
    let after = ctx.tracker.allocate_blocks_to_batch(3_000).unwrap();
    ctx.tracker.commit_batch(2_000).unwrap(); // committed after the checkpoint
    let unalloc = add(&ctx, 2, b"four", 4);
    drop(ctx);

    let ctx = open(tmp.path(), 5_500).unwrap();
    assert_eq!(ctx.graph["words"], 42, "graph comes from the checkpoint");
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(rec.checkpoint_time, Some(2_000));
    assert_eq!(rec.source_offsets["src"], "7");
    let got: Vec<_> = rec
        .batches
        .iter()
        .map(|b| (b.batch_time, b.reason, b.blocks.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (3_000, RunReason::AllocatedNotCommitted, Some(after)),
            (4_000, RunReason::Downtime, None),
            (5_000, RunReason::Downtime, None),
        ],
        "1_000 and 2_000 are committed and must not run again"
    );
    assert!(rec.committed.contains(&2_000));
    assert_eq!(rec.unallocated[&2], vec![unalloc]);
    assert!(ctx.report.journal_events_replayed >= 4);
    assert!(ctx.report.checkpoint_used.is_some());
    assert_eq!(ctx.read_batch(&pending).unwrap()[&0], vec![b"two".to_vec()]);
}

#[test]
fn a_damaged_newest_checkpoint_is_an_error_or_falls_back_to_the_previous_one_if_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path(), 0).unwrap();
    add(&ctx, 0, b"x", 1);
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 1_000,
        pending_batches: vec![1_000],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    add(&ctx, 0, b"y", 2);
    let second = ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 2_000,
        pending_batches: vec![1_000, 2_000],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    drop(ctx);
    let newest = ctx_file(tmp.path(), 2_000);
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&newest, bytes).unwrap();

    // By default a damaged newest checkpoint is an error naming it.
    match open(tmp.path(), 2_000) {
        Err(Error::CheckpointUnusable { file, .. }) => assert_eq!(file, newest),
        other => panic!("expected CheckpointUnusable, got {other:?}"),
    }
    let ctx = streamwal::StreamingContext::builder(tmp.path().join("ckpt"))
        .receiver_log(tmp.path().join("rx"))
        .options(opts())
        .now_ms(2_000)
        .on_checkpoint_error(streamwal::recovery::OnCheckpointError::UseOlder)
        .get_or_create(|| Graph::from([("fresh".to_string(), 1)]))
        .unwrap();
    assert_eq!(ctx.report.checkpoints_skipped.len(), 1);
    assert_eq!(ctx.report.checkpoints_skipped[0].file, newest);
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(rec.checkpoint_time, Some(1_000));
    // The journal still holds what came after the older checkpoint.
    let b2 = rec.batches.iter().find(|b| b.batch_time == 2_000).unwrap();
    assert_eq!(b2.blocks.as_ref(), Some(&second));
}

fn ctx_file(root: &Path, t: u64) -> std::path::PathBuf {
    root.join("ckpt").join(format!("checkpoint-{t:020}.ckpt"))
}

#[test]
fn a_receiver_log_that_lost_acknowledged_blocks_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path(), 0).unwrap();
    add(&ctx, 0, b"acknowledged", 1);
    drop(ctx);
    std::fs::remove_dir_all(tmp.path().join("rx")).unwrap();
    match open(tmp.path(), 0) {
        Err(Error::Corruption {
            kind: CorruptionKind::LogTooShort { needed: 1, last: 0 },
            ..
        }) => {}
        other => panic!("expected LogTooShort, got {other:?}"),
    }
}

#[test]
fn a_journal_that_lost_events_a_checkpoint_covers_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path(), 0).unwrap();
    add(&ctx, 0, b"a", 1);
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 1_000,
        pending_batches: vec![],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    drop(ctx);
    std::fs::remove_dir_all(tmp.path().join("ckpt").join("journal")).unwrap();
    match open(tmp.path(), 0) {
        Err(e) => assert!(e.is_corruption(), "{e:?}"),
        Ok(_) => panic!("a journal behind its checkpoint must not open"),
    }
}

/// A restarted driver reruns its pending batches and checkpoints each at its
/// own (older) batch time, as Spark does: journal retirement must still leave
/// every event the newest-by-time checkpoint needs.
#[test]
fn checkpoints_written_at_older_batch_times_keep_the_journal_recoverable() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path(), 0).unwrap();
    for t in [1_000, 2_000, 3_000] {
        add(&ctx, 0, format!("block {t}").as_bytes(), t);
        ctx.tracker.allocate_blocks_to_batch(t).unwrap();
    }
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 3_000,
        pending_batches: vec![1_000, 2_000, 3_000],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    drop(ctx);

    let ctx = open(tmp.path(), 3_000).unwrap();
    for t in [1_000, 2_000] {
        for i in 0..100 {
            add(&ctx, 1, format!("late {t} {i}").as_bytes(), t);
        }
        ctx.tracker.commit_batch(t).unwrap();
        ctx.checkpoint(streamwal::CheckpointAt {
            batch_time: t,
            pending_batches: vec![3_000],
            source_offsets: BTreeMap::new(),
        })
        .unwrap();
    }
    drop(ctx);

    let ctx = open(tmp.path(), 3_000).unwrap();
    let rec = ctx.recovered.as_ref().unwrap();
    // The checkpoint written last wins, whatever its batch time (SPARK-11267).
    assert_eq!(rec.checkpoint_time, Some(2_000));
    let times: Vec<u64> = rec.batches.iter().map(|b| b.batch_time).collect();
    assert_eq!(times, [3_000], "1_000 and 2_000 were committed");
    assert_eq!(rec.unallocated[&1].len(), 200);
}
