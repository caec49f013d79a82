//! The simulator's own promises: unsynced changes are lost or kept as the
//! crash kind says, renames are atomic, a failed fsync drops the pages,
//! power loss tears and zero-fills, steps stop and snapshot, faults fire.

use super::*;
use crate::storage::{OpenMode, Storage};
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn setup() -> SimStorage {
    let sim = SimStorage::new();
    sim.create_dir_all(&p("/d")).unwrap();
    sim.sync_dir(&p("/")).unwrap();
    sim
}

#[test]
fn unsynced_entries_and_data_are_lost_cleanly() {
    let sim = setup();
    let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
    f.write_at(b"hello", 0).unwrap();
    f.sync_data().unwrap();
    // Data durable, entry not.
    let lost = sim.after_crash(CrashKind::LoseUnsynced);
    assert!(lost.read_file(&p("/d/a")).is_none());
    assert_eq!(
        sim.after_crash(CrashKind::ProcessKill)
            .read_file(&p("/d/a")),
        Some(b"hello".to_vec())
    );
    sim.sync_dir(&p("/d")).unwrap();
    f.write_at(b"HE", 0).unwrap();
    let lost = sim.after_crash(CrashKind::LoseUnsynced);
    assert_eq!(lost.read_file(&p("/d/a")), Some(b"hello".to_vec()));
    assert!(!lost.has_unsynced());
    assert!(sim.has_unsynced());
}

#[test]
fn a_renamed_over_target_reverts() {
    let sim = setup();
    for (name, data) in [("t", b"old"), ("n", b"new")] {
        let f = sim
            .open(&p(&format!("/d/{name}")), OpenMode::CreateNew)
            .unwrap();
        f.write_at(data, 0).unwrap();
        f.sync_data().unwrap();
    }
    sim.sync_dir(&p("/d")).unwrap();
    sim.rename(&p("/d/n"), &p("/d/t")).unwrap();
    let lost = sim.after_crash(CrashKind::LoseUnsynced);
    assert_eq!(lost.read_file(&p("/d/t")), Some(b"old".to_vec()));
    assert_eq!(lost.read_file(&p("/d/n")), Some(b"new".to_vec()));
    // Enumerated: the rename either happened or not, atomically.
    let mut outcomes = BTreeSet::new();
    for s in sim.power_loss_states(100) {
        outcomes.insert((s.read_file(&p("/d/t")), s.read_file(&p("/d/n"))));
    }
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}

#[test]
fn a_failed_fsync_drops_the_pages() {
    let sim = setup();
    let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
    sim.sync_dir(&p("/d")).unwrap();
    f.write_at(b"v1", 0).unwrap();
    f.sync_data().unwrap();
    f.write_at(b"v2", 0).unwrap();
    sim.fail_nth_file_sync(1);
    assert!(f.sync_data().is_err());
    // The next sync succeeds but writes nothing: the pages are clean.
    f.sync_data().unwrap();
    let mut buf = [0u8; 2];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"v2");
    for s in sim.power_loss_states(100) {
        assert_eq!(s.read_file(&p("/d/a")), Some(b"v1".to_vec()));
    }
    assert_eq!(sim.stats().injected_failures, 1);
}

#[test]
fn power_loss_tears_extends_and_zero_fills() {
    let sim = setup();
    let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
    sim.sync_dir(&p("/d")).unwrap();
    f.write_at(&[7u8; 1000], 0).unwrap();
    let mut lens = BTreeSet::new();
    let mut zero_tail = false;
    let mut garbage_tail = false;
    let mut torn = false;
    let mut all = 0;
    let mut states = sim.power_loss_states(10_000);
    for s in states.by_ref() {
        all += 1;
        let d = s.read_file(&p("/d/a")).unwrap();
        lens.insert(d.len());
        if d.len() == 1000 {
            zero_tail |= d[900..].iter().all(|&b| b == 0);
            garbage_tail |= d[900..].iter().any(|&b| b != 0 && b != 7);
            torn |= d[..512].iter().all(|&b| b == 7) && d[512..].iter().any(|&b| b != 7);
        }
    }
    assert!(!states.truncated());
    assert_eq!(lens, BTreeSet::from([0, 1000]));
    assert!(zero_tail && garbage_tail && torn, "{all} states");
    // Seeds give some of the same variety, deterministically.
    let a = sim.after_crash(CrashKind::PowerLoss { seed: 9 });
    let b = sim.after_crash(CrashKind::PowerLoss { seed: 9 });
    assert_eq!(a.read_file(&p("/d/a")), b.read_file(&p("/d/a")));
}

#[test]
fn steps_stop_and_snapshots() {
    let sim = SimStorage::new();
    sim.record_steps();
    sim.create_dir_all(&p("/d")).unwrap();
    let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
    f.write_at(b"x", 0).unwrap();
    assert_eq!(sim.steps(), 3);
    assert!(
        sim.state_after_step(1)
            .unwrap()
            .read_file(&p("/d/a"))
            .is_none()
    );
    assert_eq!(
        sim.state_after_step(3).unwrap().read_file(&p("/d/a")),
        Some(b"x".to_vec())
    );
    sim.stop_after_steps(Some(1));
    f.write_at(b"y", 0).unwrap();
    assert!(f.write_at(b"z", 0).is_err());
    assert!(f.sync_data().is_err());
    assert_eq!(sim.read_file(&p("/d/a")), Some(b"y".to_vec()));
    sim.crash(CrashKind::ProcessKill);
    assert!(f.len().is_err(), "handles from before a crash are dead");
    assert_eq!(sim.read_file(&p("/d/a")), Some(b"y".to_vec()));
    sim.crash(CrashKind::LoseUnsynced);
    assert!(sim.read_file(&p("/d/a")).is_none());
}

#[test]
fn enospc_and_short_writes() {
    let sim = setup();
    let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
    sim.set_space_left(Some(10));
    let e = f.write_at(&[1u8; 16], 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    assert_eq!(f.len().unwrap(), 10);
    sim.set_space_left(None);
    sim.short_nth_write(2);
    f.write_at(&[2u8; 4], 0).unwrap();
    assert!(f.write_at(&[3u8; 8], 0).is_err());
    assert_eq!(sim.read_file(&p("/d/a")).unwrap()[..5], [3, 3, 3, 3, 1]);
    sim.fail_nth_write(1);
    assert!(f.write_at(&[4u8; 8], 0).is_err());
    assert_eq!(sim.read_file(&p("/d/a")).unwrap()[0], 3);
}
