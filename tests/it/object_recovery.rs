//! Driver recovery with everything on object storage
//! (`StreamingContext::builder` at an object-storage location): the same outcomes as on a file system
//! (batches to run, unallocated blocks, blocks read back), journal
//! retirement, and a driver that is taken over cannot add to what its
//! successor recovered. On memory always, and on a real S3-protocol server
//! when `STREAMWAL_S3_URL` is set.
#![cfg(feature = "object-store")]

use crate::common;

use common::context::add;
use common::objects::{Backend, backends};
use std::collections::BTreeMap;
use streamwal::recovery::{ContextOptions, RunReason, StreamingContext};
use streamwal::{DowntimePolicy, Error, WalOptions};

type Graph = BTreeMap<String, u64>;

fn opts() -> ContextOptions {
    let small = WalOptions {
        max_batch_bytes: 16 << 10,
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

fn open(b: &dyn Backend, now: u64) -> streamwal::Result<StreamingContext<Graph>> {
    streamwal::StreamingContext::builder(b.location("ctx"))
        .options(opts())
        .now_ms(now)
        .get_or_create(|| Graph::from([("fresh".to_string(), 1)]))
}

#[test]
fn recovery_from_the_journal_alone_and_from_a_checkpoint_plus_its_tail() {
    for b in backends("orec_basic") {
        let ctx = open(&*b, 0).unwrap();
        assert!(ctx.recovered.is_none(), "{}", b.name());
        let a = add(&ctx, 0, b"a", 1);
        let b1 = ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
        add(&ctx, 1, b"b", 2);
        drop(ctx);

        // From the journal alone.
        let mut ctx = open(&*b, 2_000).unwrap();
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
                (2_000, RunReason::Downtime)
            ]
        );
        assert_eq!(rec.batches[0].blocks.as_ref(), Some(&b1));
        assert_eq!(ctx.read_block(&a).unwrap(), b"a");

        // Run them, checkpoint, go on past the checkpoint.
        ctx.tracker.commit_batch(1_000).unwrap();
        let two = ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
        ctx.graph.insert("words".into(), 42);
        ctx.checkpoint(streamwal::CheckpointAt {
            batch_time: 2_000,
            pending_batches: vec![2_000],
            source_offsets: BTreeMap::from([("src".into(), "7".into())]),
        })
        .unwrap();
        let c = add(&ctx, 0, b"three", 3);
        let after = ctx.tracker.allocate_blocks_to_batch(3_000).unwrap();
        let unalloc = add(&ctx, 2, b"four", 4);
        drop(ctx);

        let ctx = open(&*b, 4_000).unwrap();
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
                (2_000, RunReason::PendingAtCheckpoint, Some(two)),
                (3_000, RunReason::AllocatedNotCommitted, Some(after.clone())),
                (4_000, RunReason::Downtime, None),
            ]
        );
        assert_eq!(rec.unallocated[&2], vec![unalloc.clone()]);
        let data = ctx.read_batch(&after).unwrap();
        assert_eq!(data[&0], vec![b"three".to_vec()]);
        assert_eq!(ctx.read_block(&c).unwrap(), b"three");
        assert!(
            ctx.report
                .checkpoint_used
                .as_ref()
                .is_some_and(|p| p.to_string_lossy().contains("checkpoint-")),
            "{:?}",
            ctx.report.checkpoint_used
        );
    }
}

#[test]
fn checkpoints_retire_the_journal_on_object_storage() {
    for b in backends("orec_retire") {
        let ctx = open(&*b, 0).unwrap();
        for t in 1..=6u64 {
            add(&ctx, 0, format!("block {t}").as_bytes(), t);
            ctx.tracker.allocate_blocks_to_batch(t * 1_000).unwrap();
            ctx.tracker.commit_batch(t * 1_000).unwrap();
            ctx.checkpoint(streamwal::CheckpointAt {
                batch_time: t * 1_000,
                pending_batches: vec![],
                source_offsets: BTreeMap::new(),
            })
            .unwrap();
        }
        let journal = ctx.tracker.journal();
        assert!(
            journal.stats().segments_removed > 0,
            "{:?}",
            journal.stats()
        );
        let first = journal.first_lsn().unwrap();
        drop(ctx);
        let ctx = open(&*b, 6_000).unwrap();
        assert!(ctx.tracker.journal().first_lsn().unwrap() >= first);
        let rec = ctx.recovered.as_ref().unwrap();
        assert_eq!(rec.checkpoint_time, Some(6_000));
        assert!(rec.batches.is_empty(), "{:?}", rec.batches);
    }
}

