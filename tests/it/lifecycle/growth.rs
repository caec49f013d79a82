//! The record-size bound, rollover across many small segments, and retention by LSN and by time across reopen.

use super::*;
use crate::common::log_model::{LogModel, agrees};

// ---------------------------------------------------------------- record size

#[test]
fn record_size_bound_and_records_larger_than_a_segment() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let max = 10_000u32;
    let opts = WalOptions {
        max_record_bytes: max,
        ..small()
    };
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let a = wal.append(&payload(1, 100)).unwrap();

    match wal.append(&vec![7u8; max as usize + 1]) {
        Err(Error::TooLarge { size, max: m }) => {
            assert_eq!((size, m), (u64::from(max) + 1, u64::from(max)));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!wal.is_poisoned(), "TooLarge must not poison");
    // One oversized payload fails the whole batch before anything is written.
    let bad_batch = [payload(2, 10), vec![1u8; max as usize + 1]];
    assert!(matches!(
        wal.append_batch(&bad_batch),
        Err(Error::TooLarge { .. })
    ));
    assert!(!wal.is_poisoned());

    let b = wal.append(&payload(2, 100)).unwrap();
    assert_eq!(b.lsn(), a.lsn() + 1, "a rejected append consumed an LSN");
    let empty = wal.append(b"").unwrap();
    assert_eq!(wal.read(&empty).unwrap(), b"");

    // Exactly the maximum: larger than a 4 KiB segment, so it gets its own.
    let big_payload = payload(3, max as usize);
    let big = wal.append(&big_payload).unwrap();
    assert_eq!(wal.read(&big).unwrap(), big_payload);
    assert_eq!(big.segment(), empty.segment() + 1);
    assert_eq!(big.offset(), SEGMENT_HEADER_BYTES);
    let c = wal.append(&payload(4, 100)).unwrap();
    assert_eq!(
        c.segment(),
        big.segment() + 1,
        "the big record's segment is its own"
    );
    let big_file = std::fs::metadata(seg_path(&dir, big.segment())).unwrap();
    assert!(big_file.len() >= SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + u64::from(max));
    drop(wal);

    let expect = vec![
        (a, payload(1, 100)),
        (b, payload(2, 100)),
        (empty, Vec::new()),
        (big, big_payload.clone()),
        (c, payload(4, 100)),
    ];
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), expect);
    assert_reads(&wal, &expect);
    drop(wal);

    // A writer with a smaller bound still reads records its predecessor
    // wrote under a larger one, and enforces its own bound on append.
    let smaller = WalOptions {
        max_record_bytes: 100,
        ..small()
    };
    let wal = Wal::open(&dir, smaller).unwrap();
    assert_eq!(wal.read(&big).unwrap(), big_payload);
    assert_eq!(all_records(&wal), expect);
    assert!(matches!(
        wal.append(&[0u8; 101]),
        Err(Error::TooLarge {
            size: 101,
            max: 100
        })
    ));
    wal.append(&[9u8; 100]).unwrap();
}

// ---------------------------------------------------------------- rollover

#[test]
fn rollover_across_dozens_of_small_segments() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let n = 600u64;
    let wal = Wal::open(&dir, small()).unwrap();
    let records = append_all(
        &wal,
        (0..n).map(|i| payload(i, 20 + (i as usize * 37) % 300)),
    );
    assert_reads(&wal, &records);
    drop(wal);

    for (i, (h, _)) in records.iter().enumerate() {
        assert_eq!(h.lsn(), i as u64 + 1);
    }
    let files = segment_files(&dir);
    let seqs: Vec<u64> = files.iter().map(|f| f.1).collect();
    assert!(seqs.len() >= 24, "only {} segments", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // File-name order is log order: headers carry the sequence number and
    // first LSNs that increase with it, matching the handles.
    let mut first_of: BTreeMap<u64, u64> = BTreeMap::new();
    for (h, _) in &records {
        first_of.entry(h.segment()).or_insert(h.lsn());
    }
    let mut prev_first = 0;
    for (name, seq) in &files {
        assert_eq!(name, &segment_file_name(*seq));
        assert_eq!(name.len(), 24);
        let header = read_header(&dir.join(name));
        assert_eq!(header.segment_seq, *seq);
        assert!(header.first_lsn > prev_first);
        prev_first = header.first_lsn;
        assert_eq!(Some(&header.first_lsn), first_of.get(seq), "segment {seq}");
    }
    for w in records.windows(2) {
        let (x, y) = (w[0].0, w[1].0);
        assert!(
            y.segment() == x.segment() && y.offset() > x.offset()
                || y.segment() == x.segment() + 1 && y.offset() == SEGMENT_HEADER_BYTES
        );
    }

    let wal = Wal::open(&dir, small()).unwrap();
    let report = wal.recovery_report();
    assert_eq!(report.segments, seqs.len());
    assert_eq!(report.records, n);
    assert_eq!((report.first_lsn, report.last_lsn), (Some(1), Some(n)));
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(all_records(&wal), records);
    assert_reads(&wal, &records);
    // A handle survives serialization.
    let json = serde_json::to_string(&records[300].0).unwrap();
    let h: RecordHandle = serde_json::from_str(&json).unwrap();
    assert_eq!(wal.read(&h).unwrap(), records[300].1);

    // iter_from starts exactly at the asked LSN around every boundary.
    for &first in first_of.values() {
        for lsn in [first - 1, first, first + 1] {
            if lsn == 0 || lsn > n {
                continue;
            }
            let got: Records = wal.iter_from(lsn).map(|r| r.unwrap()).collect();
            assert_eq!(got, records[lsn as usize - 1..], "iter_from({lsn})");
        }
    }
    assert_eq!(wal.iter_from(n + 1).count(), 0);
    assert_eq!(wal.iter_from(n + 100).count(), 0);
    let next = wal.append(b"next").unwrap();
    assert_eq!(next.lsn(), n + 1);
}

