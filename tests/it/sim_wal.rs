//! Proves the WAL promise on the crash simulator: for every I/O step of each workload (200 appends with rollovers, free-running concurrent appenders, group commit pinned by the sync gate, retention with reopen, the `Never` and `Periodic` policies acknowledged at `sync()`, and a small case enumerated exhaustively) a crash right after it, then recovery (and at every 10th point a second crash during recovery), leaves every acknowledged record byte for byte at its LSN, a dense prefix, and nothing never appended; plus EIO, short-write and ENOSPC fault injection.
//!
//! More seeds per crash point: `STREAMWAL_SIM_SEEDS=64 cargo test --release
//! --all-features --test sim_wal`. A failure prints its replay command.
#![cfg(feature = "sim")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use streamwal::sim::checkers::{
    self, WalEvent, append_batch_recorded, append_recorded, purge_recorded,
};
use streamwal::sim::{CrashHarness, CrashKind, Recorder, SimStorage};
use streamwal::storage::Storage;
use streamwal::{Error, SyncPolicy, Wal, WalOptions};

const DIR: &str = "/sim/wal";

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        max_batch_bytes: 4096,
        ..WalOptions::default()
    }
}

/// A distinct payload of 20 to ~600 bytes.
fn payload(i: u64) -> Vec<u8> {
    let len = 20 + (i * 37 % 580) as usize;
    let mut p = format!("record-{i:06}-").into_bytes();
    p.extend((0..len).map(|j| b'a' + ((i as usize * 7 + j) % 26) as u8));
    p
}

