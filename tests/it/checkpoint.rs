//! Proves that the checkpoint store round-trips a non-trivial graph and tracker state on the real and the in-memory file system, keeps exactly the newest N files, and that `latest()` never returns a damaged checkpoint: a file torn at every byte offset, zeroed from every offset, or with any single bit flipped, a newer format version, a changed graph type, a failed write (EIO on write or sync, ENOSPC) and stray files all leave the previous good checkpoint as the answer, each skipped file listed with its reason; and that the background writer writes the newest of many submissions durably and hands write errors back through `submit` and `flush`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamwal::checkpoint::{
    CHECKPOINT_HEADER_BYTES, Checkpoint, CheckpointOptions, CheckpointStore, CheckpointWriter,
    checkpoint_file_name,
};
use streamwal::storage::{FaultPlan, FaultyStorage, MemStorage, StdStorage, Storage};
use streamwal::tracker::{BlockInfo, Event, TrackerState};
use streamwal::{CorruptionKind, Error, Wal, WalOptions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Window {
    length_ms: u64,
    slide_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Op {
    Source { stream: u32, topic: String },
    Map(Box<Op>),
    Window(Window, Box<Op>),
    Union(Vec<Op>),
    Sink,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Graph {
    name: String,
    outputs: Vec<Op>,
    by_name: BTreeMap<String, Op>,
    blob: Vec<u8>,
    window: Option<Window>,
    counts: HashMap<u32, i64>,
}

fn graph(seed: u64) -> Graph {
    let src = |s: u32| Op::Source {
        stream: s,
        topic: format!("topic-{s}-{seed}"),
    };
    let w = Window {
        length_ms: 30_000,
        slide_ms: 10_000 + seed,
    };
    Graph {
        name: format!("word count #{seed}"),
        outputs: vec![
            Op::Window(w.clone(), Box::new(Op::Map(Box::new(src(0))))),
            Op::Union(vec![src(1), src(2), Op::Sink]),
        ],
        by_name: [("a".to_string(), src(7)), ("b".to_string(), Op::Sink)].into(),
        blob: (0..=255u8).chain([0, 0, 255]).collect(),
        window: Some(w),
        counts: [(1, -5), (2, i64::MAX), (3, i64::MIN)].into(),
    }
}

/// A tracker state built the way the engine builds it: blocks stored in a
/// real receiver log, events applied in journal order.
fn tracker_state() -> TrackerState {
    let wal_opts = WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    };
    let wal = Wal::open(
        streamwal::Location::dir_on(Arc::new(MemStorage::new()), "/recv"),
        wal_opts,
    )
    .unwrap();
    let mut st = TrackerState::default();
    let add = |st: &mut TrackerState, stream: u32, t: u64| {
        let handle = wal
            .append(format!("block {stream} {t}").as_bytes())
            .unwrap();
        st.apply(&Event::BlockAdded(BlockInfo {
            stream_id: stream,
            handle,
            records: t % 7 + 1,
            receive_time: t,
        }));
    };
    for t in [100, 200, 300] {
        add(&mut st, 0, t);
        add(&mut st, 1, t + 1);
    }
    let first = st.unallocated.clone();
    st.apply(&Event::BatchAllocated {
        batch_time: 1_000,
        blocks: first,
    });
    st.apply(&Event::BatchCommitted { batch_time: 1_000 });
    add(&mut st, 1, 1_100);
    let second = st.unallocated.clone();
    st.apply(&Event::BatchAllocated {
        batch_time: 2_000,
        blocks: second,
    });
    add(&mut st, 0, 2_100);
    add(&mut st, 2, 2_200);
    assert_eq!(st.allocated.len(), 2);
    assert_eq!(st.unallocated.len(), 2);
    st
}

fn ckpt<G>(batch_time: u64, graph: G, tracker: TrackerState) -> Checkpoint<G> {
    Checkpoint {
        batch_time,
        batch_interval_ms: 1_000,
        graph,
        graph_version: 4,
        pending_batches: vec![batch_time.saturating_sub(1_000), batch_time],
        journal_lsn: batch_time / 100,
        tracker,
        source_offsets: [
            ("kafka/orders/0".to_string(), format!("{}", batch_time * 3)),
            ("kafka/orders/1".to_string(), "17".to_string()),
        ]
        .into(),
    }
}

fn small(batch_time: u64) -> Checkpoint<Vec<u8>> {
    ckpt(batch_time, vec![1, 2, 3], TrackerState::default())
}

fn opts(keep: usize) -> CheckpointOptions {
    CheckpointOptions { keep }
}

/// Run `f` on the in-memory and on the real file system.
fn on_both(f: impl Fn(Arc<dyn Storage>, &Path)) {
    f(Arc::new(MemStorage::new()), Path::new("/ckpt"));
    let tmp = tempfile::tempdir().unwrap();
    f(Arc::new(StdStorage::new()), &tmp.path().join("ckpt"));
}

fn times(store: &CheckpointStore) -> Vec<u64> {
    store.list().unwrap().into_iter().map(|(t, _)| t).collect()
}

#[test]
fn round_trip_with_nested_graph_and_tracker_state() {
    on_both(|storage, dir| {
        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts(10))
                .unwrap();
        let c = ckpt(5_000, graph(1), tracker_state());
        let path = store.write(&c).unwrap();
        assert_eq!(path, dir.join("checkpoint-00000000000000005000.ckpt"));
        // A fresh store on the same directory reads it back exactly.
        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts(10)).unwrap();
        let got = store.latest::<Graph>().unwrap();
        assert!(got.skipped.is_empty());
        let (p, back) = got.checkpoint.unwrap();
        assert_eq!(p, path);
        assert_eq!(back, c);
        assert_eq!(store.list().unwrap(), vec![(5_000, path)]);
    });
}

