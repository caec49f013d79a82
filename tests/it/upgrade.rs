//! Upgrades and one owner (issue 17): a graph type that gained a `#[serde(default)]` field or lost one recovers its state; an older graph version goes through the migration hook, a newer one is refused naming both versions; an unusable newest checkpoint is a typed error (damaged, graph does not decode) unless the caller opted into an older one or a fresh graph; a format-1 (bincode) checkpoint still loads; `latest` ranks by write order (SPARK-11267); a second opener of a live context is refused before it touches any file.

use crate::common;

use common::context::add;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore, GraphEncoding};
use streamwal::recovery::{ContextBuilder, ContextOptions, OnCheckpointError, StreamingContext};
use streamwal::tracker::TrackerState;
use streamwal::{CheckpointAt, Error, Unusable, WalOptions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GraphV1 {
    name: String,
    counts: BTreeMap<String, u64>,
    window_ms: u64,
}

/// V1 with a field added (`#[serde(default)]`) and the fields reordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GraphAdded {
    counts: BTreeMap<String, u64>,
    #[serde(default)]
    watermark_ms: u64,
    window_ms: u64,
    name: String,
}

/// V1 with `window_ms` removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GraphRemoved {
    name: String,
    counts: BTreeMap<String, u64>,
}

fn v1() -> GraphV1 {
    GraphV1 {
        name: "wordcount".into(),
        counts: [("a".to_string(), 7), ("b".to_string(), 3)].into(),
        window_ms: 60_000,
    }
}

fn opts() -> ContextOptions {
    let small = WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    };
    ContextOptions {
        receiver_log: small.clone(),
        journal: small,
        ..ContextOptions::new(1_000)
    }
}

fn builder<G: serde::de::DeserializeOwned>(dir: &Path) -> ContextBuilder<G> {
    StreamingContext::builder(dir).options(opts()).now_ms(3_000)
}

/// A context at `dir` with graph `v1()` at graph version 1, a block, a
/// batch and a checkpoint at 2000 (which retires the journal before it).
fn write_v1(dir: &Path) {
    let ctx = builder::<GraphV1>(dir)
        .graph_version(1)
        .get_or_create(v1)
        .unwrap();
    add(&ctx, 0, b"x", 1);
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.commit_batch(1_000).unwrap();
    add(&ctx, 0, b"y", 2);
    ctx.tracker.allocate_blocks_to_batch(2_000).unwrap();
    ctx.commit_batch(2_000).unwrap();
    ctx.checkpoint(CheckpointAt::batch(2_000)).unwrap();
    add(&ctx, 0, b"z", 3);
}

#[test]
fn a_graph_with_an_added_default_field_recovers_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    let ctx = builder::<GraphAdded>(&dir)
        .graph_version(1)
        .get_or_create(|| panic!("the checkpoint's graph must be used"))
        .unwrap();
    assert_eq!(ctx.graph.counts, v1().counts);
    assert_eq!(
        (ctx.graph.name.as_str(), ctx.graph.window_ms),
        ("wordcount", 60_000)
    );
    assert_eq!(ctx.graph.watermark_ms, 0);
    assert!(ctx.report.checkpoints_skipped.is_empty());
    assert_eq!(ctx.recovered.as_ref().unwrap().checkpoint_time, Some(2_000));
}

#[test]
fn a_graph_with_a_removed_field_recovers_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    let ctx = builder::<GraphRemoved>(&dir)
        .get_or_create(|| panic!("the checkpoint's graph must be used"))
        .unwrap();
    assert_eq!(ctx.graph.counts, v1().counts);
    assert_eq!(
        ctx.graph_version, 1,
        "no version declared: the checkpoint's"
    );
}

