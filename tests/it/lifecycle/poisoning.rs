//! Fail-stop poisoning after an injected EIO, ENOSPC or panic, with every acknowledged record surviving reopen.

use super::*;
use crate::common::log_model::{LogModel, agrees};

// ---------------------------------------------------------------- poisoning

/// What one poisoning scenario leaves behind for scenario-specific checks.
struct PoisonOutcome {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    acked: Records,
    reopened: streamwal::RecoveryReport,
    fresh: RecordHandle,
}

/// Append acknowledged records (singly, then as a batch), inject a fault,
/// append `doomed` (which must fail with an error `check` accepts), then
/// check fail-stop while the fault is lifted, reopen on clean storage, and
/// check that every acknowledged record is there and the log accepts appends.
/// `may_reappear`: the doomed record reached the file (only its sync failed),
/// so it may be found after reopen, at the next LSN, byte for byte.
fn poison_case(
    opts: WalOptions,
    sizes: &[usize],
    doomed_len: usize,
    inject: &dyn Fn(&FaultPlan),
    check: &dyn Fn(&Error),
    may_reappear: bool,
) -> PoisonOutcome {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let half = sizes.len() / 2;
    let mut acked = append_all(
        &wal,
        sizes[..half]
            .iter()
            .enumerate()
            .map(|(i, &n)| payload(i as u64, n)),
    );
    let batch: Vec<Vec<u8>> = sizes[half..]
        .iter()
        .enumerate()
        .map(|(i, &n)| payload((half + i) as u64, n))
        .collect();
    let handles = wal.append_batch(&batch).expect("append_batch");
    acked.extend(handles.into_iter().zip(batch));

    let doomed = payload(999, doomed_len);
    inject(&plan);
    let err = wal
        .append(&doomed)
        .expect_err("the append that hits the fault must fail");
    check(&err);
    assert!(wal.is_poisoned(), "a failed write or sync must poison");

    // The storage works again (as a kernel reports success after a failed
    // fsync); the log must still refuse, and must not touch the disk.
    plan.clear();
    let (writes, syncs) = (plan.writes(), plan.file_syncs());
    assert!(is_poisoned_err(wal.append(b"after the fault")));
    assert!(is_poisoned_err(wal.append_at(b"after the fault", 5)));
    assert!(is_poisoned_err(wal.append_batch(&[b"x", b"y"])));
    assert!(is_poisoned_err(wal.sync()));
    assert!(is_poisoned_err(wal.append(b"still refused")));
    assert!(is_poisoned_err(wal.purge_before_lsn(u64::MAX)));
    assert_eq!(plan.writes(), writes, "a poisoned log wrote");
    assert_eq!(plan.file_syncs(), syncs, "a poisoned log synced");
    assert!(wal.is_poisoned());
    // Still readable: exactly what was acknowledged.
    assert_reads(&wal, &acked);
    assert_eq!(all_records(&wal), acked);
    assert!(is_poisoned_err(wal.close()));

    let wal = Wal::open(&dir, opts.clone()).expect("reopen after poisoning");
    let reopened = wal.recovery_report().clone();
    // Only a record that reached the file may come back, and only whole.
    let in_doubt = if may_reappear {
        vec![doomed]
    } else {
        Vec::new()
    };
    let mut model = agrees(LogModel::of(&acked));
    for (h, p) in agrees(model.check_recovered(&wal, &in_doubt)) {
        agrees(model.acknowledge(h, &p, None));
    }
    let fresh = wal.append(b"after reopen").expect("append after reopen");
    agrees(model.acknowledge(fresh, b"after reopen", None));
    assert_eq!(wal.read(&fresh).unwrap(), b"after reopen");
    drop(wal);

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(
        wal.recovery_report().torn_bytes,
        0,
        "the first reopen's repair left damage behind"
    );
    agrees(model.check(&wal));
    PoisonOutcome {
        _tmp: tmp,
        dir,
        acked,
        reopened,
        fresh,
    }
}

