//! Hostile bytes and names: headers and frames with out-of-range LSNs or sequence numbers are corruption or a clear `LsnExhausted` (never an overflow or a silently hidden record), and a directory named like a later segment does not change which segment is last, so a torn tail is still repaired.

use std::fs;
use std::path::Path;
use streamwal::limits::SEGMENT_HEADER_BYTES;
use streamwal::wal::format::{FrameHeader, SegmentHeader, encode_frame};
use streamwal::wal::segment_file_name;
use streamwal::{Error, RecoveryMode, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    }
}

fn write_segment(dir: &Path, seq: u64, first_lsn: u64, frame_lsns: &[u64]) {
    fs::create_dir_all(dir).unwrap();
    let h = SegmentHeader {
        log_id: 7,
        segment_seq: seq,
        first_lsn,
        unsynced_window_bytes: 1 << 20,
        max_record_bytes: 1 << 16,
    };
    // The encoder refuses to write out-of-range values; a hostile file has
    // them anyway: patch a valid header and fix its checksum.
    let valid = SegmentHeader {
        segment_seq: 1,
        first_lsn: 1,
        ..h
    };
    let mut bytes = valid.encode().to_vec();
    bytes[24..32].copy_from_slice(&seq.to_le_bytes());
    bytes[32..40].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    for &lsn in frame_lsns {
        let fh = FrameHeader {
            payload_len: 3,
            lsn,
            time: 0,
            durable_lsn: lsn - 1,
            crc: 0,
        };
        encode_frame(&h.identity(), &fh, b"abc", &mut bytes);
    }
    fs::write(dir.join(segment_file_name(seq)), bytes).unwrap();
}

#[test]
fn out_of_range_lsns_and_sequence_numbers_are_corruption() {
    for (seq, first, frames) in [
        (1, u64::MAX, vec![u64::MAX]),
        (1, 1 << 63, vec![1 << 63, (1 << 63) + 1]),
        (u64::MAX, 1, vec![1]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        write_segment(&dir, seq, first, &frames);
        match Wal::open(&dir, opts()) {
            // A log whose LSNs reach the end of the range takes no appends.
            Err(Error::LsnExhausted) => {}
            Err(e) => assert!(e.is_corruption(), "{seq} {first}: {e:?}"),
            Ok(w) => panic!(
                "seq {seq} first {first}: opened with {} records",
                w.recovery_report().records
            ),
        }
        let salvage = WalOptions {
            recovery_mode: RecoveryMode::Salvage,
            ..opts()
        };
        if let Ok(w) = Wal::open(&dir, salvage) {
            assert!(w.iter().all(|r| r.is_ok()));
        }
    }
}

#[test]
fn a_directory_named_like_a_later_segment_does_not_hide_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let handles: Vec<_> = {
        let wal = Wal::open(&dir, opts()).unwrap();
        (0..3).map(|i| wal.append(&[i; 100]).unwrap()).collect()
    };
    let seg = dir.join(segment_file_name(handles[2].segment()));
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap(); // the last record is torn
    fs::create_dir(dir.join(segment_file_name(9))).unwrap();
    let wal = Wal::open(&dir, opts()).unwrap();
    assert_eq!(wal.recovery_report().records, 2);
    assert!(wal.recovery_report().torn_bytes > 0);
    assert!(matches!(wal.read(&handles[2]), Err(Error::NotFound { .. })));
    assert_eq!(wal.read(&handles[1]).unwrap(), vec![1; 100]);
    assert!(handles[0].offset() >= SEGMENT_HEADER_BYTES);
}

/// A length prefix in a few bytes claiming a gigabyte is refused by the
/// decode limit before anything is allocated for it.
#[test]
fn a_lying_length_cannot_claim_more_than_the_input_allows() {
    use std::collections::BTreeMap;
    // One map entry whose key claims 0x3F00_0000 bytes.
    let hostile = [1u8, 0xFC, 0, 0, 0, 0x3F];
    match streamwal::codec::decode::<BTreeMap<String, String>>(&hostile, "test") {
        Err(Error::Decode { source, .. }) => {
            let e = source
                .downcast_ref::<bincode::error::DecodeError>()
                .expect("a bincode error");
            assert!(
                matches!(e, bincode::error::DecodeError::LimitExceeded),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A legitimate value still decodes.
    let ok = BTreeMap::from([("k".to_string(), "v".repeat(10_000))]);
    let bytes = streamwal::codec::encode(&ok, "test").unwrap();
    assert_eq!(
        streamwal::codec::decode::<BTreeMap<String, String>>(&bytes, "test").unwrap(),
        ok
    );
}
