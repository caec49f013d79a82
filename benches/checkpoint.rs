//! Checkpoints and driver recovery:
//!
//! - `checkpoint_encode`: `CheckpointStore::encode` alone (serialization and
//!   checksums, no I/O) of a 1 MiB and a 16 MiB graph;
//! - `checkpoint_write`: `CheckpointStore::write`, i.e. encode plus the
//!   durable, atomic write (temp file, `fdatasync`, rename, directory fsync,
//!   retention of the newest 10), of the same graphs;
//! - `checkpoint_write_encoded`: `CheckpointStore::write_encoded` of an
//!   already encoded checkpoint (the I/O part alone);
//! - `recovery_get_or_create`: `recovery::get_or_create` end to end (open the
//!   checkpoint store, load the newest checkpoint, open the receiver log,
//!   replay the tracker journal) over a journal of 1,000,000 events written
//!   after the only checkpoint.
//!
//! Graphs. Two shapes an engine would checkpoint: `U64Graph`, operator state
//! as a `Vec<u64>` (serde encodes it element by element as varints; values
//! are pseudo-random so most take 9 bytes), and `BlobGraph`, an opaque byte
//! blob the engine serialized itself (encoded with `serialize_bytes`: one
//! length and a copy). The encode group also has `VecU8Graph`, a plain
//! `Vec<u8>` field, which serde encodes as a sequence of bytes one element at
//! a time: the cost an engine pays for not marking its bytes as bytes.
//! Throughput is the encoded checkpoint file's size.
//!
//! The journal is built once, durably, through public API: the receiver log
//! with `Wal::append_batch` (one `fdatasync` per batch) and the tracker's
//! journal as the `Wal` it is (`ContextOptions::new(..).journal`, so
//! `SyncPolicy::Always`), its events (`tracker::Event`) encoded with
//! `streamwal::codec::encode` exactly as `BlockTracker` encodes them, also
//! with `append_batch`. `BlockTracker` itself has no batch API: a million
//! events through it would be a million group commits.
//!
//! Run: `cargo bench --bench checkpoint`. `STREAMWAL_BENCH_EVENTS` sizes the
//! journal (default 1,000,000); files go under `$STREAMWAL_BENCH_DIR` if set,
//! else under the system temporary directory (durable figures only mean
//! something on a real disk). Under `cargo test` (criterion's test mode) the
//! graphs and the journal are shrunk.

mod common;
use common::{bench_dir, test_mode};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore};
use streamwal::recovery::{ContextOptions, JOURNAL_DIR_NAME, StreamingContext};
use streamwal::tracker::{BatchBlocks, BlockInfo, Event, TrackerState};
use streamwal::{Wal, codec};
use tempfile::TempDir;

/// Graph sizes (bytes of state before encoding), with their labels.
const GRAPH_SIZES: [(&str, usize); 2] = [("1MiB", 1 << 20), ("16MiB", 16 << 20)];

/// The driver's batch interval (ms).
const INTERVAL_MS: u64 = 1_000;

/// Input streams the blocks are spread over.
const STREAMS: u32 = 4;

/// Blocks added per batch; each batch then journals an allocation and a
/// commit, so a batch is `BLOCKS_PER_BATCH + 2` events.
const BLOCKS_PER_BATCH: u64 = 8;

/// A cleanup event every this many batches, forgetting all but the newest
/// `BATCHES_KEPT` batches, as an engine that checkpoints would.
const CLEANUP_EVERY_BATCHES: u64 = 100;
const BATCHES_KEPT: u64 = 10;

/// Payload of each receiver-log record (the block's data is not read by
/// recovery; its size only changes the receiver log's scan).
const BLOCK_BYTES: usize = 16;

/// Events or records per `append_batch` call while building.
const BUILD_BATCH: usize = 8_192;

/// Journal events to build: `STREAMWAL_BENCH_EVENTS`, default 1,000,000.
fn journal_events() -> u64 {
    if test_mode() {
        return 2_000;
    }
    match std::env::var("STREAMWAL_BENCH_EVENTS") {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .expect("STREAMWAL_BENCH_EVENTS must be a whole number"),
        Err(_) => 1_000_000,
    }
}

/// xorshift64: a cheap, deterministic stream of pseudo-random numbers.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Operator state as 64-bit values (serde: a sequence of varints).
#[derive(Serialize, Deserialize)]
struct U64Graph {
    values: Vec<u64>,
}

impl U64Graph {
    fn of_bytes(bytes: usize) -> Self {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        U64Graph {
            values: (0..bytes / 8).map(|_| xorshift(&mut s)).collect(),
        }
    }
}

/// Opaque state the engine serialized itself (serde: one byte string).
struct BlobGraph(Vec<u8>);