#[test]
fn empty_directory_has_no_checkpoint() {
    on_both(|storage, dir| {
        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts(10)).unwrap();
        let got = store.latest::<Graph>().unwrap();
        assert!(got.checkpoint.is_none());
        assert!(got.skipped.is_empty());
        assert!(store.list().unwrap().is_empty());
    });
}

#[test]
fn keep_must_be_at_least_one() {
    let r = CheckpointStore::open(
        streamwal::Location::dir_on(Arc::new(MemStorage::new()), "/c"),
        opts(0),
    );
    assert!(matches!(r, Err(Error::InvalidOptions(_))));
}

#[test]
fn retention_keeps_exactly_the_newest_n() {
    on_both(|storage, dir| {
        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts(3)).unwrap();
        for (i, t) in [1_000u64, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000]
            .into_iter()
            .enumerate()
        {
            store.write(&small(t)).unwrap();
            let want: Vec<u64> = (0..=i as u64)
                .rev()
                .take(3)
                .map(|k| (k + 1) * 1_000)
                .collect();
            assert_eq!(times(&store), want);
        }
        // Rewriting an existing batch time replaces it in place.
        let mut c = small(7_000);
        c.graph = vec![9, 9];
        store.write(&c).unwrap();
        assert_eq!(times(&store), vec![7_000, 6_000, 5_000]);
        let (_, got) = store.latest::<Vec<u8>>().unwrap().checkpoint.unwrap();
        assert_eq!(got.graph, vec![9, 9]);
        // An old batch time written last is the newest in write order
        // (SPARK-11267): it ranks first and the oldest-written one goes.
        store.write(&small(500)).unwrap();
        assert_eq!(times(&store), vec![500, 7_000, 6_000]);
        store.write(&small(8_000)).unwrap();
        assert_eq!(times(&store), vec![8_000, 500, 7_000]);
    });
}

