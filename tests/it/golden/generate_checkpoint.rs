//! The generator of `tests/data/checkpoint/`: run once per checkpoint
//! format version with
//! `STREAMWAL_WRITE_GOLDEN=1 cargo test --all-features --test it -- --ignored golden::generate_checkpoint`.
//! It writes a whole context (receiver log, journal, a format-2 checkpoint
//! with a CBOR graph, keyed state with a format-2 snapshot) and, beside it,
//! the same checkpoint as format version 1 wrote it (48-byte header,
//! bincode graph), crafted from the layout in docs/FORMAT.md since this
//! build writes only version 2. What it writes is committed; the tests in
//! `golden::checkpoint` read the committed files.

use super::checkpoint::{Golden, V1_FILE, golden_graph};
use super::data_dir;
use super::generate::small;
use std::path::Path;
use streamwal::checkpoint::{GraphEncoding, decode_file_stored, encode_file_with};
use streamwal::recovery::{ContextOptions, StreamingContext};
use streamwal::{CheckpointAt, StateOptions};

/// Copy the tree `from` into `to` (replacing it), leaving out lock files
/// and temporary files.
fn copy_context(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_context(&e.path(), &to.join(&name));
        } else if name != "LOCK" && !name.ends_with(".tmp") {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// The options the golden context was written with (and is opened with).
pub fn options() -> ContextOptions {
    ContextOptions {
        receiver_log: small(),
        journal: small(),
        state: StateOptions {
            snapshot_every_batches: u64::MAX,
            snapshot_every_bytes: u64::MAX,
            log: small(),
            ..StateOptions::default()
        },
        ..ContextOptions::new(1_000)
    }
}

#[test]
#[ignore = "writes tests/data; run with STREAMWAL_WRITE_GOLDEN=1"]
fn generate_checkpoint() {
    if std::env::var_os("STREAMWAL_WRITE_GOLDEN").is_none() {
        panic!("set STREAMWAL_WRITE_GOLDEN=1 to rewrite tests/data");
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("context");
    let ctx = StreamingContext::builder(&dir)
        .options(options())
        .now_ms(1_000)
        .graph_version(2)
        .get_or_create(golden_graph)
        .unwrap();
    let counts = ctx.state::<String, u64>("counts").unwrap();
    // Batch 1000: two blocks, committed, with state; a snapshot of it.
    ctx.store_block(0, b"alpha", 1, 900).unwrap();
    ctx.store_block(1, b"beta", 2, 950).unwrap();
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.begin_batch(1_000).unwrap();
    counts.put("to".into(), 2).unwrap();
    counts.put("be".into(), 1).unwrap();
    ctx.commit_batch(1_000).unwrap();
    ctx.state.snapshot_now().unwrap();
    // Batch 2000 allocated, pending; one block left unallocated.
    ctx.store_block(0, b"gamma", 3, 1_900).unwrap();
    ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    ctx.store_block(1, b"delta", 1, 2_100).unwrap();
    ctx.checkpoint(CheckpointAt {
        batch_time: 2_000,
        pending_batches: vec![2_000],
        source_offsets: [
            ("topic/0".to_string(), "42".to_string()),
            ("topic/1".to_string(), "17".to_string()),
        ]
        .into(),
    })
    .unwrap();
    drop((counts, ctx));
    let out = data_dir().join("checkpoint");
    copy_context(&dir, &out.join("context"));

    // The same checkpoint as format version 1: 48-byte header (the
    // version 2 fields up to offset 44, then the CRC32 of bytes 0..44), and
    // the same envelope with the graph in bincode.
    let name = streamwal::checkpoint::checkpoint_file_name(2_000);
    let v2 = std::fs::read(dir.join(&name)).unwrap();
    let (_, raw) = decode_file_stored(Path::new(&name), &v2).unwrap();
    let graph: Golden = GraphEncoding::Cbor.decode(&raw.graph, "graph").unwrap();
    let bincode = encode_file_with(&raw.with_graph(graph), GraphEncoding::Bincode).unwrap();
    let body = &bincode[64..];
    let mut b = Vec::new();
    b.extend_from_slice(b"STRMCKPT");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&48u32.to_le_bytes());
    b.extend_from_slice(&bincode[16..24]); // batch_time
    b.extend_from_slice(&bincode[24..32]); // journal_lsn
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(body);
    let v1 = data_dir().join(V1_FILE);
    std::fs::create_dir_all(v1.parent().unwrap()).unwrap();
    std::fs::write(v1, b).unwrap();
}
