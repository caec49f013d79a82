//! Checkpoint files: a format-2 checkpoint (CBOR graph, write sequence
//! number) in a whole context, the same checkpoint as format 1 wrote it
//! (48-byte header, bincode graph), and a keyed-state snapshot of format 2
//! (bincode body), each decoded field by field against literal values
//! (header included); a context opened from a copy recovers the graph, the
//! batches, the blocks and the state from the format-2 and from the
//! format-1 checkpoint.

use super::generate_checkpoint::options;
use super::{copy_of, golden, handle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use streamwal::checkpoint::{
    Checkpoint, CheckpointHeader, GraphEncoding, decode_file, decode_file_stored,
};
use streamwal::recovery::{RunReason, StreamingContext};
use streamwal::state::{RawEntry, RawSlot, SnapshotBody};
use streamwal::tracker::{BatchBlocks, TrackerState};

/// The golden context's graph type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    pub name: String,
    pub counts: BTreeMap<String, u64>,
    pub window_ms: u64,
}

/// The graph the golden context was created with.
pub fn golden_graph() -> Golden {
    Golden {
        name: "wordcount".into(),
        counts: [("a".to_string(), 7), ("b".to_string(), 3)].into(),
        window_ms: 60_000,
    }
}

/// The format-2 checkpoint of the golden context.
const V2_FILE: &str = "checkpoint/context/checkpoint-00000000000000002000.ckpt";
/// The format-1 copy of the context's checkpoint.
pub const V1_FILE: &str = "checkpoint/v1/checkpoint-00000000000000002000.ckpt";
/// The keyed-state snapshot of the golden context (format 2, bincode).
const SNAPSHOT: &str = "checkpoint/context/state/snapshots/checkpoint-00000000000000001000.ckpt";

/// The graph in CBOR: a map of three entries keyed by field name.
const GRAPH_CBOR: &[u8] = &[
    0xa3, 0x64, b'n', b'a', b'm', b'e', 0x69, b'w', b'o', b'r', b'd', b'c', b'o', b'u', b'n', b't',
    0x66, b'c', b'o', b'u', b'n', b't', b's', 0xa2, 0x61, b'a', 0x07, 0x61, b'b', 0x03, 0x69, b'w',
    b'i', b'n', b'd', b'o', b'w', b'_', b'm', b's', 0x19, 0xea, 0x60,
];
/// The graph in bincode: its fields in order, no names.
const GRAPH_BINCODE: &[u8] = &[
    9, b'w', b'o', b'r', b'd', b'c', b'o', b'u', b'n', b't', 2, 1, b'a', 7, 1, b'b', 3, 251, 0x60,
    0xea,
];

type Block = (u32, (u64, u64, u64, u32), u64, u64);

/// A stream's blocks as (stream, handle, records, receive_time).
fn blocks(b: &BatchBlocks) -> BTreeMap<u32, Vec<Block>> {
    b.iter()
        .map(|(s, v)| {
            let v = v
                .iter()
                .map(|b| (b.stream_id, handle(&b.handle), b.records, b.receive_time))
                .collect();
            (*s, v)
        })
        .collect()
}

const ALPHA: Block = (0, (1, 1, 64, 5), 1, 900);
const BETA: Block = (1, (2, 1, 109, 4), 2, 950);
const GAMMA: Block = (0, (3, 1, 153, 5), 3, 1_900);
const DELTA: Block = (1, (4, 1, 198, 5), 1, 2_100);

/// Every field of the context's checkpoint but the graph and the tracker's
/// blocks (checked by `check_tracker`).
fn check_checkpoint<G>(c: &Checkpoint<G>) {
    assert_eq!(c.batch_time, 2_000);
    assert_eq!(c.batch_interval_ms, 1_000);
    assert_eq!(c.graph_version, 2);
    assert_eq!(c.pending_batches, [2_000]);
    assert_eq!(c.journal_lsn, 7);
    assert_eq!(
        c.source_offsets,
        BTreeMap::from([
            ("topic/0".to_string(), "42".to_string()),
            ("topic/1".to_string(), "17".to_string()),
        ])
    );
    check_tracker(&c.tracker);
}

