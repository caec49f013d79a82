//! Keyed state: random batches of puts, deletes and timed puts, committed or
//! aborted, with snapshots and reopenings in between, agree with a plain
//! `BTreeMap` model at the last committed batch; a damaged newest snapshot
//! falls back to the one before it; a damaged delta, a state of another
//! context, or a changed value type is a typed error; a crash between the
//! state's commit and the tracker's is finished by recovery; recovery lists
//! the batches committed after the checkpoint.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use streamwal::recovery::{CheckpointAt, ContextOptions, STATE_DIR_NAME};
use streamwal::state::{STATE_LOG_NAME, STATE_SNAPSHOTS_NAME};
use streamwal::tracker::BlockInfo;
use streamwal::{CorruptionKind, Error, StateOptions, StreamingContext, WalOptions};

type Ctx = StreamingContext<()>;

fn options(snapshot_every: u64) -> ContextOptions {
    // Small unpreallocated segments: these tests open many contexts.
    let small = |o: WalOptions| WalOptions {
        segment_bytes: 64 << 10,
        preallocate: false,
        ..o
    };
    let base = ContextOptions::new(1_000);
    ContextOptions {
        receiver_log: small(base.receiver_log.clone()),
        journal: small(base.journal.clone()),
        state: StateOptions {
            snapshot_every_batches: snapshot_every,
            log: small(StateOptions::default().log),
            ..StateOptions::default()
        },
        ..base
    }
}

fn open(dir: &Path, snapshot_every: u64) -> streamwal::Result<Ctx> {
    StreamingContext::builder(dir)
        .options(options(snapshot_every))
        .now_ms(0)
        .get_or_create(|| ())
}

/// The model: each key's value and the batch it expires at.
type Model = BTreeMap<u16, (u64, Option<u64>)>;

#[derive(Debug, Clone)]
enum Op {
    Put(u16, u64),
    PutTimed(u16, u64, u64),
    Delete(u16),
}

#[derive(Debug, Clone)]
enum Step {
    /// A batch: its ops, then commit (true) or abort.
    Batch(Vec<Op>, bool),
    /// A batch left open when the process "dies" (dropped, reopened).
    Crash(Vec<Op>),
    /// A synchronous snapshot.
    Snapshot,
    /// Close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u16..40, any::<u64>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u16..40, any::<u64>(), 1u64..5).prop_map(|(k, v, t)| Op::PutTimed(k, v, t * 1_000)),
        2 => (0u16..40).prop_map(Op::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec(op(), 0..12), prop::bool::weighted(0.8))
            .prop_map(|(ops, commit)| Step::Batch(ops, commit)),
        1 => prop::collection::vec(op(), 1..6).prop_map(Step::Crash),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Reopen),
    ]
}

/// Apply a batch's start (timeouts) and ops to the model.
fn model_batch(model: &mut Model, t: u64, ops: &[Op]) -> Vec<(u16, u64)> {
    let expired: Vec<(u16, u64)> = model
        .iter()
        .filter(|(_, (_, exp))| exp.is_some_and(|e| e <= t))
        .map(|(k, (v, _))| (*k, *v))
        .collect();
    for (k, _) in &expired {
        model.remove(k);
    }
    for op in ops {
        match *op {
            Op::Put(k, v) => {
                model.insert(k, (v, None));
            }
            Op::PutTimed(k, v, ttl) => {
                model.insert(k, (v, Some(t + ttl)));
            }
            Op::Delete(k) => {
                model.remove(&k);
            }
        }
    }
    expired
}

fn run_ops(ctx: &Ctx, t: u64, ops: &[Op]) -> Vec<(u16, u64)> {
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    ctx.begin_batch(t).unwrap();
    let mut expired = counts.expired().unwrap();
    expired.sort();
    for op in ops {
        match *op {
            Op::Put(k, v) => drop(counts.put(k, v).unwrap()),
            Op::PutTimed(k, v, ttl) => drop(counts.put_with_timeout(k, v, ttl).unwrap()),
            Op::Delete(k) => drop(counts.delete(&k).unwrap()),
        }
    }
    expired
}

fn assert_state(ctx: &Ctx, model: &Model) {
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    let want: Vec<(u16, u64)> = model.iter().map(|(k, (v, _))| (*k, *v)).collect();
    assert_eq!(counts.iter().unwrap(), want);
    assert_eq!(
        counts.range(10..20).unwrap(),
        want.iter()
            .copied()
            .filter(|(k, _)| (10..20).contains(k))
            .collect::<Vec<_>>()
    );
}