impl Serialize for BlobGraph {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlobGraph {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = BlobGraph;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BlobGraph, E> {
                Ok(BlobGraph(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<BlobGraph, E> {
                Ok(BlobGraph(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BlobGraph, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(BlobGraph(v))
            }
        }
        d.deserialize_byte_buf(BlobVisitor)
    }
}

impl BlobGraph {
    fn of_bytes(bytes: usize) -> Self {
        let mut s = 0x2545_F491_4F6C_DD1D;
        BlobGraph(
            (0..bytes / 8)
                .flat_map(|_| xorshift(&mut s).to_le_bytes())
                .collect(),
        )
    }
}

/// Bytes as a plain `Vec<u8>` field (serde: a sequence of `u8`).
#[derive(Serialize)]
struct VecU8Graph {
    bytes: Vec<u8>,
}

/// A checkpoint at `batch_time` holding `graph` and an empty tracker state.
fn checkpoint_of<G>(graph: G, batch_time: u64) -> Checkpoint<G> {
    Checkpoint {
        batch_time,
        batch_interval_ms: INTERVAL_MS,
        graph,
        graph_version: 1,
        pending_batches: vec![batch_time],
        journal_lsn: 0,
        tracker: TrackerState::default(),
        source_offsets: BTreeMap::from([("topic-0".to_string(), "42".to_string())]),
    }
}

fn encoded_len<G: Serialize>(ckpt: &Checkpoint<G>) -> u64 {
    CheckpointStore::encode(ckpt)
        .expect("encode")
        .as_bytes()
        .len() as u64
}

/// Benchmark `CheckpointStore::write` of `ckpt` into a fresh store, each
/// write at a new batch time (so retention runs as in production).
fn bench_write<G: Serialize>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    mut ckpt: Checkpoint<G>,
) {
    let dir = bench_dir();
    let store = CheckpointStore::open(dir.path(), CheckpointOptions::default()).expect("store");
    group.throughput(Throughput::Bytes(encoded_len(&ckpt)));
    group.bench_function(id, |b| {
        b.iter(|| {
            ckpt.batch_time += INTERVAL_MS;
            black_box(store.write(&ckpt).expect("write"))
        })
    });
}

fn checkpoint_write(c: &mut Criterion) {
    let scale = if test_mode() { 64 } else { 1 };
    let sizes = GRAPH_SIZES.map(|(label, bytes)| (label, bytes / scale));

    let mut group = c.benchmark_group("checkpoint_encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (label, bytes) in sizes {
        let blob = checkpoint_of(BlobGraph::of_bytes(bytes), INTERVAL_MS);
        group.throughput(Throughput::Bytes(encoded_len(&blob)));
        group.bench_function(BenchmarkId::new("blob", label), |b| {
            b.iter(|| black_box(CheckpointStore::encode(&blob).expect("encode")))
        });
        let seq = checkpoint_of(
            VecU8Graph {
                bytes: blob.graph.0.clone(),
            },
            INTERVAL_MS,
        );
        group.throughput(Throughput::Bytes(encoded_len(&seq)));
        group.bench_function(BenchmarkId::new("vec_u8_seq", label), |b| {
            b.iter(|| black_box(CheckpointStore::encode(&seq).expect("encode")))
        });
        let u64s = checkpoint_of(U64Graph::of_bytes(bytes), INTERVAL_MS);
        group.throughput(Throughput::Bytes(encoded_len(&u64s)));
        group.bench_function(BenchmarkId::new("vec_u64", label), |b| {
            b.iter(|| black_box(CheckpointStore::encode(&u64s).expect("encode")))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("checkpoint_write");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, bytes) in sizes {
        let blob = checkpoint_of(BlobGraph::of_bytes(bytes), INTERVAL_MS);
        bench_write(&mut group, BenchmarkId::new("blob", label), blob);
        let u64s = checkpoint_of(U64Graph::of_bytes(bytes), INTERVAL_MS);
        bench_write(&mut group, BenchmarkId::new("vec_u64", label), u64s);
    }
    group.finish();

    let mut group = c.benchmark_group("checkpoint_write_encoded");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, bytes) in sizes {
        let dir = bench_dir();
        let store = CheckpointStore::open(dir.path(), CheckpointOptions::default()).expect("store");
        let encoded =
            CheckpointStore::encode(&checkpoint_of(BlobGraph::of_bytes(bytes), INTERVAL_MS))
                .expect("encode");
        group.throughput(Throughput::Bytes(encoded.as_bytes().len() as u64));
        // The same batch time each time: the write replaces the file, which
        // is the same I/O as a new one plus no retention.
        group.bench_function(BenchmarkId::new("blob", label), |b| {
            b.iter(|| black_box(store.write_encoded(&encoded).expect("write")))
        });
    }
    group.finish();
}

/// A driver state on disk: the checkpoint directory (with its journal) and
/// the receiver log's directory.
struct DriverState {
    _root: TempDir,
    checkpoint_dir: PathBuf,
    receiver_dir: PathBuf,
    /// Journal events written after the checkpoint.
    events: u64,
    /// The restart time to recover at: one interval after the newest batch.
    now_ms: u64,
}

/// Append `items` to `wal` durably, `BUILD_BATCH` at a time.
fn append_all(wal: &Wal, items: &[Vec<u8>]) -> Vec<streamwal::RecordHandle> {
    let mut handles = Vec::with_capacity(items.len());
    for chunk in items.chunks(BUILD_BATCH) {
        handles.extend(wal.append_batch(chunk).expect("append batch"));
    }
    handles
}

/// Build, durably, a driver that checkpointed once at the start and then
/// journaled `events` events: per batch, `BLOCKS_PER_BATCH` blocks added
/// (round robin over `STREAMS` streams), their allocation and the batch's
/// commit, with a cleanup every `CLEANUP_EVERY_BATCHES` batches. The last
/// batch may end part-way (blocks not yet allocated, or an allocation not yet
/// committed), as a crash leaves it.
fn build_driver_state(events: u64) -> DriverState {
    let root = bench_dir();
    let checkpoint_dir = root.path().join("checkpoints");
    let receiver_dir = root.path().join("receiver");
    let opts = ContextOptions::new(INTERVAL_MS);

    // The checkpoint, taken before any event (journal position 0).
    let store = CheckpointStore::open(&checkpoint_dir, opts.checkpoints.clone()).expect("store");
    let mut ckpt = checkpoint_of(U64Graph::of_bytes(64 << 10), INTERVAL_MS);
    ckpt.pending_batches.clear();
    store.write(&ckpt).expect("write checkpoint");
    drop(store);

    // The receiver log: one small record per block.
    let blocks_max = events * BLOCKS_PER_BATCH / (BLOCKS_PER_BATCH + 2) + BLOCKS_PER_BATCH + 1;
    let receiver = Wal::open(&receiver_dir, opts.receiver_log.clone()).expect("receiver log");
    let data: Vec<Vec<u8>> = (0..blocks_max)
        .map(|i| {
            let mut d = vec![0u8; BLOCK_BYTES];
            d[..8].copy_from_slice(&i.to_le_bytes());
            d
        })
        .collect();
    let handles = append_all(&receiver, &data);
    drop(receiver);

    // The journal, as the tracker writes it.
    let journal =
        Wal::open(checkpoint_dir.join(JOURNAL_DIR_NAME), opts.journal.clone()).expect("journal");
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(BUILD_BATCH);
    let mut written = 0u64;
    let mut emit = |ev: Event, encoded: &mut Vec<Vec<u8>>| {
        encoded.push(codec::encode(&ev, "journal event").expect("encode event"));
        written += 1;
        if encoded.len() == BUILD_BATCH {
            append_all(&journal, encoded);
            encoded.clear();
        }
        written < events
    };
    let mut batch_time = 2 * INTERVAL_MS;
    let mut next_block = 0usize;
    let mut batch_index = 0u64;
    'batches: loop {
        let mut blocks = BatchBlocks::new();
        for k in 0..BLOCKS_PER_BATCH {
            let block = BlockInfo {
                stream_id: (k % u64::from(STREAMS)) as u32,
                handle: handles[next_block],
                records: 100,
                receive_time: batch_time - INTERVAL_MS + k,
            };
            next_block += 1;
            blocks
                .entry(block.stream_id)
                .or_default()
                .push(block.clone());
            if !emit(Event::BlockAdded(block), &mut encoded) {
                break 'batches;
            }
        }
        if !emit(Event::BatchAllocated { batch_time, blocks }, &mut encoded) {
            break;
        }
        if !emit(Event::BatchCommitted { batch_time }, &mut encoded) {
            break;
        }
        batch_index += 1;
        if batch_index.is_multiple_of(CLEANUP_EVERY_BATCHES) {
            let before = batch_time.saturating_sub(BATCHES_KEPT * INTERVAL_MS);
            if !emit(Event::Cleanup { before }, &mut encoded) {
                break;
            }
        }
        batch_time += INTERVAL_MS;
    }
    append_all(&journal, &encoded);
    drop(journal);
    DriverState {
        _root: root,
        checkpoint_dir,
        receiver_dir,
        events,
        now_ms: batch_time + INTERVAL_MS,
    }
}

fn recovery(c: &mut Criterion) {
    let events = journal_events();
    let started = Instant::now();
    let state = build_driver_state(events);
    let built = started.elapsed();

    let recover = |s: &DriverState| {
        StreamingContext::<U64Graph>::builder(&s.checkpoint_dir)
            .receiver_log(&s.receiver_dir)
            .options(ContextOptions::new(INTERVAL_MS))
            .now_ms(s.now_ms)
            .get_or_create(|| unreachable!("a checkpoint exists"))
            .expect("recover")
    };
    let ctx = recover(&state);
    assert_eq!(ctx.report.journal_events_replayed, state.events);
    assert!(ctx.report.checkpoint_used.is_some());
    println!(
        "recovery: built {} journal events in {:.1} s; one recovery took {:.2} s ({} batches to run)",
        state.events,
        built.as_secs_f64(),
        ctx.report.duration.as_secs_f64(),
        ctx.report.batches_to_run,
    );
    drop(ctx);

    let mut group = c.benchmark_group("recovery_get_or_create");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(state.events));
    group.bench_function(BenchmarkId::new("journal_events", state.events), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let ctx = recover(&state);
                total += t0.elapsed();
                // Both logs are locked while the context lives: drop it
                // before the next recovery, outside the timed region.
                drop(ctx);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, checkpoint_write, recovery);
criterion_main!(benches);
