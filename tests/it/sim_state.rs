//! Proves the keyed-state promise on the crash simulator: a stateful
//! workload of 12 batches (puts, deletes, timed puts; a snapshot every
//! third batch, retiring deltas) is crashed after every I/O step, and again
//! during recovery; the recovered state must equal the model's at the last
//! committed batch (or at the batch whose commit was in flight). EIO on a
//! write or a sync and ENOSPC, during a delta and during a snapshot, lose no
//! committed batch.
//!
//! More seeds per crash point: `STREAMWAL_SIM_SEEDS=64 cargo test --release
//! --all-features --test it -- sim_state`.
#![cfg(feature = "sim")]

use std::collections::BTreeMap;
use std::sync::Arc;
use streamwal::sim::{CrashHarness, Recorder, SimStorage};
use streamwal::storage::Storage;
use streamwal::{Location, StateOptions, StateStore, WalOptions};

const DIR: &str = "/sim/state";
const BATCHES: u64 = 12;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Attempt(u64),
    Committed(u64),
}

fn options() -> StateOptions {
    StateOptions {
        snapshot_every_batches: 3,
        snapshots_kept: 2,
        log: WalOptions {
            segment_bytes: 4096,
            ..StateOptions::default().log
        },
        ..StateOptions::default()
    }
}

/// A batch's puts: key, value, timeout.
type Puts = Vec<(u16, u64, Option<u64>)>;

/// What batch `i` does: its puts and its deleted keys.
fn batch_ops(i: u64) -> (Puts, Vec<u16>) {
    let puts = (0..(3 + i % 4))
        .map(|j| {
            let key = ((i * 7 + j * 3) % 17) as u16;
            let timeout = (j % 3 == 0).then_some(2_000);
            (key, i * 100 + j, timeout)
        })
        .collect();
    let deletes = vec![((i * 5) % 17) as u16];
    (puts, deletes)
}

/// The model's state after batches `1..=n` committed.
fn model_after(n: u64) -> BTreeMap<u16, u64> {
    let mut m: BTreeMap<u16, (u64, Option<u64>)> = BTreeMap::new();
    for i in 1..=n {
        let t = i * 1_000;
        m.retain(|_, (_, exp)| exp.is_none_or(|e| e > t));
        let (puts, deletes) = batch_ops(i);
        for (k, v, timeout) in puts {
            m.insert(k, (v, timeout.map(|d| t + d)));
        }
        for k in deletes {
            m.remove(&k);
        }
    }
    m.into_iter().map(|(k, (v, _))| (k, v)).collect()
}

fn open(storage: Arc<dyn Storage>) -> streamwal::Result<Arc<StateStore>> {
    StateStore::open(Location::dir_on(storage, DIR), options()).map(Arc::new)
}

/// Run every batch; stop at the first error.
fn workload(store: &Arc<StateStore>, rec: Option<&Recorder<Event>>) -> bool {
    let Ok(op) = store.operator::<u16, u64>("op") else {
        return false;
    };
    for i in 1..=BATCHES {
        let t = i * 1_000;
        if let Some(r) = rec {
            r.record(Event::Attempt(i));
        }
        if store.begin_batch(t).is_err() {
            return false;
        }
        let (puts, deletes) = batch_ops(i);
        for (k, v, timeout) in puts {
            let put = match timeout {
                Some(d) => op.put_with_timeout(k, v, d),
                None => op.put(k, v),
            };
            if put.is_err() {
                return false;
            }
        }
        for k in deletes {
            if op.delete(&k).is_err() {
                return false;
            }
        }
        if store.commit_batch(t).is_err() {
            return false;
        }
        if let Some(r) = rec {
            r.record(Event::Committed(i));
        }
    }
    true
}

/// Recover and compare with the model at the last committed batch, or at
/// the one in flight.
fn check(storage: Arc<dyn Storage>, events: &[Event]) -> Result<(), String> {
    let committed = events
        .iter()
        .filter_map(|e| match e {
            Event::Committed(i) => Some(*i),
            Event::Attempt(_) => None,
        })
        .max()
        .unwrap_or(0);
    let attempted = events
        .iter()
        .filter_map(|e| match e {
            Event::Attempt(i) => Some(*i),
            Event::Committed(_) => None,
        })
        .max()
        .unwrap_or(0);
    let store = open(storage).map_err(|e| format!("recovery failed: {e:?}"))?;
    let version = store.version().map_or(0, |t| t / 1_000);
    if version != committed && version != attempted {
        return Err(format!(
            "state as of batch {version}; committed {committed}, in flight {attempted}"
        ));
    }
    let op = store
        .operator::<u16, u64>("op")
        .map_err(|e| format!("{e:?}"))?;
    let got: BTreeMap<u16, u64> = op
        .iter()
        .map_err(|e| format!("{e:?}"))?
        .into_iter()
        .collect();
    if got != model_after(version) {
        return Err(format!(
            "state at batch {version} is {got:?}, the model says {:?}",
            model_after(version)
        ));
    }
    Ok(())
}

