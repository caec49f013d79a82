//! The fuzz targets hold on the checked-in seeds and on deterministic
//! mutations of them, so CI exercises them on stable without cargo-fuzz.

use crate::common::rng::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use streamwal::fuzzing::{self, bytes_from_files};
use streamwal::storage::{MemStorage, Storage};
use streamwal::{Wal, WalOptions};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Deterministic mutations of `seed`: bit flips, overwritten bytes, cuts.
fn mutations(seed: &[u8], count: usize, state: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(state);
    let mut next = || rng.next();
    (0..count)
        .map(|_| {
            let mut m = seed.to_vec();
            if m.len() > 1 {
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() % (m.len() as u64 - 1)) as usize + 1;
                    match next() % 3 {
                        0 => m[i] ^= 1 << (next() % 8),
                        1 => m[i] = next() as u8,
                        _ => m.truncate(i),
                    }
                    if i >= m.len() {
                        break;
                    }
                }
            }
            m
        })
        .collect()
}

#[test]
fn open_log_holds_on_seeds_and_mutations() {
    for (path, seed) in seeds("open_log") {
        fuzzing::open_log(&seed);
        for m in mutations(&seed, 150, seed.len() as u64 | 1) {
            let r = std::panic::catch_unwind(|| fuzzing::open_log(&m));
            assert!(
                r.is_ok(),
                "open_log panicked on a mutation of {}",
                path.display()
            );
        }
    }
}

#[test]
fn decode_holds_on_seeds_and_mutations() {
    for (_, seed) in seeds("decode") {
        fuzzing::decode(&seed);
        for m in mutations(&seed, 500, 0x9e37_79b9_7f4a_7c15) {
            fuzzing::decode(&m);
        }
    }
}

#[test]
fn checkpoint_holds_on_seeds_and_mutations() {
    for (_, seed) in seeds("checkpoint") {
        fuzzing::checkpoint(&seed);
        for m in mutations(&seed, 500, 0x2545_f491_4f6c_dd1d) {
            fuzzing::checkpoint(&m);
        }
    }
}

#[test]
fn journal_holds_on_seeds_and_mutations() {
    for (_, seed) in seeds("journal") {
        fuzzing::journal(&seed);
        for m in mutations(&seed, 150, 0x1234_5678_9abc_def1) {
            let r = std::panic::catch_unwind(|| fuzzing::journal(&m));
            assert!(r.is_ok(), "journal replay panicked on a mutation");
        }
    }
}

#[cfg(feature = "sim")]
#[test]
fn wal_differential_holds_on_its_corpus() {
    for (_, input) in seeds("wal_differential") {
        streamwal::sim::differential::wal_differential_target(&input);
    }
}

/// Regenerates the seed files from real logs:
/// `cargo test --test fuzz_seeds -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let opts = WalOptions {
        preallocate: true, // equal-length segment files split back exactly
        ..fuzzing::fuzz_options()
    };
    let logs: [(&str, usize, usize); 4] = [
        ("empty", 0, 1),
        ("one_segment", 5, 40),
        ("three_segments", 60, 150),
        ("one_big_record", 1, 3000),
    ];
    for (name, records, size) in logs {
        let mem = MemStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(mem.clone());
        let dir = Path::new("/seed/wal");
        let wal = Wal::open(
            streamwal::Location::dir_on(storage.clone(), dir),
            opts.clone(),
        )
        .unwrap();
        for i in 0..records {
            let payload: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            wal.append_at(&payload, i as u64).unwrap();
        }
        drop(wal);
        let mut names: Vec<String> = storage
            .list(dir)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        let files: Vec<Vec<u8>> = names
            .iter()
            .filter(|n| n.ends_with(".wal"))
            .take(3)
            .map(|n| mem.file_contents(&dir.join(n)).unwrap())
            .collect();
        let bytes = bytes_from_files(&files);
        std::fs::write(root.join("open_log").join(name), &bytes).unwrap();
        if name == "one_segment" {
            let mut tracker = streamwal::tracker::TrackerState::default();
            let h = Wal::open(
                streamwal::Location::dir_on(storage.clone(), dir),
                opts.clone(),
            )
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .unwrap()
            .0;
            tracker.apply(&streamwal::tracker::Event::BlockAdded(
                streamwal::tracker::BlockInfo {
                    stream_id: 1,
                    handle: h,
                    records: 3,
                    receive_time: 9,
                },
            ));
            let graph: std::collections::BTreeMap<String, Vec<u64>> =
                [("words".to_string(), vec![1, 2, 300])].into();
            let ckpt = streamwal::checkpoint::Checkpoint {
                batch_time: 2_000,
                batch_interval_ms: 1_000,
                graph,
                graph_version: 1,
                pending_batches: vec![2_000],
                journal_lsn: 5,
                tracker,
                source_offsets: [("src".to_string(), "42".to_string())].into(),
            };
            let bytes = streamwal::checkpoint::encode_file(&ckpt).unwrap();
            std::fs::create_dir_all(root.join("checkpoint")).unwrap();
            write_journal_seed(&root.join("journal"));
            std::fs::write(root.join("checkpoint").join("one"), bytes).unwrap();
            std::fs::write(root.join("decode").join("segment_header"), &files[0][..64]).unwrap();
            std::fs::write(root.join("decode").join("segment"), &files[0]).unwrap();
        }
    }
}