proptest! {
    // Each case opens a context several times (three logs, two stores, all
    // fsynced): few cases, each long.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn state_agrees_with_a_btreemap_at_the_last_committed_batch(
        steps in prop::collection::vec(step(), 1..24),
        snapshot_every in 1u64..5,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctx");
        let mut ctx = open(&dir, snapshot_every).unwrap();
        let mut model = Model::new();
        let mut t = 0;
        for s in &steps {
            match s {
                Step::Batch(ops, commit) => {
                    t += 1_000;
                    let mut next = model.clone();
                    let want_expired = model_batch(&mut next, t, ops);
                    let expired = run_ops(&ctx, t, ops);
                    prop_assert_eq!(expired, want_expired);
                    if *commit {
                        ctx.commit_batch(t).unwrap();
                        model = next;
                    } else {
                        ctx.abort_batch();
                    }
                }
                Step::Crash(ops) => {
                    t += 1_000;
                    run_ops(&ctx, t, ops);
                    drop(ctx);
                    ctx = open(&dir, snapshot_every).unwrap();
                }
                Step::Snapshot => ctx.state.snapshot_now().unwrap(),
                Step::Reopen => {
                    drop(ctx);
                    ctx = open(&dir, snapshot_every).unwrap();
                }
            }
            assert_state(&ctx, &model);
        }
        drop(ctx);
        let ctx = open(&dir, snapshot_every).unwrap();
        assert_state(&ctx, &model);
        prop_assert!(ctx.state.stats().snapshot_failures == 0);
    }
}

/// Commit `n` batches of one put each (key i = i), snapshotting after each.
fn committed_with_snapshots(dir: &Path, n: u64) -> Ctx {
    let ctx = open(dir, 1_000).unwrap();
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    for i in 1..=n {
        ctx.begin_batch(i * 1_000).unwrap();
        counts.put(i as u16, i).unwrap();
        ctx.commit_batch(i * 1_000).unwrap();
        ctx.state.snapshot_now().unwrap();
    }
    ctx
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, at_from_end: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - at_from_end;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_one_before_and_its_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    drop(committed_with_snapshots(&dir, 4));
    let snaps = files_in(&dir.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME));
    assert_eq!(snaps.len(), 2, "two snapshots are kept: {snaps:?}");
    flip_byte(snaps.last().unwrap(), 3);
    check_fallback(&dir);
}

#[test]
fn a_newest_snapshot_cut_short_falls_back_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    drop(committed_with_snapshots(&dir, 4));
    let snaps = files_in(&dir.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME));
    let newest = snaps.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    check_fallback(&dir);
}

#[test]
fn a_newest_snapshot_of_a_newer_format_or_disagreeing_with_its_header_falls_back() {
    use streamwal::checkpoint::{CheckpointHeader, GraphEncoding, decode_file, encode_file_with};
    use streamwal::state::SnapshotBody;
    for newer_format in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctx");
        drop(committed_with_snapshots(&dir, 4));
        let snaps = files_in(&dir.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME));
        let newest = snaps.last().unwrap();
        let bytes = std::fs::read(newest).unwrap();
        let mut c = decode_file::<SnapshotBody>(newest, &bytes).unwrap();
        match newer_format {
            true => c.graph.format += 1,
            false => c.graph.log_lsn += 1,
        }
        // Checksums that hold, and the file's place in write order.
        let mut out = encode_file_with(&c, GraphEncoding::Bincode).unwrap();
        let mut header = CheckpointHeader::decode(&out).unwrap();
        header.write_seq = CheckpointHeader::decode(&bytes).unwrap().write_seq;
        let encoded = header.encode();
        out[..encoded.len()].copy_from_slice(&encoded);
        std::fs::write(newest, out).unwrap();
        check_fallback(&dir);
    }
}

/// The newest snapshot (batch 4) is unusable: recovery uses batch 3's and
/// replays batch 4's delta, and the state is whole.
fn check_fallback(dir: &Path) {
    let ctx = open(dir, 1_000).unwrap();
    let report = ctx.state.report();
    assert_eq!(report.snapshots_skipped.len(), 1, "{report:?}");
    assert_eq!(report.snapshot_used.as_ref().map(|s| s.1), Some(3_000));
    assert_eq!(report.deltas_replayed, [4_000]);
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    assert_eq!(counts.iter().unwrap(), [(1, 1), (2, 2), (3, 3), (4, 4)]);
}

/// A value whose encoding cannot occur by chance in a segment's framing.
const MARK: u64 = 0x1122_3344_5566_7700;