fn check_tracker(t: &TrackerState) {
    assert_eq!(blocks(&t.unallocated), BTreeMap::from([(1, vec![DELTA])]));
    let allocated: BTreeMap<u64, _> = t.allocated.iter().map(|(k, v)| (*k, blocks(v))).collect();
    assert_eq!(
        allocated,
        BTreeMap::from([
            (1_000, BTreeMap::from([(0, vec![ALPHA]), (1, vec![BETA])])),
            (2_000, BTreeMap::from([(0, vec![GAMMA])])),
        ])
    );
    assert_eq!(t.committed, [1_000].into());
    assert_eq!(t.last_allocated_time, 2_000);
    assert_eq!(t.cleaned_before, 0);
    assert_eq!(t.last_block_lsn, 4);
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn the_format_2_checkpoint_decodes_field_by_field() {
    let bytes = golden(V2_FILE);
    assert_eq!(bytes.len(), 206);
    assert_eq!(bytes[..8], *b"STRMCKPT");
    assert_eq!(
        (le32(&bytes, 8), le32(&bytes, 12)),
        (2, 64),
        "version, header size"
    );
    assert_eq!(bytes[56..60], [0; 4], "reserved");
    assert_eq!(le32(&bytes, 60), 0x4474_f6ba, "header_crc");
    assert_eq!(
        CheckpointHeader::decode(&bytes),
        Ok(CheckpointHeader {
            format_version: 2,
            batch_time: 2_000,
            journal_lsn: 7,
            body_len: 142,
            body_crc: 0xe7e5_1794,
            graph_encoding: GraphEncoding::Cbor,
            write_seq: 1,
        })
    );
    let (_, raw) = decode_file_stored(Path::new(V2_FILE), &bytes).unwrap();
    assert_eq!(raw.graph, GRAPH_CBOR);
    check_checkpoint(&raw);
    let c: Checkpoint<Golden> = decode_file(Path::new(V2_FILE), &bytes).unwrap();
    assert_eq!(c.graph, golden_graph());
}

#[test]
fn the_format_1_checkpoint_decodes_field_by_field() {
    let bytes = golden(V1_FILE);
    assert_eq!(bytes.len(), 167);
    assert_eq!(bytes[..8], *b"STRMCKPT");
    assert_eq!(
        (le32(&bytes, 8), le32(&bytes, 12)),
        (1, 48),
        "version, header size"
    );
    assert_eq!(le32(&bytes, 44), 0x34e5_77e3, "header_crc");
    assert_eq!(
        CheckpointHeader::decode(&bytes),
        Ok(CheckpointHeader {
            format_version: 1,
            batch_time: 2_000,
            journal_lsn: 7,
            body_len: 119,
            body_crc: 0x05f1_72fc,
            graph_encoding: GraphEncoding::Bincode,
            write_seq: 0,
        })
    );
    let (_, raw) = decode_file_stored(Path::new(V1_FILE), &bytes).unwrap();
    assert_eq!(raw.graph, GRAPH_BINCODE);
    check_checkpoint(&raw);
    let c: Checkpoint<Golden> = decode_file(Path::new(V1_FILE), &bytes).unwrap();
    assert_eq!(c.graph, golden_graph());
}

#[test]
fn the_format_2_state_snapshot_decodes_field_by_field() {
    let bytes = golden(SNAPSHOT);
    assert_eq!(bytes.len(), 116);
    assert_eq!(bytes[..8], *b"STRMCKPT");
    assert_eq!(
        (le32(&bytes, 8), le32(&bytes, 12)),
        (2, 64),
        "version, header size"
    );
    assert_eq!(bytes[56..60], [0; 4], "reserved");
    assert_eq!(le32(&bytes, 60), 0x074e_645d, "header_crc");
    assert_eq!(
        CheckpointHeader::decode(&bytes),
        Ok(CheckpointHeader {
            format_version: 2,
            batch_time: 1_000,
            journal_lsn: 1,
            body_len: 52,
            body_crc: 0x239c_69d3,
            graph_encoding: GraphEncoding::Bincode,
            write_seq: 1,
        })
    );
    let c: Checkpoint<SnapshotBody> = decode_file(Path::new(SNAPSHOT), &bytes).unwrap();
    assert_eq!(c.batch_time, 1_000);
    assert_eq!(c.batch_interval_ms, 0);
    assert_eq!(c.graph_version, 1);
    assert!(c.pending_batches.is_empty());
    assert_eq!(c.journal_lsn, 1);
    assert_eq!(c.tracker, TrackerState::default());
    assert!(c.source_offsets.is_empty());
    let en = |key: &[u8], value: &[u8]| RawEntry {
        key: key.to_vec(),
        slot: RawSlot {
            value: value.to_vec(),
            expires_at: None,
        },
    };
    assert_eq!(
        c.graph,
        SnapshotBody {
            format: 1,
            state_id: 0x7c06_1562_d953_097c,
            batch_time: 1_000,
            log_lsn: 1,
            operators: vec![(
                "counts".into(),
                vec![en(&[2, b'b', b'e'], &[1]), en(&[2, b't', b'o'], &[2])]
            )],
        }
    );
}

/// Open the context at `dir` (a copy) and check all it recovers.
fn check_recovers(dir: &Path) {
    let ctx = StreamingContext::<Golden>::builder(dir)
        .options(options())
        .now_ms(2_000)
        .graph_version(2)
        .get_or_create(|| -> Golden { panic!("the golden context must recover, not start fresh") })
        .unwrap();
    assert_eq!(ctx.graph, golden_graph());
    assert_eq!(ctx.graph_version, 2);
    assert_eq!(ctx.batch_interval_ms, 1_000);
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(rec.checkpoint_time, Some(2_000));
    let batches: Vec<_> = rec
        .batches
        .iter()
        .map(|b| (b.batch_time, b.blocks.as_ref().map(blocks), b.reason))
        .collect();
    assert_eq!(
        batches,
        [(
            2_000,
            Some(BTreeMap::from([(0, vec![GAMMA])])),
            RunReason::PendingAtCheckpoint
        )]
    );
    assert_eq!(blocks(&rec.unallocated), BTreeMap::from([(1, vec![DELTA])]));
    assert_eq!(rec.committed, [1_000].into());
    assert_eq!(rec.state_version, Some(1_000));
    assert_eq!(
        rec.source_offsets.get("topic/0").map(String::as_str),
        Some("42")
    );
    let data = ctx
        .read_batch(rec.batches[0].blocks.as_ref().unwrap())
        .unwrap();
    assert_eq!(data, BTreeMap::from([(0, vec![b"gamma".to_vec()])]));
    let counts = ctx.state::<String, u64>("counts").unwrap();
    assert_eq!(
        counts.iter().unwrap(),
        [("be".to_string(), 1), ("to".to_string(), 2)]
    );
}

#[test]
fn a_context_recovers_from_the_format_2_checkpoint() {
    let (_tmp, dir) = copy_of("checkpoint/context");
    check_recovers(&dir);
}

#[test]
fn a_context_recovers_from_the_format_1_checkpoint() {
    let (_tmp, dir) = copy_of("checkpoint/context");
    let name = Path::new(V2_FILE).file_name().unwrap();
    std::fs::write(dir.join(name), golden(V1_FILE)).unwrap();
    check_recovers(&dir);
}
