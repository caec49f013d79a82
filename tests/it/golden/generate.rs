//! The generator of `tests/data/`: run once per format version with
//! `STREAMWAL_WRITE_GOLDEN=1 cargo test --all-features --test it -- --ignored golden::generate`.
//! What it writes is committed; the other modules of `golden` read those
//! committed files, never what this writes in the same run, and check them
//! against values written out literally.

use super::data_dir;
use std::path::Path;
use streamwal::state::StateOptions;
use streamwal::tracker::{BlockInfo, BlockTracker};
use streamwal::{StateStore, Wal, WalOptions};

/// Small logs: segments of 4 KiB, neither preallocated nor prepared ahead,
/// so each file holds its header, its frames and zeros, nothing more.
pub fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4 << 10,
        preallocate: false,
        prepare_ahead: false,
        ..WalOptions::default()
    }
}

/// Copy the files of `from` whose names pass `keep` into `to`, replacing it.
fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_file() && keep(&name) {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn segments(name: &str) -> bool {
    name.ends_with(streamwal::wal::SEGMENT_SUFFIX)
}

#[test]
#[ignore = "writes tests/data; run with STREAMWAL_WRITE_GOLDEN=1"]
fn generate() {
    if std::env::var_os("STREAMWAL_WRITE_GOLDEN").is_none() {
        panic!("set STREAMWAL_WRITE_GOLDEN=1 to rewrite tests/data");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir();

    // A receiver log: three records over two segments, with fixed times.
    let wal_dir = tmp.path().join("wal");
    let wal = Wal::open(&wal_dir, small()).unwrap();
    let h1 = wal.append_at(b"alpha", 1_000).unwrap();
    let h2 = wal.append_at(&[b'b'; 1_500], 2_000).unwrap();
    let h3 = wal.append_at(&[b'c'; 2_500], 3_000).unwrap();
    wal.close().unwrap();
    copy_dir(&wal_dir, &data.join("wal"), &segments);

    // A journal: two blocks (the handles above), an allocation, a commit,
    // a cleanup.
    let journal_dir = tmp.path().join("journal");
    let tracker = BlockTracker::open(&journal_dir, None, small()).unwrap();
    let block = |stream_id, handle, records, receive_time| BlockInfo {
        stream_id,
        handle,
        records,
        receive_time,
    };
    tracker.add_block(block(0, h1, 1, 900)).unwrap();
    tracker.add_block(block(1, h2, 3, 950)).unwrap();
    tracker.allocate_blocks_to_batch(1_000).unwrap();
    tracker.commit_batch(1_000).unwrap();
    tracker.add_block(block(0, h3, 2, 1_900)).unwrap();
    tracker.cleanup(1_000).unwrap();
    drop(tracker);
    copy_dir(&journal_dir, &data.join("journal"), &segments);

    // Keyed state: two committed batches, a snapshot, one more batch.
    let state_dir = tmp.path().join("state");
    let opts = StateOptions {
        snapshot_every_batches: u64::MAX,
        snapshot_every_bytes: u64::MAX,
        log: small(),
        ..StateOptions::default()
    };
    let store = std::sync::Arc::new(StateStore::open(&state_dir, opts).unwrap());
    let counts = store.operator::<String, u64>("counts").unwrap();
    let seen = store.operator::<u64, String>("seen").unwrap();
    store.begin_batch(1_000).unwrap();
    counts.put("to".into(), 2).unwrap();
    counts.put("be".into(), 1).unwrap();
    seen.put_with_timeout(7, "seven".into(), 5_000).unwrap();
    store.commit_batch(1_000).unwrap();
    store.begin_batch(2_000).unwrap();
    counts.delete(&"be".into()).unwrap();
    counts.put("or".into(), 1).unwrap();
    store.commit_batch(2_000).unwrap();
    store.snapshot_now().unwrap();
    store.begin_batch(3_000).unwrap();
    counts.put("to".into(), 3).unwrap();
    seen.delete(&7).unwrap();
    store.commit_batch(3_000).unwrap();
    drop((counts, seen, store));
    let names = [
        streamwal::state::STATE_LOG_NAME,
        streamwal::state::STATE_SNAPSHOTS_NAME,
    ];
    for name in names {
        copy_dir(
            &state_dir.join(name),
            &data.join("state").join(name),
            &|n| segments(n) || n.ends_with(".ckpt"),
        );
    }
}

/// The objects directly under `prefix` in `store`, by name.
#[cfg(feature = "object-store")]
pub fn objects_under(
    store: &std::sync::Arc<streamwal::object::object_store::memory::InMemory>,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    use streamwal::object::object_store::{ObjectStore, ObjectStoreExt, path::Path as OPath};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let listed = rt
        .block_on(store.list_with_delimiter(Some(&OPath::from(prefix))))
        .unwrap();
    let mut out = Vec::new();
    for meta in listed.objects {
        let name = meta.location.filename().unwrap().to_string();
        let got = rt.block_on(store.get(&meta.location)).unwrap();
        out.push((name, rt.block_on(got.bytes()).unwrap().to_vec()));
    }
    out.sort();
    out
}

/// Object storage: a log (a claim, two batches, retention's floor) and a
/// checkpoint store opened twice (fences and seals of epochs 1 and 2; the
/// checkpoint object itself is in the checkpoint format, not kept here).
#[cfg(feature = "object-store")]
#[test]
#[ignore = "writes tests/data; run with STREAMWAL_WRITE_GOLDEN=1"]
fn generate_objects() {
    use std::sync::Arc;
    use streamwal::checkpoint::Checkpoint;
    use streamwal::object::object_store::memory::InMemory;
    use streamwal::object::{ObjectCheckpointStore, ObjectLocation};
    if std::env::var_os("STREAMWAL_WRITE_GOLDEN").is_none() {
        panic!("set STREAMWAL_WRITE_GOLDEN=1 to rewrite tests/data");
    }
    let store = Arc::new(InMemory::new());
    let at = |sub: &str| ObjectLocation::with_store(store.clone(), &format!("g/{sub}")).unwrap();
    let wal = Wal::open(at("log"), WalOptions::default()).unwrap();
    let first = wal.append_at(b"one", 1_000).unwrap();
    wal.append_at(b"two", 2_000).unwrap();
    wal.append_at(b"three", 3_000).unwrap();
    wal.purge_before_lsn(first.lsn() + 1).unwrap();
    drop(wal);
    let ckpt = |batch_time| Checkpoint {
        batch_time,
        batch_interval_ms: 1_000,
        graph: (),
        graph_version: 0,
        pending_batches: Vec::new(),
        journal_lsn: 0,
        tracker: Default::default(),
        source_offsets: Default::default(),
    };
    let one = ObjectCheckpointStore::open(at("ckpt"), Default::default()).unwrap();
    one.write(&ckpt(1_000)).unwrap();
    drop(one);
    let two = ObjectCheckpointStore::open(at("ckpt"), Default::default()).unwrap();
    assert_eq!(two.epoch(), Some(2));
    drop(two);
    let out = data_dir().join("object");
    if out.exists() {
        std::fs::remove_dir_all(&out).unwrap();
    }
    for (sub, prefix) in [("log", "g/log"), ("epochs", "g/ckpt/epochs")] {
        std::fs::create_dir_all(out.join(sub)).unwrap();
        for (name, bytes) in objects_under(&store, prefix) {
            std::fs::write(out.join(sub).join(name), bytes).unwrap();
        }
    }
}
