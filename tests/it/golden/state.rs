//! Keyed state of format version 1: a state log of three deltas and a
//! snapshot at the second, as the public decoders see them.

use super::{copy_of, fields, golden, segment};
use std::path::Path;
use std::sync::Arc;
use streamwal::checkpoint::{Checkpoint, decode_file};
use streamwal::state::{RawChange, RawEntry, RawSlot, SnapshotBody, StateDelta, decode_delta};
use streamwal::{StateOptions, StateStore};

const STATE_ID: u64 = 2_858_283_805_459_117_324;
const SNAPSHOT: &str = "state/snapshots/checkpoint-00000000000000002000.ckpt";

/// Encoded keys and values (the state's key encoding and bincode).
const BE: &[u8] = &[2, b'b', b'e'];
const OR: &[u8] = &[2, b'o', b'r'];
const TO: &[u8] = &[2, b't', b'o'];
const SEVEN_KEY: &[u8] = &[7];
const SEVEN: &[u8] = &[5, b's', b'e', b'v', b'e', b'n'];

fn slot(value: &[u8], expires_at: Option<u64>) -> RawSlot {
    RawSlot {
        value: value.to_vec(),
        expires_at,
    }
}

fn ch(key: &[u8], slot: Option<RawSlot>) -> RawChange {
    RawChange {
        key: key.to_vec(),
        slot,
    }
}

fn en(key: &[u8], slot: RawSlot) -> RawEntry {
    RawEntry {
        key: key.to_vec(),
        slot,
    }
}

#[test]
fn deltas_decode_field_by_field() {
    let (header, frames) = segment("state/log/00000000000000000001.wal");
    assert_eq!(
        (header.log_id, header.segment_seq, header.first_lsn),
        (0x7d68_ab27_c9e5_4e8f, 1, 1)
    );
    let got: Vec<_> = frames.iter().map(|(h, _)| fields(h)).collect();
    assert_eq!(
        got,
        [
            (58, 1, 1_796_318_549_830, 0, 0x5659_30a7),
            (35, 2, 1_796_318_549_831, 1, 0xeeb7_b78b),
            (39, 3, 1_796_318_549_838, 2, 0x5baa_065d),
        ]
    );
    let log = Path::new("state/log");
    let deltas: Vec<StateDelta> = frames
        .iter()
        .map(|(_, p)| decode_delta(log, p).unwrap())
        .collect();
    let delta = |batch_time, operators| StateDelta {
        format: 1,
        state_id: STATE_ID,
        batch_time,
        operators,
    };
    assert_eq!(
        deltas,
        [
            delta(
                1_000,
                vec![
                    (
                        "counts".into(),
                        vec![
                            ch(BE, Some(slot(&[1], None))),
                            ch(TO, Some(slot(&[2], None)))
                        ]
                    ),
                    (
                        "seen".into(),
                        vec![ch(SEVEN_KEY, Some(slot(SEVEN, Some(6_000))))]
                    ),
                ]
            ),
            delta(
                2_000,
                vec![(
                    "counts".into(),
                    vec![ch(BE, None), ch(OR, Some(slot(&[1], None)))]
                )]
            ),
            delta(
                3_000,
                vec![
                    ("counts".into(), vec![ch(TO, Some(slot(&[3], None)))]),
                    ("seen".into(), vec![ch(SEVEN_KEY, None)]),
                ]
            ),
        ]
    );
}

#[test]
fn the_snapshot_decodes_field_by_field() {
    let bytes = golden(SNAPSHOT);
    assert_eq!(bytes.len(), 119);
    assert_eq!(bytes[..8], *b"STRMCKPT");
    let c: Checkpoint<SnapshotBody> = decode_file(Path::new(SNAPSHOT), &bytes).unwrap();
    assert_eq!(c.batch_time, 2_000);
    assert_eq!(c.batch_interval_ms, 0);
    assert_eq!(c.graph_version, 1);
    assert!(c.pending_batches.is_empty());
    assert_eq!(c.journal_lsn, 2);
    assert_eq!(c.tracker, Default::default());
    assert!(c.source_offsets.is_empty());
    assert_eq!(
        c.graph,
        SnapshotBody {
            format: 1,
            state_id: STATE_ID,
            batch_time: 2_000,
            log_lsn: 2,
            operators: vec![
                (
                    "counts".into(),
                    vec![en(OR, slot(&[1], None)), en(TO, slot(&[2], None))]
                ),
                ("seen".into(), vec![en(SEVEN_KEY, slot(SEVEN, Some(6_000)))]),
            ],
        }
    );
}

#[test]
fn the_state_recovers_from_the_snapshot_and_the_last_delta() {
    let (_tmp, dir) = copy_of("state");
    let store = Arc::new(StateStore::open(&dir, StateOptions::default()).unwrap());
    assert_eq!(store.version(), Some(3_000));
    let report = store.report();
    assert_eq!(report.snapshot_used.as_ref().map(|(_, t)| *t), Some(2_000));
    assert_eq!(report.deltas_replayed, [3_000]);
    let counts = store.operator::<String, u64>("counts").unwrap();
    assert_eq!(
        counts.iter().unwrap(),
        [("or".to_string(), 1), ("to".to_string(), 3)]
    );
    let seen = store.operator::<u64, String>("seen").unwrap();
    assert!(seen.iter().unwrap().is_empty());
}