const SIZES: &[usize] = &[10, 200, 0, 77, 1000, 33, 64, 5];

#[test]
fn failed_fsync_poisons_and_acknowledged_records_survive() {
    let _no_spawns = no_spawns();
    poison_case(
        mid(true),
        SIZES,
        300,
        &|plan| plan.fail_file_sync_after(1),
        &|e| {
            assert!(
                matches!(
                    e,
                    Error::Io {
                        op: "sync_data",
                        ..
                    }
                ),
                "expected the sync's Io error, got {e:?}"
            )
        },
        true,
    );
}

#[test]
fn failed_fsync_of_a_sealing_segment_poisons() {
    let _no_spawns = no_spawns();
    // Three 1000-byte records fill a 4 KiB segment; the doomed fourth rolls
    // over, and the sync that seals the full segment fails.
    poison_case(
        small(),
        &[1000, 1000, 1000],
        1000,
        &|plan| plan.fail_file_sync_after(1),
        &|e| assert!(matches!(e, Error::Io { .. }), "got {e:?}"),
        true,
    );
}

#[test]
fn failed_write_poisons_and_acknowledged_records_survive() {
    let _no_spawns = no_spawns();
    for preallocate in [true, false] {
        poison_case(
            mid(preallocate),
            SIZES,
            300,
            &|plan| plan.fail_write_after(1),
            &|e| match e {
                Error::Io {
                    op: "write",
                    source,
                    ..
                } => assert_ne!(source.kind(), std::io::ErrorKind::StorageFull),
                other => panic!("expected the write's Io error, got {other:?}"),
            },
            false,
        );
    }
}

#[test]
fn failed_write_of_a_new_segment_poisons() {
    let _no_spawns = no_spawns();
    poison_case(
        small(),
        &[1000, 1000, 1000],
        1000,
        &|plan| plan.fail_write_after(1),
        &|e| assert!(matches!(e, Error::Io { .. }), "got {e:?}"),
        false,
    );
}

#[test]
fn enospc_mid_record_poisons_and_reopen_shows_no_partial_record() {
    let _no_spawns = no_spawns();
    let doomed_len = 300usize;
    let frame = FRAME_HEADER_BYTES;
    // Cuts inside the frame header (from the nonzero kind byte on), at its
    // end, and inside the payload.
    let cuts = [5, 17, 39, frame, frame + 1, frame + 150, frame + 299];
    for preallocate in [true, false] {
        for cut in cuts {
            let out = poison_case(
                mid(preallocate),
                SIZES,
                doomed_len,
                &|plan| plan.set_write_budget(cut),
                &|e| match e {
                    Error::Io {
                        op: "write",
                        source,
                        ..
                    } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
                    other => panic!("expected ENOSPC, got {other:?}"),
                },
                false,
            );
            // The partial frame was found as a torn tail, where the doomed
            // record was to go, and zeroed.
            let last = out.acked.last().unwrap().0;
            let at = last.offset() + frame + u64::from(last.len());
            assert_eq!(
                out.reopened.torn_at,
                Some((seg_path(&out.dir, last.segment()), at)),
                "cut {cut}, preallocate {preallocate}"
            );
            // ... and zeroed for good: past the record appended after
            // reopen, nothing of the partial frame is left.
            let bytes = std::fs::read(seg_path(&out.dir, last.segment())).unwrap();
            let fresh_end = out.fresh.offset() + frame + u64::from(out.fresh.len());
            assert_eq!(out.fresh.offset(), at);
            if at + cut > fresh_end {
                let rest = &bytes[fresh_end as usize..(at + cut) as usize];
                assert!(rest.iter().all(|&b| b == 0), "cut {cut}: torn bytes left");
            }
            let torn = out.reopened.torn_bytes;
            if cut > frame {
                assert_eq!(torn, cut, "cut {cut}, preallocate {preallocate}");
            } else {
                assert!((5..=cut).contains(&torn), "cut {cut}: torn {torn}");
            }
        }
    }
}

