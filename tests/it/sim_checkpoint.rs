//! Proves the checkpoint promise on the crash simulator: for every I/O step of a workload of 36 checkpoints (with retention), a crash right after it (and a second crash during recovery) leaves `latest()` a completely written checkpoint, never older than the last one whose write returned `Ok`; and EIO on fsync or write, and ENOSPC, during a checkpoint write leave the previous checkpoint in place.
//!
//! More seeds per crash point: `STREAMWAL_SIM_SEEDS=64 cargo test --release
//! --all-features --test sim_checkpoint`.
#![cfg(feature = "sim")]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore};
use streamwal::sim::checkers::{self, CheckpointEvent, write_checkpoint_recorded};
use streamwal::sim::{CrashHarness, CrashKind, Recorder, SimStorage};
use streamwal::storage::{OpenMode, Storage};
use streamwal::tracker::TrackerState;

const DIR: &str = "/sim/checkpoints";

/// The engine's graph: a name and state of varying size (up to ~2 KiB, so
/// checkpoint files span several sectors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Graph {
    name: String,
    counts: Vec<u64>,
}

fn ckpt(i: u64) -> Checkpoint<Graph> {
    Checkpoint {
        batch_time: 1_000 * i,
        batch_interval_ms: 1_000,
        graph: Graph {
            name: format!("graph at {i}"),
            counts: (0..(i * 37 % 250)).map(|j| j * i).collect(),
        },
        graph_version: 1,
        pending_batches: vec![1_000 * i],
        journal_lsn: 3 * i,
        tracker: TrackerState::default(),
        source_offsets: BTreeMap::from([("topic-0".to_string(), format!("{}", i * 10))]),
    }
}

fn opts() -> CheckpointOptions {
    CheckpointOptions { keep: 3 }
}

#[test]
fn checkpoints_36_with_retention() {
    let dir = Path::new(DIR);
    let report = CrashHarness::new("checkpoints-36").seeds(10).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<CheckpointEvent<Graph>>| {
            let Ok(store) =
                CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts())
            else {
                return;
            };
            for i in 1..=36 {
                if write_checkpoint_recorded(&store, rec, &ckpt(i)).is_err() {
                    return;
                }
            }
        },
        checkers::checkpoint_checker::<Graph>(dir, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    assert!(report.steps >= 36 * 5);
}

/// Failures injected at every step of one checkpoint write: the write
/// fails, and the previous checkpoint stays the latest, now and after a
/// power loss; the next write succeeds.
#[test]
fn checkpoint_write_faults_keep_the_previous_checkpoint() {
    let dir = Path::new(DIR);
    for case in ["eio on fsync", "eio on write", "enospc", "eio on dir sync"] {
        for k in 0..3u64 {
            let sim = SimStorage::new();
            let storage: Arc<dyn Storage> = Arc::new(sim.clone());
            let store =
                CheckpointStore::open(streamwal::Location::dir_on(storage, dir), opts()).unwrap();
            let rec = Recorder::new(sim.clone());
            for i in 1..=4 {
                write_checkpoint_recorded(&store, &rec, &ckpt(i)).unwrap();
            }
            match case {
                "eio on fsync" => sim.fail_nth_file_sync(1),
                "eio on write" => sim.fail_nth_write(1),
                "enospc" => sim.set_space_left(Some(k * 200)),
                _ => sim.fail_nth_dir_sync(k + 1),
            }
            let r = write_checkpoint_recorded(&store, &rec, &ckpt(5));
            if case != "eio on dir sync" || k == 0 {
                assert!(r.is_err(), "{case} {k}: the fault surfaced");
            }
            let events: Vec<_> = rec.events().into_iter().map(|(_, e)| e).collect();
            let latest = store.latest::<Graph>().unwrap();
            let got = latest.checkpoint.unwrap().1;
            assert!(got == ckpt(4) || (r.is_ok() || case == "eio on dir sync") && got == ckpt(5));
            for kind in [
                CrashKind::ProcessKill,
                CrashKind::LoseUnsynced,
                CrashKind::PowerLoss { seed: k },
                CrashKind::PowerLoss { seed: k + 100 },
            ] {
                let after = sim.after_crash(kind);
                checkers::check_checkpoints::<Graph>(Arc::new(after), dir, &opts(), &events)
                    .unwrap_or_else(|e| panic!("{case} {k} {kind:?}: {e}"));
            }
            sim.clear_faults();
            write_checkpoint_recorded(&store, &rec, &ckpt(6)).unwrap();
            assert_eq!(
                store.latest::<Graph>().unwrap().checkpoint.unwrap().1,
                ckpt(6)
            );
        }
    }
}

/// The harness is sharp: a write-temp-then-rename that skips the file's
/// fsync, or the directory's, loses an acknowledged file at some crash
/// state; the full protocol never does.
#[test]
fn harness_catches_unsafe_atomic_writes() {
    let dir = Path::new("/sim/naive");
    // (sync the file before the rename, sync the directory after it)
    for (sync_file, sync_dir, must_fail) in [
        (false, true, true),
        (true, false, true),
        (true, true, false),
    ] {
        let report = CrashHarness::new(format!("naive-{sync_file}-{sync_dir}")).run(
            |storage: Arc<dyn Storage>, rec: &Recorder<u64>| {
                storage.create_dir_all(dir).unwrap();
                storage.sync_dir(Path::new("/sim")).unwrap();
                storage.sync_dir(Path::new("/")).unwrap();
                for i in 1..=3u64 {
                    let tmp = dir.join(format!("{i}.tmp"));
                    let f = storage.open(&tmp, OpenMode::CreateNew).unwrap();
                    f.write_at(&vec![i as u8; 700], 0).unwrap();
                    if sync_file {
                        f.sync_data().unwrap();
                    }
                    storage.rename(&tmp, &dir.join(format!("{i}"))).unwrap();
                    if sync_dir {
                        storage.sync_dir(dir).unwrap();
                    }
                    rec.record(i);
                }
            },
            |storage: Arc<dyn Storage>, acked: &[u64]| {
                for &i in acked {
                    let f = storage
                        .open(&dir.join(format!("{i}")), OpenMode::Read)
                        .map_err(|e| format!("acknowledged file {i}: {e}"))?;
                    let mut buf = vec![0; 701];
                    let n = f.read_at(&mut buf, 0).map_err(|e| e.to_string())?;
                    if buf[..n] != vec![i as u8; 700][..] {
                        return Err(format!("acknowledged file {i} has {n} wrong bytes"));
                    }
                }
                Ok(())
            },
        );
        eprintln!("{report}");
        assert_eq!(report.failure.is_some(), must_fail, "{report}");
    }
}
