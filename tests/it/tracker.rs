//! The block tracker: every event kind round-trips through the codec; adds, allocations, commits and cleanups survive a reopen (from the journal alone and from a snapshot plus the journal's tail) with identical state; allocation is idempotent; concurrent adds are each allocated exactly once; a journal that lost the events after a snapshot is an error, not a silent gap.

use std::collections::BTreeMap;
use std::sync::Arc;
use streamwal::codec;
use streamwal::tracker::{BatchBlocks, BlockInfo, BlockTracker, Event, TrackerState};
use streamwal::{Error, RecordHandle, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    }
}

/// Real handles from a real receiver log, so blocks are distinct and valid.
fn handles(dir: &std::path::Path, n: usize) -> Vec<RecordHandle> {
    let wal = Wal::open(dir, opts()).unwrap();
    (0..n)
        .map(|i| wal.append(format!("block {i}").as_bytes()).unwrap())
        .collect()
}

fn block(stream: u32, handle: RecordHandle, t: u64) -> BlockInfo {
    BlockInfo {
        stream_id: stream,
        handle,
        records: handle.lsn() * 3,
        receive_time: t,
    }
}

#[test]
fn every_event_kind_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = handles(&tmp.path().join("rx"), 3);
    let mut blocks = BatchBlocks::new();
    blocks.insert(1, vec![block(1, hs[0], 10), block(1, hs[1], 11)]);
    blocks.insert(7, vec![block(7, hs[2], 12)]);
    let events = [
        Event::BlockAdded(block(2, hs[1], 99)),
        Event::BatchAllocated {
            batch_time: 1_000,
            blocks,
        },
        Event::BatchAllocated {
            batch_time: 2_000,
            blocks: BatchBlocks::new(),
        },
        Event::BatchCommitted { batch_time: 1_000 },
        Event::Cleanup { before: u64::MAX },
    ];
    for e in &events {
        let bytes = codec::encode(e, "event").unwrap();
        let back: Event = codec::decode(&bytes, "event").unwrap();
        assert_eq!(&back, e);
        // A truncated encoding never decodes into a different event.
        for cut in 0..bytes.len() {
            if let Ok(other) = codec::decode::<Event>(&bytes[..cut], "event") {
                panic!("prefix of {cut} bytes decoded as {other:?}");
            }
        }
    }
    // Trailing bytes are refused.
    let mut bytes = codec::encode(&events[3], "event").unwrap();
    bytes.push(0);
    assert!(matches!(
        codec::decode::<Event>(&bytes, "event"),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn state_survives_reopen_from_journal_and_from_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = handles(&tmp.path().join("rx"), 8);
    let jdir = tmp.path().join("journal");
    let (snap, snap_lsn, final_state) = {
        let t = BlockTracker::open(&jdir, None, opts()).unwrap();
        t.add_block(block(1, hs[0], 1)).unwrap();
        t.add_block(block(2, hs[1], 2)).unwrap();
        let b1 = t.allocate_blocks_to_batch(1_000).unwrap();
        assert_eq!(b1.values().map(Vec::len).sum::<usize>(), 2);
        // Idempotent: the same blocks again, nothing journaled.
        let lsn_before = t.journal().last_lsn();
        assert_eq!(t.allocate_blocks_to_batch(1_000).unwrap(), b1);
        assert_eq!(t.journal().last_lsn(), lsn_before);
        let (snap, snap_lsn) = t.snapshot().unwrap();
        t.add_block(block(1, hs[2], 3)).unwrap();
        t.commit_batch(1_000).unwrap();
        let b2 = t.allocate_blocks_to_batch(2_000).unwrap();
        assert_eq!(b2[&1], vec![block(1, hs[2], 3)]);
        // Going back in time allocates nothing.
        assert!(t.allocate_blocks_to_batch(1_500).unwrap().is_empty());
        t.add_block(block(3, hs[3], 4)).unwrap();
        t.cleanup(1_500).unwrap();
        (snap, snap_lsn, t.snapshot().unwrap())
    };
    assert!(final_state.0.allocated.contains_key(&2_000));
    assert!(!final_state.0.allocated.contains_key(&1_000));
    assert_eq!(final_state.0.unallocated[&3].len(), 1);

    let from_journal = BlockTracker::open(&jdir, None, opts()).unwrap();
    assert_eq!(from_journal.snapshot().unwrap(), final_state);
    drop(from_journal);
    let from_snapshot = BlockTracker::open(&jdir, Some((snap, snap_lsn)), opts()).unwrap();
    assert_eq!(from_snapshot.snapshot().unwrap(), final_state);
    assert_eq!(
        from_snapshot.replay_report().events_replayed,
        final_state.1 - snap_lsn
    );
    // After reopen, allocation is still idempotent and still moves forward.
    assert_eq!(
        from_snapshot.allocate_blocks_to_batch(2_000).unwrap(),
        final_state.0.allocated[&2_000]
    );
}

#[test]
fn concurrent_adds_are_each_allocated_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Arc::new(Wal::open(tmp.path().join("rx"), opts()).unwrap());
    let t = Arc::new(BlockTracker::open(tmp.path().join("journal"), None, opts()).unwrap());
    let threads: Vec<_> = (0..4u32)
        .map(|s| {
            let (rx, t) = (rx.clone(), t.clone());
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let h = rx.append(format!("s{s} b{i}").as_bytes()).unwrap();
                    t.add_block(block(s, h, i)).unwrap();
                }
            })
        })
        .collect();
    // Allocate while the adds run.
    let mut allocated: Vec<BatchBlocks> = Vec::new();
    for k in 1..=20u64 {
        allocated.push(t.allocate_blocks_to_batch(k * 100).unwrap());
    }
    for th in threads {
        th.join().unwrap();
    }
    allocated.push(t.allocate_blocks_to_batch(10_000).unwrap());
    let mut seen = BTreeMap::new();
    for b in allocated.iter().flat_map(|m| m.values()).flatten() {
        assert!(
            seen.insert(b.handle.lsn(), b.clone()).is_none(),
            "block allocated twice"
        );
    }
    assert_eq!(seen.len(), 200, "every block allocated exactly once");
    // Each stream's blocks are allocated in the order they were added.
    for m in &allocated {
        for list in m.values() {
            assert!(
                list.windows(2)
                    .all(|w| w[0].receive_time < w[1].receive_time)
            );
        }
    }
    let state = t.snapshot().unwrap();
    drop(t);
    let again = BlockTracker::open(tmp.path().join("journal"), None, opts()).unwrap();
    assert_eq!(again.snapshot().unwrap(), state);
    assert!(again.snapshot().unwrap().0.unallocated.is_empty());
}

#[test]
fn a_journal_missing_events_after_the_snapshot_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = handles(&tmp.path().join("rx"), 2);
    let jdir = tmp.path().join("journal");
    {
        let t = BlockTracker::open(&jdir, None, opts()).unwrap();
        t.add_block(block(1, hs[0], 1)).unwrap();
    }
    // A snapshot claiming events up to LSN 5, but the journal ends at 1.
    let err = BlockTracker::open(&jdir, Some((TrackerState::default(), 5)), opts()).unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
    // Events retired past the snapshot: the first needed event is gone.
    {
        let t = BlockTracker::open(&jdir, None, opts()).unwrap();
        for i in 0..200 {
            t.add_block(block(1, hs[1], i)).unwrap();
        }
        assert!(t.retire_journal(150).unwrap() > 0);
    }
    let err = BlockTracker::open(&jdir, Some((TrackerState::default(), 1)), opts()).unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
}