#[test]
fn keyed_state_survives_a_crash_at_every_step() {
    let report = CrashHarness::new("state-12").seeds(4).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<Event>| {
            if let Ok(store) = open(storage) {
                workload(&store, Some(rec));
                assert!(
                    store.stats().snapshots_written >= 3,
                    "the workload must snapshot: {:?}",
                    store.stats()
                );
            }
        },
        check,
    );
    println!("{report}");
    report.assert_passed();
}

/// Inject `fault` after `batches` committed batches, run on; then recover
/// on healthy storage: nothing committed may be missing.
fn fault_case(name: &str, fault: impl Fn(&SimStorage, u64)) {
    for batches in [2, 3, 5] {
        for n in 1..6 {
            let sim = SimStorage::new();
            let store = open(Arc::new(sim.clone())).unwrap();
            let op = store.operator::<u16, u64>("op").unwrap();
            assert!(workload_until(&store, batches));
            drop(op);
            fault(&sim, n);
            let mut committed = batches;
            for i in batches + 1..=BATCHES {
                let ok = workload_one(&store, i);
                if !ok {
                    break;
                }
                committed = i;
            }
            drop(store);
            sim.clear_faults();
            let store = open(Arc::new(sim.clone()))
                .unwrap_or_else(|e| panic!("{name} n={n}: recovery failed: {e:?}"));
            let version = store.version().map_or(0, |t| t / 1_000);
            assert!(
                version == committed || version == committed + 1,
                "{name} after {batches}, n={n}: state as of {version}, committed {committed}"
            );
            let op = store.operator::<u16, u64>("op").unwrap();
            let got: BTreeMap<u16, u64> = op.iter().unwrap().into_iter().collect();
            assert_eq!(got, model_after(version), "{name} after {batches}, n={n}");
        }
    }
}

fn workload_until(store: &Arc<StateStore>, n: u64) -> bool {
    (1..=n).all(|i| workload_one(store, i))
}

fn workload_one(store: &Arc<StateStore>, i: u64) -> bool {
    let t = i * 1_000;
    let Ok(op) = store.operator::<u16, u64>("op") else {
        return false;
    };
    if store.begin_batch(t).is_err() {
        return false;
    }
    let (puts, deletes) = batch_ops(i);
    let wrote = puts.into_iter().all(|(k, v, timeout)| match timeout {
        Some(d) => op.put_with_timeout(k, v, d).is_ok(),
        None => op.put(k, v).is_ok(),
    }) && deletes.iter().all(|k| op.delete(k).is_ok());
    if !wrote {
        store.abort_batch();
        return false;
    }
    store.commit_batch(t).is_ok()
}

#[test]
fn failed_writes_syncs_and_a_full_disk_lose_no_committed_batch() {
    fault_case("EIO on write", |sim, n| sim.fail_nth_write(n));
    fault_case("EIO on fsync", |sim, n| sim.fail_nth_file_sync(n));
    fault_case("EIO on directory fsync", |sim, n| sim.fail_nth_dir_sync(n));
    fault_case("ENOSPC", |sim, n| sim.set_space_left(Some(n * 300)));
}

#[test]
fn a_snapshot_that_fails_keeps_the_deltas() {
    let sim = SimStorage::new();
    let store = open(Arc::new(sim.clone())).unwrap();
    assert!(workload_until(&store, 4));
    // The next file sync is the snapshot's: it fails, the batch stays.
    sim.fail_nth_file_sync(1);
    assert!(store.snapshot_now().is_err());
    sim.clear_faults();
    assert!(workload_until_from(&store, 5, 5));
    drop(store);
    let store = open(Arc::new(sim)).unwrap();
    assert_eq!(store.version(), Some(5_000));
    let op = store.operator::<u16, u64>("op").unwrap();
    let got: BTreeMap<u16, u64> = op.iter().unwrap().into_iter().collect();
    assert_eq!(got, model_after(5));
}

fn workload_until_from(store: &Arc<StateStore>, from: u64, to: u64) -> bool {
    (from..=to).all(|i| workload_one(store, i))
}
