//! A receiver log of format version 1: two segments, three records.

use super::{copy_of, fields, golden, handle, segment};
use streamwal::wal::format::{FORMAT_VERSION, SEGMENT_MAGIC, SegmentHeader};
use streamwal::{Wal, WalOptions};

const LOG_ID: u64 = 0xf3d5_f8ae_fb69_27ab;
/// The writer's bound on unsynced bytes: one batch of 4 MiB plus one
/// maximal frame (40 + 64 MiB).
const UNSYNCED_WINDOW_BYTES: u64 = 67_108_904;
const MAX_RECORD_BYTES: u32 = 64 << 20;

#[test]
fn segment_headers_and_frames_decode_field_by_field() {
    let raw = golden("wal/00000000000000000001.wal");
    assert_eq!(raw.len(), 1_649);
    assert_eq!(raw[..8], SEGMENT_MAGIC);
    assert_eq!(raw[..8], *b"STRMWAL\0");
    assert_eq!(u32::from_le_bytes(raw[8..12].try_into().unwrap()), 1);
    assert_eq!(FORMAT_VERSION, 1, "this build writes version 1");
    assert_eq!(u32::from_le_bytes(raw[12..16].try_into().unwrap()), 64);
    assert_eq!(raw[52..60], [0; 8], "reserved");
    assert_eq!(
        u32::from_le_bytes(raw[60..64].try_into().unwrap()),
        0x52e4_6d23
    );

    let (h1, f1) = segment("wal/00000000000000000001.wal");
    assert_eq!(
        h1,
        SegmentHeader {
            log_id: LOG_ID,
            segment_seq: 1,
            first_lsn: 1,
            unsynced_window_bytes: UNSYNCED_WINDOW_BYTES,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    );
    assert_eq!(f1.len(), 2);
    assert_eq!(fields(&f1[0].0), (5, 1, 1_000, 0, 0x7e27_ad03));
    assert_eq!(f1[0].1, b"alpha");
    assert_eq!(fields(&f1[1].0), (1_500, 2, 2_000, 1, 0x89ff_13c1));
    assert_eq!(f1[1].1, vec![b'b'; 1_500]);

    let (h2, f2) = segment("wal/00000000000000000002.wal");
    assert_eq!(
        h2,
        SegmentHeader {
            log_id: LOG_ID,
            segment_seq: 2,
            first_lsn: 3,
            unsynced_window_bytes: UNSYNCED_WINDOW_BYTES,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    );
    assert_eq!(f2.len(), 1);
    assert_eq!(fields(&f2[0].0), (2_500, 3, 3_000, 2, 0x6b69_aa8b));
    assert_eq!(f2[0].1, vec![b'c'; 2_500]);
}

#[test]
fn the_log_opens_and_reads_every_record() {
    let (_tmp, dir) = copy_of("wal");
    let wal = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!(wal.first_lsn(), Some(1));
    assert_eq!(wal.last_lsn(), Some(3));
    let got: Vec<_> = wal
        .iter()
        .map(|r| r.unwrap())
        .map(|(h, p)| (handle(&h), p))
        .collect();
    assert_eq!(
        got,
        [
            ((1, 1, 64, 5), b"alpha".to_vec()),
            ((2, 1, 109, 1_500), vec![b'b'; 1_500]),
            ((3, 2, 64, 2_500), vec![b'c'; 2_500]),
        ]
    );
}