#[test]
fn stray_files_are_ignored_and_temp_files_removed() {
    on_both(|storage, dir| {
        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts(1))
                .unwrap();
        store.write(&small(1_000)).unwrap();
        let stray = [
            "LOCK",
            ".DS_Store",
            "checkpoint-00000000000000009000.ckpt~",
            "checkpoint-9000.ckpt",
            "notes.txt",
        ];
        for name in stray {
            let f = storage
                .open(&dir.join(name), streamwal::storage::OpenMode::CreateNew)
                .unwrap();
            f.write_at(b"garbage, not a checkpoint", 0).unwrap();
        }
        storage.create_dir_all(&dir.join("journal")).unwrap();
        let tmp = dir.join(format!("{}.tmp", checkpoint_file_name(9_000)));
        let f = storage
            .open(&tmp, streamwal::storage::OpenMode::CreateNew)
            .unwrap();
        f.write_at(b"half a checkpoint", 0).unwrap();
        drop(f);

        let store =
            CheckpointStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts(1))
                .unwrap();
        let mut names: Vec<String> = storage
            .list(dir)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        let got = store.latest::<Vec<u8>>().unwrap();
        assert_eq!(got.checkpoint.unwrap().1, small(1_000));
        assert!(got.skipped.is_empty());
        for name in stray.iter().chain(&["journal"]) {
            assert!(got.ignored_files.iter().any(|n| n == name), "{name}");
        }
        // Retention touches none of them.
        store.write(&small(2_000)).unwrap();
        assert_eq!(times(&store), vec![2_000]);
        assert_eq!(storage.list(dir).unwrap().len(), stray.len() + 2);
    });
}

/// The bytes of a checkpoint file, written by the store, kept to damage.
struct Damaged {
    mem: MemStorage,
    store: CheckpointStore,
    good: Checkpoint<Graph>,
    newest_ckpt: Checkpoint<Graph>,
    newest: PathBuf,
    bytes: Vec<u8>,
}

fn two_checkpoints() -> Damaged {
    let mem = MemStorage::new();
    let store = CheckpointStore::open(
        streamwal::Location::dir_on(Arc::new(mem.clone()), "/c"),
        opts(10),
    )
    .unwrap();
    let good = ckpt(1_000, graph(1), tracker_state());
    store.write(&good).unwrap();
    let newest_ckpt = ckpt(2_000, graph(2), tracker_state());
    let newest = store.write(&newest_ckpt).unwrap();
    let bytes = mem.file_contents(&newest).unwrap();
    Damaged {
        mem,
        store,
        good,
        newest_ckpt,
        newest,
        bytes,
    }
}

impl Damaged {
    /// Put `bytes` in place of the newest file; `latest()` must fall back to
    /// the older checkpoint and list the newest as skipped, with a reason.
    fn falls_back(&self, bytes: Vec<u8>, what: &str) -> Error {
        self.mem.insert_file(&self.newest, bytes);
        let mut got = self.store.latest::<Graph>().unwrap();
        let (path, c) = got.checkpoint.expect(what);
        assert_eq!(
            path,
            Path::new("/c").join(checkpoint_file_name(1_000)),
            "{what}"
        );
        assert_eq!(c, self.good, "{what}");
        assert_eq!(got.skipped.len(), 1, "{what}");
        let skipped = got.skipped.remove(0);
        assert_eq!(skipped.file, self.newest, "{what}");
        skipped.reason
    }
}

#[test]
fn torn_at_every_offset_falls_back_to_the_previous_checkpoint() {
    let started = Instant::now();
    let d = two_checkpoints();
    let n = d.bytes.len();
    assert!(n > CHECKPOINT_HEADER_BYTES);
    for len in 0..n {
        let why = format!("truncated to {len} of {n} bytes");
        let reason = d.falls_back(d.bytes[..len].to_vec(), &why);
        assert!(
            matches!(
                reason,
                Error::Corruption {
                    kind: CorruptionKind::Truncated,
                    ..
                }
            ),
            "{why}: {reason:?}"
        );
        // A new size that landed before the data: zeros from `len` on.
        let mut zeroed = d.bytes.clone();
        zeroed[len..].fill(0);
        let why = format!("zeroed from {len} of {n} bytes");
        let reason = d.falls_back(zeroed, &why);
        assert!(reason.is_corruption(), "{why}: {reason:?}");
    }
    // Untouched, the newest is the answer again.
    d.mem.insert_file(&d.newest, d.bytes.clone());
    let got = d.store.latest::<Graph>().unwrap();
    assert_eq!(got.checkpoint.unwrap().1, d.newest_ckpt);
    eprintln!("{n} offsets in {:?}", started.elapsed());
}