/// A real journal: blocks added, allocated, committed, cleaned.
fn write_journal_seed(out: &Path) {
    use streamwal::tracker::{BlockInfo, BlockTracker};
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let opts = WalOptions {
        preallocate: true,
        ..fuzzing::fuzz_options()
    };
    let rx = Wal::open(
        streamwal::Location::dir_on(storage.clone(), Path::new("/seed/rx")),
        opts.clone(),
    )
    .unwrap();
    let jdir = Path::new("/seed/journal");
    let t = BlockTracker::open(
        streamwal::Location::dir_on(storage.clone(), jdir),
        None,
        opts,
    )
    .unwrap();
    for i in 0..12u64 {
        let handle = rx.append(format!("block {i}").as_bytes()).unwrap();
        t.add_block(BlockInfo {
            stream_id: (i % 3) as u32,
            handle,
            records: i,
            receive_time: i * 100,
        })
        .unwrap();
        if i % 4 == 3 {
            t.allocate_blocks_to_batch(1_000 * (i + 1)).unwrap();
            t.commit_batch(1_000 * (i + 1)).unwrap();
        }
    }
    t.cleanup(5_000).unwrap();
    drop(t);
    let mut names: Vec<String> = storage
        .list(jdir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    let files: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .take(3)
        .map(|n| mem.file_contents(&jdir.join(n)).unwrap())
        .collect();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("real"), bytes_from_files(&files)).unwrap();
}

#[cfg(feature = "object-store")]
#[test]
fn open_object_log_holds_on_seeds_and_mutations() {
    for (_, seed) in seeds("open_object_log") {
        fuzzing::open_object_log(&seed);
        for m in mutations(&seed, 100, seed.len() as u64 | 1) {
            fuzzing::open_object_log(&m);
        }
    }
}

