//! Offset sources: a batch's ranges are journaled before it runs, a rerun
//! after a crash gets the same ranges whatever the source offers now, a
//! batch planned but never allocated or committed is owed, the next batch
//! starts where the last planned one ended, receiver-log blocks and offset
//! ranges mix in one batch, and bad plans are refused.

use std::collections::BTreeMap;
use std::path::Path;
use streamwal::sources::{OffsetLog, OffsetRange, batches_to_run};
use streamwal::tracker::BlockInfo;
use streamwal::{Error, StreamingContext};

fn open(dir: &Path) -> StreamingContext<()> {
    StreamingContext::builder(dir)
        .batch_interval_ms(1_000)
        .now_ms(1)
        .get_or_create(|| ())
        .unwrap()
}

fn ends(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(n, e)| (n.to_string(), *e)).collect()
}

fn range(start: u64, end: u64) -> OffsetRange {
    OffsetRange { start, end }
}

#[test]
fn sources_a_rerun_reads_the_same_ranges_and_a_mixed_batch_keeps_both() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let ctx = open(tmp.path());
        let mut offsets = OffsetLog::open(&ctx).unwrap();
        let r = offsets
            .plan(1_000, &ends(&[("file", 10), ("part/0", 4)]))
            .unwrap();
        assert_eq!(r["file"], range(0, 10));
        ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
        ctx.commit_batch(1_000).unwrap();
        // Batch 2000 mixes a receiver-log block with an offset range.
        let handle = ctx.receiver_log.append(b"pushed").unwrap();
        ctx.tracker
            .add_block(BlockInfo {
                stream_id: 0,
                handle,
                records: 1,
                receive_time: 1_500,
            })
            .unwrap();
        let r = offsets.plan(2_000, &ends(&[("file", 25)])).unwrap();
        assert_eq!(r["file"], range(10, 25));
        ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
        // Batch 3000 is planned, then the driver dies before allocating.
        offsets
            .plan(3_000, &ends(&[("file", 30), ("part/0", 9)]))
            .unwrap();
    }
    let ctx = open(tmp.path());
    let mut offsets = OffsetLog::open(&ctx).unwrap();
    assert_eq!(offsets.owed(&ctx).unwrap(), vec![2_000, 3_000]);
    assert_eq!(batches_to_run(&ctx, &offsets).unwrap(), vec![2_000, 3_000]);
    // The source has more now; the reruns read what was planned.
    let r = offsets.plan(2_000, &ends(&[("file", 99)])).unwrap();
    assert_eq!(r, BTreeMap::from([("file".to_string(), range(10, 25))]));
    let blocks = ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    assert_eq!(
        ctx.read_batch(&blocks).unwrap()[&0],
        vec![b"pushed".to_vec()]
    );
    let r = offsets.plan(3_000, &ends(&[("file", 99)])).unwrap();
    assert_eq!(r["file"], range(25, 30));
    assert_eq!(r["part/0"], range(4, 9));
    for t in [2_000, 3_000] {
        ctx.tracker.allocate_blocks_to_batch(t).unwrap();
        ctx.commit_batch(t).unwrap();
    }
    assert!(offsets.owed(&ctx).unwrap().is_empty());
    // The next batch goes on where 3000 ended; an earlier one is refused.
    assert_eq!(offsets.next_start("file"), 30);
    let r = offsets.plan(4_000, &ends(&[("file", 31)])).unwrap();
    assert_eq!(r["file"], range(30, 31));
    assert!(matches!(
        offsets.plan(3_500, &ends(&[("file", 40)])),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn sources_bad_plans_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path());
    let mut offsets = OffsetLog::open(&ctx).unwrap();
    offsets.plan(1_000, &ends(&[("a", 5)])).unwrap();
    for bad in [
        ends(&[("a", 4)]),
        ends(&[("", 1)]),
        ends(&[(&"x".repeat(300), 1)]),
    ] {
        assert!(matches!(
            offsets.plan(2_000, &bad),
            Err(Error::InvalidOptions(_))
        ));
    }
    assert!(offsets.ranges(2_000).is_none());
    assert_eq!(offsets.next_start("a"), 5);
    drop(offsets);
    let offsets = OffsetLog::open(&ctx).unwrap();
    assert_eq!(offsets.ranges(1_000).unwrap()["a"], range(0, 5));
    assert!(offsets.ranges(2_000).is_none());
}