// ---------------------------------------------------------------- retention

/// Check a log of `records` whose records before `first` were purged:
/// everything it shows, and `iter_from` of the first and the last purged
/// LSN.
fn assert_retained(wal: &Wal, records: &Records, first: u64) {
    let mut model = agrees(LogModel::of(records));
    model.purged_before(first);
    agrees(model.check(wal));
    for lsn in [1, first - 1] {
        if lsn == 0 || lsn >= first {
            continue;
        }
        agrees(model.check_iter_from(wal, lsn));
    }
}

#[test]
fn purge_before_lsn_removes_only_whole_sealed_segments() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    // A 1000-byte payload makes a 1040-byte frame: three fit in a 4 KiB
    // segment after its 64-byte header.
    let records = append_all(&wal, (0..30).map(|i| payload(i, 1000)));
    for (i, (h, _)) in records.iter().enumerate() {
        assert_eq!(h.segment(), i as u64 / 3 + 1, "lsn {}", h.lsn());
    }
    assert_eq!(segment_seqs(&dir), (1..=10).collect::<Vec<_>>());

    // LSN 11 is the middle record of segment 4: segments 1..=3 go.
    assert_eq!(wal.purge_before_lsn(11).unwrap(), 3);
    assert_eq!(segment_seqs(&dir), (4..=10).collect::<Vec<_>>());
    assert_retained(&wal, &records, 10);
    assert_eq!(wal.purge_before_lsn(11).unwrap(), 0);
    assert_eq!(wal.purge_before_lsn(12).unwrap(), 0);
    // LSN 13 is the first of segment 5: segment 4 (10..=12) goes.
    assert_eq!(wal.purge_before_lsn(13).unwrap(), 1);
    assert_eq!(segment_seqs(&dir), (5..=10).collect::<Vec<_>>());
    assert_retained(&wal, &records, 13);
    assert_eq!(wal.stats().segments_removed, 4);
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(segment_seqs(&dir), (5..=10).collect::<Vec<_>>());
    let report = wal.recovery_report();
    assert_eq!((report.first_lsn, report.last_lsn), (Some(13), Some(30)));
    assert_eq!(report.records, 18);
    assert_retained(&wal, &records, 13);

    // Everything before a far LSN: every sealed segment, never the active one.
    assert_eq!(wal.purge_before_lsn(u64::MAX).unwrap(), 5);
    assert_eq!(segment_seqs(&dir), vec![10]);
    assert_retained(&wal, &records, 28);
    assert_eq!(wal.purge_before_lsn(u64::MAX).unwrap(), 0);
    let mut records = records;
    let h = wal.append(b"after purge").unwrap();
    assert_eq!(h.lsn(), 31);
    records.push((h, b"after purge".to_vec()));
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert_retained(&wal, &records, 28);
}

#[test]
fn purge_before_time_goes_in_order_and_stops_at_the_first_newer_segment() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    // Three records per segment (see above); segment 2 holds one late record.
    let times = [1, 2, 3, 4, 50, 6, 7, 8, 9, 10, 11, 12, 13];
    let records: Records = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let p = payload(i as u64, 1000);
            (wal.append_at(&p, t).unwrap(), p)
        })
        .collect();
    assert_eq!(records.last().unwrap().0.segment(), 5);
    assert_eq!(segment_seqs(&dir), vec![1, 2, 3, 4, 5]);

    assert_eq!(wal.purge_before_time(30).unwrap(), 1);
    assert_eq!(segment_seqs(&dir), vec![2, 3, 4, 5]);
    // Segment 3 (times 7..=9) would qualify, but segment 2 (max 50) is older
    // and does not, so nothing more goes.
    assert_eq!(wal.purge_before_time(30).unwrap(), 0);
    assert_eq!(wal.purge_before_time(50).unwrap(), 0, "time < T is strict");
    assert_eq!(segment_seqs(&dir), vec![2, 3, 4, 5]);
    assert_retained(&wal, &records, 4);
    drop(wal);

    // After reopen the segments' times come from disk.
    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(wal.purge_before_time(50).unwrap(), 0);
    // Segment 5 is active: kept although its only record has time 13.
    assert_eq!(wal.purge_before_time(51).unwrap(), 3);
    assert_eq!(segment_seqs(&dir), vec![5]);
    assert_retained(&wal, &records, 13);
    drop(wal);
    let wal = Wal::open(&dir, small()).unwrap();
    assert_retained(&wal, &records, 13);
}