/// Regenerates the `open_object_log` seeds from real logs on an in-memory
/// object store: `cargo test --features object-store --test fuzz_seeds --
/// --ignored write_object_log_seeds`.
#[cfg(feature = "object-store")]
#[test]
#[ignore]
fn write_object_log_seeds() {
    use streamwal::object::object_store::memory::InMemory;
    use streamwal::object::object_store::{ObjectStoreExt, path::Path as ObjectPath};
    use streamwal::object::{ObjectLocation, log_object_name};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/open_object_log");
    std::fs::create_dir_all(&root).unwrap();
    let opts = WalOptions {
        max_record_bytes: 64 << 10,
        max_batch_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // (name, batches of record sizes, purge before this LSN)
    let logs: [(&str, &[&[usize]], u64); 4] = [
        ("empty", &[], 0),
        ("one_batch", &[&[10, 20, 30]], 0),
        ("three_batches", &[&[5], &[40, 40], &[300]], 0),
        ("after_retention", &[&[5], &[6], &[7]], 3),
    ];
    for (name, batches, purge) in logs {
        let store = Arc::new(InMemory::new());
        let loc = || ObjectLocation::with_store(store.clone(), "seed/log").unwrap();
        let wal = Wal::open(loc(), opts.clone()).unwrap();
        for (i, sizes) in batches.iter().enumerate() {
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            wal.append_batch_at(&payloads, i as u64).unwrap();
        }
        if purge > 0 {
            wal.purge_before_lsn(purge).unwrap();
        }
        let first = wal.iter().next().map_or(1, |r| r.unwrap().0.segment());
        drop(wal);
        // The objects from the first retained one (or the claim), in order.
        let first = if purge > 0 { first } else { 1 };
        let mut objects = Vec::new();
        for seq in first..first + 4 {
            let path = ObjectPath::from(format!("seed/log/{}", log_object_name(seq)));
            match rt.block_on(async { store.get(&path).await?.bytes().await }) {
                Ok(b) => objects.push(b.to_vec()),
                Err(_) => break,
            }
        }
        // Sequence numbers above 4 are shifted down: the seed keeps the
        // bytes, the fuzzer finds the names.
        let bytes = fuzzing::bytes_from_objects(first.min(4), purge > 0, &objects);
        std::fs::write(root.join(name), bytes).unwrap();
    }
}

/// Real state bytes: a delta, a snapshot file, and a state log of three
/// committed batches (as [`fuzzing::files_from_bytes`] splits them).
fn state_seeds() -> Vec<(String, Vec<u8>)> {
    use streamwal::state::{STATE_LOG_NAME, STATE_SNAPSHOTS_NAME};
    use streamwal::{StateOptions, StateStore};
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let dir = Path::new("/seed/state");
    let opts = StateOptions {
        log: WalOptions {
            preallocate: true, // equal-length segment files split back exactly
            ..fuzzing::fuzz_options()
        },
        ..StateOptions::default()
    };
    let store = Arc::new(
        StateStore::open(streamwal::Location::dir_on(storage.clone(), dir), opts).unwrap(),
    );
    let counts = store.operator::<String, u64>("counts").unwrap();
    for t in 1..=3u64 {
        store.begin_batch(t * 1_000).unwrap();
        counts.put(format!("word{t}"), t).unwrap();
        counts.put_with_timeout("session".into(), t, 5_000).unwrap();
        store.commit_batch(t * 1_000).unwrap();
    }
    store.snapshot_now().unwrap();
    drop((counts, store));
    let read_dir = |sub: &str| -> Vec<Vec<u8>> {
        let d = dir.join(sub);
        let mut names: Vec<String> = storage
            .list(&d)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| mem.file_contents(&d.join(n)).unwrap())
            .collect()
    };
    let segments: Vec<Vec<u8>> = read_dir(STATE_LOG_NAME)
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let log = bytes_from_files(&segments);
    let snapshot = read_dir(STATE_SNAPSHOTS_NAME).pop().unwrap();
    let delta = streamwal::codec::encode(
        &streamwal::state::StateDelta {
            format: streamwal::state::STATE_FORMAT_VERSION,
            state_id: 7,
            batch_time: 1_000,
            operators: vec![(
                "counts".into(),
                vec![streamwal::state::RawChange {
                    key: b"k".to_vec(),
                    slot: None,
                }],
            )],
        },
        "seed",
    )
    .unwrap();
    vec![
        ("delta".into(), delta),
        ("snapshot".into(), snapshot),
        ("log".into(), log),
    ]
}

#[test]
fn state_holds_on_real_states_and_mutations() {
    for (name, seed) in state_seeds() {
        fuzzing::state(&seed);
        for m in mutations(&seed, 150, 0x5eed_57a7_e000_0001) {
            let r = std::panic::catch_unwind(|| fuzzing::state(&m));
            assert!(
                r.is_ok(),
                "the state target panicked on a mutation of {name}"
            );
        }
    }
}

/// Writes the state target's seeds into `fuzz/seeds/state`:
/// `cargo test --all-features --test it -- --ignored write_state_seeds`.
#[test]
#[ignore]
fn write_state_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/state");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in state_seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