#[test]
fn a_damaged_delta_of_a_committed_batch_is_corruption_naming_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = open(&dir, 1_000).unwrap();
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    for i in 1..=3u64 {
        ctx.begin_batch(i * 1_000).unwrap();
        counts.put(i as u16, MARK + i).unwrap();
        ctx.commit_batch(i * 1_000).unwrap();
    }
    drop((counts, ctx));
    // The second delta's payload: damage inside a record with a durable
    // record after it is corruption, never a shorter state.
    let log = dir.join(STATE_DIR_NAME).join(STATE_LOG_NAME);
    let seg = files_in(&log)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a segment");
    let bytes = std::fs::read(&seg).unwrap();
    let needle = streamwal::codec::encode(&(MARK + 2), "probe").unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("the second delta's value is in the segment");
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x01;
    std::fs::write(&seg, damaged).unwrap();
    let got = open(&dir, 1_000);
    match got {
        Err(Error::Corruption { file, .. }) => {
            assert!(file.starts_with(&log), "{}", file.display())
        }
        other => panic!("want corruption in the state log, got {other:?}"),
    }
}

#[test]
fn a_changed_value_type_is_a_typed_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    drop(committed_with_snapshots(&dir, 2));
    let ctx = open(&dir, 1_000).unwrap();
    let got = ctx.state::<u16, String>("counts");
    assert!(
        matches!(&got, Err(Error::StateDecode { operator, .. }) if operator == "counts"),
        "{got:?}"
    );
    // The right types still read it, in this process and the next.
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    assert_eq!(counts.len().unwrap(), 2);
    assert!(matches!(
        ctx.state::<u16, i8>("counts"),
        Err(Error::StateMisuse(_))
    ));
}

#[test]
fn state_of_another_context_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    drop(committed_with_snapshots(&a, 1));
    let ctx = open(&b, 1_000).unwrap();
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    for t in [5_000, 6_000] {
        ctx.begin_batch(t).unwrap();
        counts.put(9, t).unwrap();
        ctx.commit_batch(t).unwrap();
    }
    drop((counts, ctx));
    // a's snapshot covers b's first delta; the one after it carries
    // another state id. (A snapshot is checked against the deltas after
    // it, not against those it covers.)
    let (from, to) = (
        a.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME),
        b.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME),
    );
    for f in files_in(&from) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
    let got = open(&b, 1_000);
    assert!(
        matches!(
            &got,
            Err(Error::Corruption {
                kind: CorruptionKind::BadHeader(_),
                file,
                ..
            }) if file.extension().is_some_and(|e| e == "wal")
        ),
        "the error names the delta's segment: {got:?}"
    );
}

#[test]
fn a_crash_between_the_state_commit_and_the_tracker_commit_is_finished_by_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = open(&dir, 1_000).unwrap();
    let handle = ctx.receiver_log.append(b"to be").unwrap();
    ctx.tracker
        .add_block(BlockInfo {
            stream_id: 0,
            handle,
            records: 1,
            receive_time: 500,
        })
        .unwrap();
    let counts = ctx.state::<String, u64>("counts").unwrap();
    ctx.begin_batch(1_000).unwrap();
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    counts.put("to".into(), 1).unwrap();
    // The first step of commit_batch only: the process dies before the
    // tracker's commit.
    ctx.state.commit_batch(1_000).unwrap();
    drop((counts, ctx));
    let ctx = StreamingContext::<()>::builder(&dir)
        .options(options(1_000))
        .now_ms(1_000)
        .get_or_create(|| ())
        .unwrap();
    assert_eq!(ctx.report.commits_completed, [1_000]);
    assert!(ctx.tracker.is_committed(1_000).unwrap());
    let recovered = ctx.recovered.as_ref().unwrap();
    assert!(recovered.batches.is_empty(), "{:?}", recovered.batches);
    assert_eq!(recovered.state_version, Some(1_000));
}