#[test]
fn a_driver_that_was_taken_over_cannot_add_to_what_the_new_one_recovered() {
    for b in backends("orec_takeover") {
        let old = open(&*b, 0).unwrap();
        let kept = add(&old, 0, b"acknowledged", 1);
        old.tracker.allocate_blocks_to_batch(1_000).unwrap();

        // A new driver starts on another machine while the old one is
        // partitioned, not dead.
        let new = open(&*b, 1_000).unwrap();
        let rec = new.recovered.as_ref().unwrap();
        assert_eq!(
            rec.batches[0].blocks.as_ref().unwrap()[&0],
            vec![kept.clone()]
        );

        // Everything the old driver tries now is refused.
        assert!(matches!(
            old.receiver_log.append(b"stale block"),
            Err(Error::LogTakenOver { .. })
        ));
        assert!(matches!(
            old.tracker.commit_batch(1_000),
            Err(Error::LogTakenOver { .. })
        ));
        assert!(matches!(
            old.checkpoint(streamwal::CheckpointAt {
                batch_time: 1_000,
                pending_batches: vec![],
                source_offsets: BTreeMap::new()
            }),
            Err(Error::Fenced { .. }) | Err(Error::LogTakenOver { .. })
        ));
        drop(old);

        // The new driver goes on; a third one sees exactly its work.
        new.tracker.commit_batch(1_000).unwrap();
        drop(new);
        let third = open(&*b, 1_000).unwrap();
        let rec = third.recovered.as_ref().unwrap();
        assert!(rec.committed.contains(&1_000));
        assert!(rec.batches.is_empty(), "{:?}", rec.batches);
        assert_eq!(third.read_block(&kept).unwrap(), b"acknowledged");
        assert_eq!(third.receiver_log.iter().count(), 1, "no stale block");
    }
}

#[test]
fn a_file_url_is_the_local_durable_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ctx");
    let url = format!("file://{}", root.display());
    let ctx = streamwal::Location::parse(&url)
        .and_then(|loc| {
            streamwal::StreamingContext::builder(loc)
                .options(opts())
                .now_ms(0)
                .get_or_create(Graph::new)
        })
        .unwrap();
    let a = add(&ctx, 0, b"local", 1);
    drop(ctx);
    // The crate's own directory log and checkpoint store, laid out as on
    // object storage.
    assert!(root.join("journal").is_dir() && root.join("receiver").is_dir());
    let rx = streamwal::Wal::open(root.join("receiver"), opts().receiver_log).unwrap();
    assert_eq!(rx.read(&a.handle).unwrap(), b"local");
    drop(rx);
    let rx = streamwal::Location::parse(&format!("{url}/receiver")).unwrap();
    let rx = streamwal::Wal::open(rx, opts().receiver_log).unwrap();
    assert_eq!(rx.iter().count(), 1);
    drop(rx);
    let ctx = streamwal::Location::parse(&url)
        .and_then(|loc| {
            streamwal::StreamingContext::builder(loc)
                .options(opts())
                .now_ms(1_000)
                .get_or_create(Graph::new)
        })
        .unwrap();
    assert_eq!(ctx.recovered.unwrap().unallocated[&0], vec![a]);
}

#[test]
fn keyed_state_recovers_from_object_storage_and_a_taken_over_driver_cannot_commit() {
    for b in backends("orec_state") {
        let ctx = open(&*b, 0).unwrap();
        let counts = ctx.state::<String, u64>("counts").unwrap();
        for t in 1..=4u64 {
            ctx.begin_batch(t * 1_000).unwrap();
            counts.put(format!("k{t}"), t).unwrap();
            counts.put("all".into(), t).unwrap();
            ctx.commit_batch(t * 1_000).unwrap();
            if t == 2 {
                ctx.state.snapshot_now().unwrap();
            }
        }
        // A batch in flight when the driver is replaced.
        ctx.begin_batch(5_000).unwrap();
        counts.put("lost".into(), 5).unwrap();

        let next = open(&*b, 4_000).unwrap();
        let report = next.state.report();
        assert_eq!(
            report.snapshot_used.as_ref().map(|s| s.1),
            Some(2_000),
            "{}",
            b.name()
        );
        assert_eq!(report.deltas_replayed, [3_000, 4_000], "{}", b.name());
        let mine = next.state::<String, u64>("counts").unwrap();
        let want: Vec<(String, u64)> = [("all", 4), ("k1", 1), ("k2", 2), ("k3", 3), ("k4", 4)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        assert_eq!(mine.iter().unwrap(), want, "{}", b.name());
        // The old driver's commit lands nowhere the new one reads.
        let old = ctx.commit_batch(5_000);
        assert!(
            matches!(
                old,
                Err(Error::LogTakenOver { .. }) | Err(Error::Fenced { .. })
            ),
            "{}: {old:?}",
            b.name()
        );
        drop((counts, ctx));
        assert_eq!(mine.get(&"lost".to_string()).unwrap(), None);
    }
}