#[test]
fn an_older_graph_version_goes_through_the_migration() {
    #[derive(Debug, Deserialize, Serialize)]
    struct GraphV2 {
        title: String,
        total: u64,
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    let ctx = builder::<GraphV2>(&dir)
        .graph_version(2)
        .migrate_graph(|old| {
            assert_eq!(old.version(), 1);
            let g: GraphV1 = old.decode()?;
            Ok(GraphV2 {
                title: g.name,
                total: g.counts.values().sum(),
            })
        })
        .get_or_create(|| panic!("migrated, not created"))
        .unwrap();
    assert_eq!(
        (ctx.graph.title.as_str(), ctx.graph.total),
        ("wordcount", 10)
    );
    assert_eq!(ctx.graph_version, 2);
    // Its next checkpoint is version 2 and needs no migration.
    ctx.checkpoint(CheckpointAt::batch(3_000)).unwrap();
    drop(ctx);
    let again = builder::<GraphV2>(&dir)
        .graph_version(2)
        .get_or_create(|| panic!("decoded, not created"))
        .unwrap();
    assert_eq!(again.graph.total, 10);
}

#[test]
fn a_newer_graph_version_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    let err = builder::<GraphV1>(&dir)
        .graph_version(0)
        .get_or_create(v1)
        .unwrap_err();
    match &err {
        Error::CheckpointUnusable {
            file,
            why:
                Unusable::GraphVersionTooNew {
                    found: 1,
                    supported: 0,
                },
            ..
        } => assert_eq!(file, &ckpt_file(&dir, 2_000)),
        other => panic!("expected GraphVersionTooNew, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("graph version 1") && text.contains("this code's 0"),
        "{text}"
    );
}

#[test]
fn a_changed_graph_type_says_so_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    // A graph type the stored one cannot become.
    type Other = Vec<u64>;
    let err = builder::<Other>(&dir).get_or_create(Vec::new).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            Error::CheckpointUnusable {
                why: Unusable::GraphDoesNotDecode {
                    graph_version: 1,
                    code_version: 1
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("does not decode"), "{text}");
    assert!(
        text.contains("migrate_graph") && text.contains("CreateFresh"),
        "{text}"
    );
    assert!(!text.contains("LSN"), "{text}");
    // Nothing was changed: the old code still recovers.
    let ctx = builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
    assert_eq!(ctx.graph, v1());
    drop(ctx);
    // Asked to fall back, it passes the checkpoint over and says why.
    let ctx = builder::<Other>(&dir)
        .on_checkpoint_error(OnCheckpointError::UseOlder)
        .get_or_create(Vec::new)
        .unwrap();
    assert!(matches!(
        &ctx.report.checkpoints_skipped[0].reason,
        Error::CheckpointUnusable {
            why: Unusable::GraphDoesNotDecode { .. },
            ..
        }
    ));
}

#[test]
fn create_fresh_replaces_the_graph_and_keeps_the_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    let ctx = builder::<Vec<u64>>(&dir)
        .on_checkpoint_error(OnCheckpointError::CreateFresh)
        .get_or_create(|| vec![42])
        .unwrap();
    assert_eq!(ctx.graph, vec![42]);
    assert!(ctx.report.graph_not_restored.is_some());
    let rec = ctx.recovered.as_ref().unwrap();
    assert_eq!(rec.checkpoint_time, Some(2_000));
    assert!(rec.committed.contains(&2_000));
    assert_eq!(rec.unallocated.values().map(Vec::len).sum::<usize>(), 1);
}

#[test]
fn a_damaged_newest_checkpoint_fails_loudly_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
    ctx.checkpoint(CheckpointAt::batch(1_000)).unwrap();
    ctx.checkpoint(CheckpointAt::batch(2_000)).unwrap();
    drop(ctx);
    let newest = ckpt_file(&dir, 2_000);
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&newest, bytes).unwrap();
    let err = builder::<GraphV1>(&dir).get_or_create(v1).unwrap_err();
    match &err {
        Error::CheckpointUnusable {
            file,
            why: Unusable::Damaged,
            source: Some(_),
        } => assert_eq!(file, &newest),
        other => panic!("expected a damaged checkpoint, got {other:?}"),
    }
    assert!(err.to_string().contains("UseOlder"), "{err}");
    let ctx = builder::<GraphV1>(&dir)
        .on_checkpoint_error(OnCheckpointError::UseOlder)
        .get_or_create(v1)
        .unwrap();
    assert_eq!(ctx.recovered.as_ref().unwrap().checkpoint_time, Some(1_000));
    assert_eq!(ctx.report.checkpoints_skipped.len(), 1);
    assert_eq!(ctx.report.checkpoints_skipped[0].file, newest);
}

fn ckpt_file(dir: &Path, t: u64) -> PathBuf {
    dir.join(streamwal::checkpoint::checkpoint_file_name(t))
}

fn sample(batch_time: u64, graph: &str) -> Checkpoint<String> {
    Checkpoint {
        batch_time,
        batch_interval_ms: 1_000,
        graph: graph.to_string(),
        graph_version: 0,
        pending_batches: Vec::new(),
        journal_lsn: 0,
        tracker: TrackerState::default(),
        source_offsets: BTreeMap::new(),
    }
}

/// A checkpoint file as format version 1 wrote it: a 48-byte header
/// (docs/FORMAT.md) and a bincode graph.
fn v1_file(c: &Checkpoint<String>) -> Vec<u8> {
    let v2 = streamwal::checkpoint::encode_file_with(c, GraphEncoding::Bincode).unwrap();
    let body = &v2[64..];
    let mut b = Vec::new();
    b.extend_from_slice(b"STRMCKPT");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&48u32.to_le_bytes());
    b.extend_from_slice(&c.batch_time.to_le_bytes());
    b.extend_from_slice(&c.journal_lsn.to_le_bytes());
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(body);
    b
}