#[test]
fn wal_200_appends_with_rollovers() {
    let dir = Path::new(DIR);
    let acked = AtomicU64::new(0);
    let report = CrashHarness::new("wal-200").seeds(8).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
            let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts()) else {
                return;
            };
            for i in 0..200 {
                if append_recorded(&wal, rec, &payload(i)).is_err() {
                    return;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
            assert!(wal.stats().segments_created >= 10, "rollovers");
        },
        checkers::wal_checker(dir, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    assert!(report.steps >= 400);
    assert!(
        acked.load(Ordering::SeqCst) >= 200,
        "the workload ran whole"
    );
}

#[test]
fn wal_concurrent_appenders() {
    // The workload runs once with real threads; its I/O steps serialize on
    // the simulator's lock and each crash state is a snapshot of that run.
    let dir = Path::new(DIR);
    let acked = AtomicU64::new(0);
    let report = CrashHarness::new("wal-concurrent").run(
        |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
            let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts()) else {
                return;
            };
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let wal = &wal;
                    let acked = &acked;
                    s.spawn(move || {
                        for i in 0..30u64 {
                            let id = 1000 * (t + 1) + i;
                            let r = if i % 5 == 4 {
                                append_batch_recorded(wal, rec, &[payload(id), payload(id + 500)])
                                    .map(|_| ())
                            } else {
                                append_recorded(wal, rec, &payload(id)).map(|_| ())
                            };
                            if r.is_err() {
                                return;
                            }
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
        },
        checkers::wal_checker(dir, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    assert!(
        acked.load(Ordering::SeqCst) >= 120,
        "the workload ran whole"
    );
}

/// Group commit made deterministic with the simulator's sync gate: in each
/// round a leader's fsync is held while two more appenders queue, so the
/// next batch carries both in one write and one fsync; every crash point of
/// that run is explored, and a replay re-creates the same interleaving.
#[test]
fn wal_group_commit_deterministic() {
    let dir = Path::new(DIR);
    let report = CrashHarness::new("wal-group-commit").run(
        |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
            let sim = rec.storage().clone();
            let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts()) else {
                return;
            };
            for round in 0..25u64 {
                let id = 10_000 + round * 10;
                sim.pause_next_file_sync();
                let ok = std::thread::scope(|s| {
                    let wal = &wal;
                    let leader = s.spawn(move || append_recorded(wal, rec, &payload(id)).is_ok());
                    sim.wait_until_sync_paused();
                    let followers: Vec<_> = (1..=2)
                        .map(|k| {
                            s.spawn(move || append_recorded(wal, rec, &payload(id + k)).is_ok())
                        })
                        .collect();
                    // Let both followers queue behind the held sync.
                    std::thread::sleep(Duration::from_millis(20));
                    sim.resume_sync();
                    let mut ok = leader.join().unwrap_or(false);
                    for f in followers {
                        ok &= f.join().unwrap_or(false);
                    }
                    ok
                });
                if !ok {
                    return;
                }
            }
            let stats = wal.stats();
            assert!(
                stats.batches < stats.records_appended,
                "group commit shared syncs: {stats:?}"
            );
        },
        checkers::wal_checker(dir, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
}

#[test]
fn wal_retention_and_reopen() {
    let dir = Path::new(DIR);
    let acked = AtomicU64::new(0);
    let report = CrashHarness::new("wal-retention").run(
        |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
            let mut n = 0;
            for phase in 0..3u64 {
                let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage.clone(), dir), opts())
                else {
                    return;
                };
                for _ in 0..50 {
                    n += 1;
                    let Ok(h) = append_recorded(&wal, rec, &payload(n)) else {
                        return;
                    };
                    acked.fetch_add(1, Ordering::SeqCst);
                    if n % 20 == 0 && purge_recorded(&wal, rec, h.lsn() - 15).is_err() {
                        return;
                    }
                }
                if phase < 2 && wal.close().is_err() {
                    return;
                }
            }
        },
        checkers::wal_checker(dir, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    assert!(
        acked.load(Ordering::SeqCst) >= 150,
        "the workload ran whole"
    );
}

/// Under `SyncPolicy::Never` and `Periodic` an append is acknowledged
/// (durable) only once a later `sync()` returns; the workload records it so.
#[test]
fn wal_relaxed_policies_ack_on_sync() {
    let dir = Path::new(DIR);
    let policies = [
        ("never", SyncPolicy::Never),
        (
            "periodic",
            SyncPolicy::Periodic {
                interval: Duration::from_secs(3600),
                max_unsynced_bytes: 1500,
            },
        ),
    ];
    for (name, policy) in policies {
        let o = WalOptions {
            sync_policy: policy,
            ..opts()
        };
        let acked = AtomicU64::new(0);
        let report = CrashHarness::new(format!("wal-{name}")).run(
            |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
                let mut pending = Vec::new();
                let mut n = 0;
                for _phase in 0..2 {
                    let Ok(wal) =
                        Wal::open(streamwal::Location::dir_on(storage.clone(), dir), o.clone())
                    else {
                        return;
                    };
                    for i in 0..40 {
                        n += 1;
                        let p = payload(n);
                        rec.record(WalEvent::Appending(p.clone()));
                        let Ok(handle) = wal.append_at(&p, 0) else {
                            return;
                        };
                        pending.push((handle, p));
                        if i % 6 == 5 {
                            if wal.sync().is_err() {
                                return;
                            }
                            for (handle, payload) in pending.drain(..) {
                                rec.record(WalEvent::Acked { handle, payload });
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    if wal.close().is_err() {
                        return;
                    }
                    for (handle, payload) in pending.drain(..) {
                        rec.record(WalEvent::Acked { handle, payload });
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                }
            },
            checkers::wal_checker(dir, o.clone()),
        );
        eprintln!("{report}");
        report.assert_passed();
        assert!(
            acked.load(Ordering::SeqCst) >= 80,
            "{name}: the workload ran whole"
        );
    }
}

#[test]
fn wal_small_case_exhaustive() {
    let dir = Path::new(DIR);
    let acked = AtomicU64::new(0);
    let report = CrashHarness::new("wal-exhaustive")
        .seeds(0)
        .exhaustive(400)
        .recovery_crash_every(1)
        .run(
            |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
                let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts()) else {
                    return;
                };
                for i in 0..4 {
                    if append_recorded(&wal, rec, &payload(i * 3)).is_err() {
                        return;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            },
            checkers::wal_checker(dir, opts()),
        );
    eprintln!("{report}");
    report.assert_passed();
    assert!(acked.load(Ordering::SeqCst) >= 4, "the workload ran whole");
}

/// Power-loss states an explicit enumeration finds for one unsynced append.
#[test]
fn exhaustive_enumeration_of_one_unsynced_append() {
    let dir = Path::new(DIR);
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let wal = Wal::open(streamwal::Location::dir_on(storage, dir), opts()).unwrap();
    let acked = wal.append(&payload(1)).unwrap();
    // Stop the process right after the write of the next record, before its sync.
    sim.stop_after_steps(Some(1));
    assert!(wal.append(&payload(2)).is_err());
    drop(wal);
    let mut states = sim.power_loss_states(100_000);
    let mut n = 0;
    let mut saw_second = 0;
    for state in states.by_ref() {
        n += 1;
        let wal = Wal::open(streamwal::Location::dir_on(Arc::new(state), dir), opts()).unwrap();
        let got: Vec<_> = wal.iter().map(|r| r.unwrap()).collect();
        assert_eq!(got[0].1, payload(1));
        assert_eq!(got[0].0, acked);
        assert!(got.len() <= 2);
        if got.len() == 2 {
            assert_eq!(got[1].1, payload(2));
            saw_second += 1;
        }
    }
    assert!(!states.truncated());
    eprintln!("one unsynced append: {n} power-loss states, {saw_second} keep the record");
    assert!(n > 10 && saw_second > 0);
}

/// EIO on fsync poisons the log; nothing acknowledged before it is lost, on
/// reopen in the same boot and after a power loss.
#[test]
fn eio_on_fsync_poisons_and_loses_nothing_acknowledged() {
    let dir = Path::new(DIR);
    for at in 1..=6u64 {
        let sim = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let wal = Wal::open(streamwal::Location::dir_on(storage.clone(), dir), opts()).unwrap();
        let rec = Recorder::new(sim.clone());
        for i in 0..20 {
            append_recorded(&wal, &rec, &payload(i)).unwrap();
        }
        sim.fail_nth_file_sync(at);
        let mut failed = false;
        for i in 20..60 {
            match append_recorded(&wal, &rec, &payload(i)) {
                Ok(_) => assert!(!failed, "an append succeeded after a failed sync"),
                Err(_) => failed = true,
            }
        }
        assert!(failed, "the injected EIO surfaced");
        assert!(wal.is_poisoned());
        assert!(matches!(wal.append(b"after"), Err(Error::Poisoned)));
        drop(wal);
        let events: Vec<WalEvent> = rec.events().into_iter().map(|(_, e)| e).collect();
        // Reopen in the same boot (the dropped pages still in the cache),
        // append, then lose power: everything acknowledged survives.
        let same_boot = sim.after_crash(CrashKind::ProcessKill);
        checkers::check_wal(Arc::new(same_boot.clone()), dir, &opts(), &events)
            .unwrap_or_else(|e| panic!("sync #{at}, same boot: {e}"));
        for seed in 0..20 {
            let after = same_boot.after_crash(CrashKind::PowerLoss { seed });
            checkers::check_wal(Arc::new(after), dir, &opts(), &events)
                .unwrap_or_else(|e| panic!("sync #{at}, power loss seed {seed}: {e}"));
        }
        for seed in 0..20 {
            let after = sim.after_crash(CrashKind::PowerLoss { seed });
            checkers::check_wal(Arc::new(after), dir, &opts(), &events)
                .unwrap_or_else(|e| panic!("sync #{at}, direct power loss seed {seed}: {e}"));
        }
    }
}

/// ENOSPC mid-append (and a short write, and EIO on a write) fail the append
/// cleanly; the log reopens with every earlier record and no partial one.
/// With spares prepared ahead, a fault that lands in a spare's preparation
/// is absorbed (the appender prepares the segment again) and must leave the
/// log just as clean; some faults still reach an append.
#[test]
fn enospc_and_short_writes_leave_a_clean_log() {
    let dir = Path::new(DIR);
    for prepare_ahead in [false, true] {
        let opts = WalOptions {
            prepare_ahead,
            ..opts()
        };
        for (case, inject) in [("enospc", 0u8), ("short write", 1), ("eio on write", 2)] {
            let mut surfaced = 0;
            for k in 0..12u64 {
                let sim = SimStorage::new();
                let storage: Arc<dyn Storage> = Arc::new(sim.clone());
                let wal =
                    Wal::open(streamwal::Location::dir_on(storage, dir), opts.clone()).unwrap();
                let rec = Recorder::new(sim.clone());
                for i in 0..10 {
                    append_recorded(&wal, &rec, &payload(i)).unwrap();
                }
                match inject {
                    0 => sim.set_space_left(Some(k * 311 + 7)),
                    1 => sim.short_nth_write(k + 1),
                    _ => sim.fail_nth_write(k + 1),
                }
                let mut failed_at = None;
                for i in 10..80 {
                    if append_recorded(&wal, &rec, &payload(i)).is_err() {
                        failed_at = Some(i);
                        break;
                    }
                }
                if failed_at.is_some() {
                    surfaced += 1;
                } else {
                    assert!(prepare_ahead, "{case} {k}: the fault never surfaced");
                }
                drop(wal);
                sim.clear_faults();
                let events: Vec<WalEvent> = rec.events().into_iter().map(|(_, e)| e).collect();
                for kind in [
                    CrashKind::ProcessKill,
                    CrashKind::LoseUnsynced,
                    CrashKind::PowerLoss { seed: k },
                ] {
                    checkers::check_wal(Arc::new(sim.after_crash(kind)), dir, &opts, &events)
                        .unwrap_or_else(|e| {
                            panic!("{case} {k} prepare_ahead={prepare_ahead} {kind:?}: {e}")
                        });
                }
            }
            assert!(
                surfaced > 0,
                "{case} prepare_ahead={prepare_ahead}: no fault surfaced"
            );
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("STREAMWAL_SIM_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    /// Arbitrary operation sequences (appends, batches, syncs, purges,
    /// reopens, crashes, injected EIO/ENOSPC) under every sync policy: the
    /// recovered log always keeps the WAL promise.
    #[test]
    fn wal_differential_arbitrary_ops(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
        streamwal::sim::differential::wal_differential_target(&data);
    }
}

/// Large records (over 128 KiB on average) make the log allocate its spare
/// segments instead of zero-filling them: every step of that path, crashed.
#[test]
fn wal_large_records_allocate_their_spares() {
    let dir = Path::new(DIR);
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        max_record_bytes: 256 << 10,
        max_batch_bytes: 256 << 10,
        ..WalOptions::default()
    };
    let big = |i: u64| -> Vec<u8> {
        let len = (150 << 10) + (i * 7919 % (80 << 10)) as usize;
        let mut p = format!("big-{i:04}-").into_bytes();
        p.extend((0..len).map(|j| (i as usize * 13 + j) as u8));
        p
    };
    let finished = AtomicU64::new(0);
    let report = CrashHarness::new("wal-large").seeds(2).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<WalEvent>| {
            let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts.clone()) else {
                return;
            };
            for i in 0..16 {
                if append_recorded(&wal, rec, &big(i)).is_err() {
                    return;
                }
            }
            assert!(wal.stats().segments_created >= 3, "rollovers");
            assert!(
                rec.storage().stats().allocations >= 1,
                "a spare after large records is allocated, not zero-filled"
            );
            finished.fetch_add(1, Ordering::SeqCst);
        },
        checkers::wal_checker(dir, opts.clone()),
    );
    eprintln!("{report}");
    report.assert_passed();
    assert!(
        finished.load(Ordering::SeqCst) >= 1,
        "the workload ran whole"
    );
}