#[test]
fn every_single_bit_flip_falls_back_to_the_previous_checkpoint() {
    let started = Instant::now();
    let d = two_checkpoints();
    for bit in 0..d.bytes.len() * 8 {
        let mut b = d.bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let why = format!("bit {bit} flipped");
        let reason = d.falls_back(b, &why);
        // CRC32 detects every single-bit error: all are corruption.
        assert!(reason.is_corruption(), "{why}: {reason:?}");
        assert!(!reason.to_string().is_empty());
    }
    eprintln!("{} bits in {:?}", d.bytes.len() * 8, started.elapsed());
}

#[test]
fn a_newer_format_version_is_skipped_naming_both_versions() {
    let d = two_checkpoints();
    // A plausible version-3 file: same header layout, valid header CRC.
    let mut b = d.bytes.clone();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let reason = d.falls_back(b, "version 3");
    assert!(
        matches!(
            &reason,
            Error::Corruption {
                offset: 0,
                kind: CorruptionKind::UnsupportedVersion {
                    found: 3,
                    supported: 2
                },
                ..
            }
        ),
        "{reason:?}"
    );
    let msg = reason.to_string();
    assert!(
        msg.contains("version 3") && msg.contains("supported: 2"),
        "{msg}"
    );
}

/// CRC-32/ISO-HDLC, bitwise, so the test does not lean on the crate's CRC.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_file_under_the_wrong_name_is_skipped() {
    let d = two_checkpoints();
    // The valid bytes of checkpoint 1000 copied over the name of 2000.
    let older = d
        .mem
        .file_contents(&Path::new("/c").join(checkpoint_file_name(1_000)))
        .unwrap();
    let reason = d.falls_back(older, "copied file");
    assert!(
        matches!(
            reason,
            Error::Corruption {
                kind: CorruptionKind::BadHeader(_),
                ..
            }
        ),
        "{reason:?}"
    );
}

#[test]
fn a_changed_graph_type_is_a_decode_error_not_corruption() {
    let d = two_checkpoints();
    let got = d.store.latest::<(u64, String)>().unwrap();
    assert!(got.checkpoint.is_none());
    assert_eq!(got.skipped.len(), 2);
    for s in &got.skipped {
        assert!(
            matches!(
                s.reason,
                Error::Decode {
                    what: "checkpoint graph",
                    ..
                }
            ),
            "{:?}",
            s.reason
        );
    }
}

#[test]
fn a_failed_write_leaves_the_previous_checkpoint() {
    type Inject = fn(&FaultPlan);
    let cases: [(&str, Inject, &str); 3] = [
        ("EIO on sync", |p| p.fail_file_sync_after(1), "sync_data"),
        ("EIO on write", |p| p.fail_write_after(1), "write"),
        ("ENOSPC", |p| p.set_write_budget(20), "write"),
    ];
    for (what, inject, op) in cases {
        on_both(|inner, dir| {
            let plan = FaultPlan::new();
            let storage = Arc::new(FaultyStorage::new(inner.clone(), plan.clone()));
            let store =
                CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts(1)).unwrap();
            store.write(&small(1_000)).unwrap();
            inject(&plan);
            let r = store.write(&small(2_000));
            assert!(
                matches!(&r, Err(Error::Io { op: o, .. }) if *o == op),
                "{what}: {r:?}"
            );
            plan.clear();
            // Neither the store nor a reopened one sees the failed write.
            for s in [
                &store,
                &CheckpointStore::open(streamwal::Location::dir_on(inner.clone(), dir), opts(1))
                    .unwrap(),
            ] {
                let got = s.latest::<Vec<u8>>().unwrap();
                assert_eq!(got.checkpoint.unwrap().1, small(1_000), "{what}");
                assert!(got.skipped.is_empty(), "{what}");
            }
            let names: Vec<String> = inner
                .list(dir)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, vec![checkpoint_file_name(1_000)], "{what}");
            // The store is not poisoned: the next write succeeds.
            store.write(&small(3_000)).unwrap();
            assert_eq!(times(&store), vec![3_000]);
        });
    }
}

/// A graph that is not `Send`: `submit` encodes on the caller's thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LocalGraph {
    step: u64,
    ops: Vec<Op>,
    #[serde(skip)]
    _not_send: PhantomData<*const ()>,
}