#[test]
fn latest_is_the_last_written_and_format_1_files_rank_below_and_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpts");
    let store = CheckpointStore::open(&dir, CheckpointOptions { keep: 10 }).unwrap();
    // An old file of a newer batch time: ranks below every sequenced one.
    std::fs::write(ckpt_file(&dir, 9_000), v1_file(&sample(9_000, "old"))).unwrap();
    assert_eq!(
        store
            .latest::<String>()
            .unwrap()
            .checkpoint
            .unwrap()
            .1
            .graph,
        "old",
        "a format-1 bincode checkpoint still loads"
    );
    store.write(&sample(2_000, "newer batch")).unwrap();
    store.write(&sample(1_000, "written last")).unwrap();
    let got = store.latest::<String>().unwrap().checkpoint.unwrap().1;
    assert_eq!(
        (got.batch_time, got.graph.as_str()),
        (1_000, "written last")
    );
    let order: Vec<u64> = store.list().unwrap().iter().map(|(t, _)| *t).collect();
    assert_eq!(order, [1_000, 2_000, 9_000]);
    // A new store on the directory goes on from the largest number.
    drop(store);
    let store = CheckpointStore::open(&dir, CheckpointOptions { keep: 10 }).unwrap();
    store.write(&sample(500, "after reopen")).unwrap();
    assert_eq!(store.list().unwrap()[0].0, 500);
}

#[test]
fn keyed_state_snapshots_stay_bincode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
    let counts = ctx.state::<String, u64>("counts").unwrap();
    ctx.begin_batch(1_000).unwrap();
    counts.put("k".to_string(), 1).unwrap();
    ctx.commit_batch(1_000).unwrap();
    ctx.state.snapshot_now().unwrap();
    ctx.checkpoint(CheckpointAt::batch(1_000)).unwrap();
    let snaps = dir.join("state").join("snapshots");
    let snap = std::fs::read(ckpt_file(&snaps, 1_000)).unwrap();
    assert_eq!(
        &snap[44..48],
        &1u32.to_le_bytes(),
        "state snapshot: bincode"
    );
    let graph = std::fs::read(ckpt_file(&dir, 1_000)).unwrap();
    assert_eq!(&graph[44..48], &2u32.to_le_bytes(), "graph: CBOR");
}

/// Every file below `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(p, bytes);
            }
        }
    }
    out
}

#[test]
fn a_second_opener_of_a_live_context_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let live = builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
    add(&live, 0, b"x", 1);
    live.checkpoint(CheckpointAt::batch(1_000)).unwrap();
    // The live driver is half-way through writing a checkpoint.
    let temp = dir.join(format!(
        "{}.tmp",
        streamwal::checkpoint::checkpoint_file_name(2_000)
    ));
    std::fs::write(&temp, b"being written").unwrap();
    let before = files(&dir);
    let err = builder::<GraphV1>(&dir).get_or_create(v1).unwrap_err();
    match &err {
        Error::Locked {
            path,
            holder: Some(holder),
        } => {
            assert_eq!(path, &dir);
            assert_eq!(holder.pid, std::process::id());
            assert!(!holder.host.is_empty());
        }
        other => panic!("expected Locked with the holder, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(files(&dir), before, "the refused opener changed a file");
    assert!(temp.exists());
    drop(live);
    builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
}

#[test]
fn a_checkpoint_in_a_newer_format_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    write_v1(&dir);
    // As a later release might write it: format 3, header checksum right.
    let file = ckpt_file(&dir, 2_000);
    let mut b = std::fs::read(&file).unwrap();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&file, b).unwrap();
    let err = builder::<GraphV1>(&dir).get_or_create(v1).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::CheckpointUnusable {
                why: Unusable::FormatTooNew {
                    found: 3,
                    supported: 2
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 3"), "{err}");
}

#[test]
fn falling_back_past_a_retired_journal_names_the_checkpoint_not_lsn_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = builder::<GraphV1>(&dir).get_or_create(v1).unwrap();
    // Enough events to seal journal segments, which the checkpoint retires.
    for i in 0..200 {
        add(&ctx, 0, b"block", i);
    }
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.commit_batch(1_000).unwrap();
    ctx.checkpoint(CheckpointAt::batch(1_000)).unwrap();
    drop(ctx);
    let journal_start = streamwal::Wal::open(dir.join("journal"), opts().journal)
        .unwrap()
        .first_lsn();
    assert!(
        journal_start > Some(1),
        "the journal was retired: {journal_start:?}"
    );
    let err = builder::<Vec<u64>>(&dir)
        .on_checkpoint_error(OnCheckpointError::UseOlder)
        .get_or_create(Vec::new)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::CheckpointUnusable {
                why: Unusable::GraphDoesNotDecode { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("LSN"), "{err}");
}
