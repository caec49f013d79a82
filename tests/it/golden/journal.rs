//! A tracker journal of format version 1: every event kind.

use super::{copy_of, fields, handle, segment};
use std::collections::BTreeSet;
use streamwal::tracker::{BlockInfo, BlockTracker, Event};
use streamwal::wal::format::SegmentHeader;

fn block(b: &BlockInfo) -> (u32, (u64, u64, u64, u32), u64, u64) {
    (b.stream_id, handle(&b.handle), b.records, b.receive_time)
}

const B1: (u32, (u64, u64, u64, u32), u64, u64) = (0, (1, 1, 64, 5), 1, 900);
const B2: (u32, (u64, u64, u64, u32), u64, u64) = (1, (2, 1, 109, 1_500), 3, 950);
const B3: (u32, (u64, u64, u64, u32), u64, u64) = (0, (3, 2, 64, 2_500), 2, 1_900);

#[test]
fn every_event_decodes_field_by_field() {
    let (header, frames) = segment("journal/00000000000000000001.wal");
    assert_eq!(
        header,
        SegmentHeader {
            log_id: 0xa1c1_6ed2_472f_b504,
            segment_seq: 1,
            first_lsn: 1,
            unsynced_window_bytes: 67_108_904,
            max_record_bytes: 64 << 20,
        }
    );
    let got: Vec<_> = frames.iter().map(|(h, _)| fields(h)).collect();
    assert_eq!(
        got,
        [
            (10, 1, 1_796_318_549_807, 0, 0xe653_9dd0),
            (12, 2, 1_796_318_549_810, 1, 0x1070_4b21),
            (29, 3, 1_796_318_549_811, 2, 0x73c8_fb0b),
            (4, 4, 1_796_318_549_812, 3, 0x0d77_1c68),
            (12, 5, 1_796_318_549_813, 4, 0x7876_bf46),
            (4, 6, 1_796_318_549_813, 5, 0x6f18_b5f3),
        ]
    );
    let events: Vec<Event> = frames
        .iter()
        .map(|(_, p)| streamwal::codec::decode(p, "journal event").unwrap())
        .collect();
    match &events[..] {
        [
            Event::BlockAdded(b1),
            Event::BlockAdded(b2),
            Event::BatchAllocated { batch_time, blocks },
            Event::BatchCommitted {
                batch_time: committed,
            },
            Event::BlockAdded(b3),
            Event::Cleanup { before },
        ] => {
            assert_eq!((block(b1), block(b2), block(b3)), (B1, B2, B3));
            assert_eq!(*batch_time, 1_000);
            let allocated: Vec<_> = blocks
                .iter()
                .map(|(s, l)| (*s, l.iter().map(block).collect::<Vec<_>>()))
                .collect();
            assert_eq!(allocated, [(0, vec![B1]), (1, vec![B2])]);
            assert_eq!((*committed, *before), (1_000, 1_000));
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn the_tracker_replays_the_journal() {
    let (_tmp, dir) = copy_of("journal");
    let tracker = BlockTracker::open(&dir, None, super::generate::small()).unwrap();
    let (state, lsn) = tracker.snapshot().unwrap();
    assert_eq!(lsn, 6);
    assert_eq!(tracker.replay_report().events_replayed, 6);
    let unallocated: Vec<_> = state.unallocated.values().flatten().map(block).collect();
    assert_eq!(unallocated, [B3]);
    assert_eq!(state.allocated.keys().copied().collect::<Vec<_>>(), [1_000]);
    assert_eq!(state.committed, BTreeSet::from([1_000]));
    assert_eq!(state.last_allocated_time, 1_000);
    assert_eq!(state.cleaned_before, 1_000);
    assert_eq!(state.last_block_lsn, 3);
}