#[test]
fn failed_fsync_in_sync_call_poisons_under_never() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let written = append_all(&wal, (0..10).map(|i| payload(i, 50)));
    plan.fail_file_sync_after(1);
    let err = wal.sync().expect_err("sync must report the failed fsync");
    assert!(
        matches!(
            err,
            Error::Io {
                op: "sync_data",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(wal.is_poisoned());
    assert!(is_poisoned_err(wal.sync()));
    assert!(is_poisoned_err(wal.append(b"z")));
    assert!(is_poisoned_err(wal.append_batch(&[b"z"])));
    drop(wal);
    // Under Never, appends were acknowledged once written: the page cache
    // still has them.
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), written);
    assert_eq!(wal.append(b"again").unwrap().lsn(), 11);
}

#[test]
fn concurrent_appenders_fail_stop_after_one_failed_fsync() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, mid(true));
    let wal = Arc::new(wal);
    plan.fail_file_sync_after(20);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let p = payload(t * 1000 + i, 64);
                        wal.append(&p).map(|h| (h, p))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<_>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut acked = Vec::new();
    let mut io_errors = 0;
    for per_thread in results {
        let mut failed = false;
        for r in per_thread {
            match r {
                Ok(rec) => {
                    assert!(!failed, "an append succeeded after one failed");
                    acked.push(rec);
                }
                Err(Error::Io { .. }) => {
                    assert!(!failed, "a second Io error after poisoning");
                    failed = true;
                    io_errors += 1;
                }
                Err(Error::Poisoned) => failed = true,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert!(failed, "every thread must see the failure");
    }
    assert_eq!(
        io_errors, 1,
        "exactly the leader of the failed sync reports Io"
    );
    assert!(acked.len() >= 19, "19 syncs succeeded, so >= 19 acks");
    assert!(wal.is_poisoned());
    drop(wal);

    let wal = Wal::open(&dir, mid(true)).unwrap();
    let all = all_records(&wal);
    for (i, (h, _)) in all.iter().enumerate() {
        assert_eq!(h.lsn(), i as u64 + 1, "LSNs after recovery must be dense");
    }
    let by_lsn: BTreeMap<u64, &Vec<u8>> = all.iter().map(|(h, p)| (h.lsn(), p)).collect();
    for (h, p) in &acked {
        assert_eq!(by_lsn.get(&h.lsn()), Some(&p), "acked lsn {} lost", h.lsn());
        assert_eq!(&wal.read(h).unwrap(), p);
    }
}

#[test]
fn a_panicking_storage_fails_the_other_appenders_instead_of_hanging_them() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, mid(true));
    let wal = Arc::new(wal);
    let first = wal.append(b"before").unwrap();
    plan.panic_file_sync_after(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut appenders = Vec::new();
    for t in 0..4u64 {
        let (wal, tx) = (wal.clone(), tx.clone());
        appenders.push(std::thread::spawn(move || {
            let results: Vec<bool> = (0..20u64)
                .map(|i| {
                    let p = payload(t * 1000 + i, 64);
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wal.append(&p)));
                    matches!(r, Ok(Ok(_)))
                })
                .collect();
            tx.send(results).unwrap();
        }));
    }
    for _ in 0..4 {
        let results = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an appender hung after the leader's storage panicked");
        assert!(
            results.iter().all(|ok| !ok),
            "nothing syncs after the panic"
        );
    }
    // Each appender has answered; wait until each has also dropped its
    // handle on the log, so that the drop below closes it (its lock too).
    for a in appenders {
        a.join().unwrap();
    }
    assert!(wal.is_poisoned());
    plan.clear();
    drop(wal);
    let wal = Wal::open(&dir, mid(true)).unwrap();
    assert_eq!(wal.read(&first).unwrap(), b"before");
}