#[test]
fn recovery_lists_the_batches_committed_after_the_checkpoint_with_their_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ctx");
    let ctx = open(&dir, 1_000).unwrap();
    for t in [1_000u64, 2_000, 3_000] {
        let handle = ctx.receiver_log.append(format!("b{t}").as_bytes()).unwrap();
        ctx.tracker
            .add_block(BlockInfo {
                stream_id: 0,
                handle,
                records: 1,
                receive_time: t - 1,
            })
            .unwrap();
        ctx.tracker.allocate_blocks_to_batch(t).unwrap();
        ctx.commit_batch(t).unwrap();
        if t == 1_000 {
            ctx.checkpoint(CheckpointAt::batch(t)).unwrap();
        }
    }
    drop(ctx);
    let ctx = StreamingContext::<()>::builder(&dir)
        .options(options(1_000))
        .now_ms(3_000)
        .get_or_create(|| ())
        .unwrap();
    let recovered = ctx.recovered.as_ref().unwrap();
    let after: Vec<u64> = recovered
        .committed_after_checkpoint
        .iter()
        .map(|b| b.batch_time)
        .collect();
    assert_eq!(after, [2_000, 3_000]);
    let data = ctx
        .read_batch(&recovered.committed_after_checkpoint[0].blocks)
        .unwrap();
    assert_eq!(data[&0], [b"b2000".to_vec()]);
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(&tmp.path().join("ctx"), 1_000).unwrap();
    let counts = ctx.state::<u16, u64>("counts").unwrap();
    // A write with no batch open.
    assert!(matches!(counts.put(1, 1), Err(Error::StateMisuse(_))));
    ctx.begin_batch(2_000).unwrap();
    counts.put(1, 1).unwrap();
    // Committing another batch than the open one commits neither.
    assert!(matches!(
        ctx.commit_batch(3_000),
        Err(Error::StateMisuse(_))
    ));
    assert!(!ctx.tracker.is_committed(3_000).unwrap());
    assert!(matches!(ctx.begin_batch(3_000), Err(Error::StateMisuse(_))));
    ctx.commit_batch(2_000).unwrap();
    // A batch not after the last committed one.
    assert!(matches!(ctx.begin_batch(2_000), Err(Error::StateMisuse(_))));
    assert_eq!(counts.get(&1).unwrap(), Some(1));
    assert_eq!(ctx.state.version(), Some(2_000));
}

#[test]
fn a_delta_over_the_record_limit_is_refused_and_the_batch_can_be_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StateOptions {
        log: WalOptions {
            max_record_bytes: 4 << 10,
            ..StateOptions::default().log
        },
        ..StateOptions::default()
    };
    let store = std::sync::Arc::new(
        streamwal::StateStore::open(tmp.path().join("s"), opts.clone()).unwrap(),
    );
    let blobs = store.operator::<u16, Vec<u8>>("blobs").unwrap();
    store.begin_batch(1_000).unwrap();
    blobs.put(1, vec![7; 100]).unwrap();
    store.commit_batch(1_000).unwrap();
    store.begin_batch(2_000).unwrap();
    blobs.put(2, vec![9; 8 << 10]).unwrap();
    let got = store.commit_batch(2_000);
    assert!(matches!(got, Err(Error::TooLarge { .. })), "{got:?}");
    store.abort_batch();
    store.begin_batch(2_000).unwrap();
    blobs.put(3, vec![1; 10]).unwrap();
    store.commit_batch(2_000).unwrap();
    drop((blobs, store));
    let store =
        std::sync::Arc::new(streamwal::StateStore::open(tmp.path().join("s"), opts).unwrap());
    let blobs = store.operator::<u16, Vec<u8>>("blobs").unwrap();
    let keys: Vec<u16> = blobs.iter().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [1, 3]);
}

/// A value that refuses to serialize when asked to.
#[derive(Clone, serde::Deserialize)]
struct Picky(bool);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            true => s.serialize_bool(true),
            false => Err(serde::ser::Error::custom("this value refuses to serialize")),
        }
    }
}

#[test]
fn a_value_that_does_not_encode_fails_the_commit_and_the_batch_can_be_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let opts = StateOptions::default();
    let store = std::sync::Arc::new(streamwal::StateStore::open(&dir, opts.clone()).unwrap());
    let picky = store.operator::<u16, Picky>("picky").unwrap();
    store.begin_batch(1_000).unwrap();
    picky.put(1, Picky(true)).unwrap();
    store.commit_batch(1_000).unwrap();
    store.begin_batch(2_000).unwrap();
    picky.put(1, Picky(false)).unwrap();
    picky.put(2, Picky(true)).unwrap();
    let got = store.commit_batch(2_000);
    let Err(Error::Encode { what, source }) = &got else {
        panic!("{:?}", got.map(|_| ()))
    };
    assert_eq!(*what, "state delta");
    assert!(source.to_string().contains("refuses"), "{source}");
    // Nothing was written and the batch is still open.
    assert_eq!(store.open_batch(), Some(2_000));
    assert_eq!(store.version(), Some(1_000));
    store.abort_batch();
    assert_eq!(picky.len().unwrap(), 1);
    drop((picky, store));
    let store = std::sync::Arc::new(streamwal::StateStore::open(&dir, opts).unwrap());
    let picky = store.operator::<u16, Picky>("picky").unwrap();
    let got: Vec<(u16, bool)> = picky
        .iter()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    assert_eq!(got, [(1, true)]);
}
