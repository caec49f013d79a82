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