#[test]
fn background_writer_writes_the_newest_of_many_submissions() {
    on_both(|storage, dir| {
        let store = Arc::new(
            CheckpointStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts(4))
                .unwrap(),
        );
        let writer = CheckpointWriter::new(store.clone()).unwrap();
        let mut g = LocalGraph {
            step: 0,
            ops: vec![Op::Sink],
            _not_send: PhantomData,
        };
        let tracker = tracker_state();
        let last = 300u64;
        for i in 1..=last {
            g.step = i;
            g.ops.push(Op::Map(Box::new(Op::Sink)));
            writer
                .submit(&ckpt(i * 1_000, g.clone(), tracker.clone()))
                .unwrap();
            // Changing the graph after submit does not change what is written.
            g.ops.clear();
        }
        writer.flush().unwrap();
        let stats = writer.stats();
        assert_eq!(stats.submitted, last);
        assert_eq!(stats.written + stats.superseded, last, "{stats:?}");
        assert_eq!(stats.failed, 0);
        let store2 =
            CheckpointStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts(4))
                .unwrap();
        let (_, got) = store2.latest::<LocalGraph>().unwrap().checkpoint.unwrap();
        assert_eq!(got.batch_time, last * 1_000);
        assert_eq!(got.graph.step, last);
        assert_eq!(got.graph.ops.len(), 1, "the graph as it was at submit");
        assert_eq!(got.tracker, tracker);
        // Written in order: the files on disk are the newest written.
        let t = times(&store2);
        assert!(t.len() <= 4 && t[0] == last * 1_000, "{t:?}");
        // A second round after flush, then close.
        writer.submit(&ckpt(1_000_000, g.clone(), tracker)).unwrap();
        writer.close().unwrap();
        assert_eq!(times(&store2)[0], 1_000_000);
    });
}

#[test]
fn drop_writes_what_is_queued() {
    let mem = MemStorage::new();
    let store = Arc::new(
        CheckpointStore::open(streamwal::Location::dir_on(Arc::new(mem), "/c"), opts(2)).unwrap(),
    );
    {
        let writer = CheckpointWriter::new(store.clone()).unwrap();
        for t in 1..=20 {
            writer.submit(&small(t)).unwrap();
        }
    }
    let (_, got) = store.latest::<Vec<u8>>().unwrap().checkpoint.unwrap();
    assert_eq!(got, small(20));
}

#[test]
fn background_write_errors_come_back_through_flush_and_submit() {
    on_both(|inner, dir| {
        let plan = FaultPlan::new();
        let storage = Arc::new(FaultyStorage::new(inner.clone(), plan.clone()));
        let store = Arc::new(
            CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts(10)).unwrap(),
        );
        let writer = CheckpointWriter::new(store.clone()).unwrap();
        writer.submit(&small(1_000)).unwrap();
        writer.flush().unwrap();

        // flush() reports a failed write, once.
        plan.fail_file_sync_after(1);
        writer.submit(&small(2_000)).unwrap();
        let r = writer.flush();
        assert!(
            matches!(
                &r,
                Err(Error::Io {
                    op: "sync_data",
                    ..
                })
            ),
            "{r:?}"
        );
        writer.flush().unwrap();
        let (_, got) = store.latest::<Vec<u8>>().unwrap().checkpoint.unwrap();
        assert_eq!(got, small(1_000), "the failed checkpoint is not visible");

        // submit() reports a failed write too, and does not queue its own.
        plan.fail_file_sync_after(1);
        writer.submit(&small(3_000)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while writer.stats().failed < 2 {
            assert!(Instant::now() < deadline, "the write never failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = writer.submit(&small(4_000));
        assert!(
            matches!(
                &r,
                Err(Error::Io {
                    op: "sync_data",
                    ..
                })
            ),
            "{r:?}"
        );
        writer.flush().unwrap();
        assert_eq!(times(&store), vec![1_000]);

        // The writer goes on: the next checkpoint is written.
        writer.submit(&small(5_000)).unwrap();
        writer.close().unwrap();
        let (_, got) = store.latest::<Vec<u8>>().unwrap().checkpoint.unwrap();
        assert_eq!(got, small(5_000));
    });
}
