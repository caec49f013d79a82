//! The log on object storage under a slow, failing, panicking or
//! interleaving store, and hostile bytes in any object.

use super::*;

fn faulty() -> (Arc<Interleaving>, impl Fn() -> ObjectLocation) {
    let store = Interleaving::new(Arc::new(InMemory::new()));
    let s = store.clone();
    (store, move || {
        ObjectLocation::with_store(s.clone(), "t/log").unwrap()
    })
}

fn set(store: &Interleaving, mode: u8) {
    store.fault.store(mode, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn concurrent_appenders_share_puts_when_a_put_takes_time() {
    let (store, loc) = faulty();
    let wal = Arc::new(Wal::open(loc(), opts()).unwrap());
    set(&store, put_fault::SLOW);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    wal.append(&[t, i]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 200);
    // While one PUT takes 20 ms, the other seven appenders queue behind it
    // and go together in the next.
    assert!(stats.batches <= 100, "{stats:?}");
}

#[test]
fn an_unknown_put_outcome_is_settled_by_reading_the_object_back() {
    let (store, loc) = faulty();
    let wal = Wal::open(loc(), opts()).unwrap();
    wal.append(b"one").unwrap();
    // Stored, then the answer is an error: reading back finds our bytes.
    set(&store, put_fault::STORE_THEN_FAIL);
    let h = wal.append(b"two").unwrap();
    set(&store, put_fault::NONE);
    assert_eq!(wal.read(&h).unwrap(), b"two");
    // Not stored, and an error: the append fails and the log is poisoned.
    set(&store, put_fault::FAIL);
    assert!(matches!(wal.append(b"three"), Err(Error::Remote { .. })));
    set(&store, put_fault::NONE);
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(b"four"), Err(Error::Poisoned)));
    drop(wal);
    let got: Vec<Vec<u8>> = all(&Wal::open(loc(), opts()).unwrap())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_panicking_store_fails_the_other_appenders_instead_of_hanging_them() {
    let (store, loc) = faulty();
    let wal = Arc::new(Wal::open(loc(), opts()).unwrap());
    set(&store, put_fault::PANIC);
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..4u8 {
        let (wal, tx) = (wal.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wal.append(&[t])));
            tx.send(matches!(r, Ok(Ok(_)))).unwrap();
        });
    }
    for _ in 0..4 {
        let acked = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an appender hung after the leader panicked");
        assert!(!acked, "nothing is stored while every PUT panics");
    }
    assert!(wal.is_poisoned());
}

#[test]
fn an_object_deleted_between_listing_and_reading_is_listed_again() {
    let (store, loc) = faulty();
    let wal = Wal::open(loc(), opts()).unwrap();
    let hs: Vec<RecordHandle> = (0..4u8).map(|i| wal.append(&[i]).unwrap()).collect();
    drop(wal);
    // Right after the next opener lists, retention elsewhere raises the
    // floor past the first record's object and deletes it: the opener
    // follows the floor, strict or salvage, and reports no damage.
    for salvage in [true, false] {
        let (floor, gone) = if salvage {
            (hs[1].segment(), hs[0].segment())
        } else {
            (hs[2].segment(), hs[1].segment())
        };
        store.arm(Hook {
            listing_ends_with: "log".into(),
            after_listing: true,
            plant: vec![(format!("t/log/floor-{floor:020}"), vec![])],
            remove: vec![format!("t/log/{}", log_object_name(gone))],
        });
        let o = WalOptions {
            recovery_mode: if salvage {
                RecoveryMode::Salvage
            } else {
                RecoveryMode::Strict
            },
            ..opts()
        };
        let wal = Wal::open(loc(), o).unwrap();
        assert!(wal.recovery_report().problems.is_empty(), "{salvage}");
        let first = hs.iter().find(|h| h.segment() == floor).unwrap().lsn();
        assert_eq!(wal.first_lsn(), Some(first));
        let got: Vec<u64> = all(&wal).iter().map(|(h, _)| h.lsn()).collect();
        let want: Vec<u64> = hs.iter().map(|h| h.lsn()).filter(|&l| l >= first).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn retention_beside_appends_never_mistakes_the_writers_own_batches_for_a_takeover() {
    let wal = Arc::new(open(&*backends("olog_purge_race")[0], "log"));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (wal, done) = (wal.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..20_000u32 {
                wal.append(&i.to_le_bytes()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut purges = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let next = wal.next_lsn();
        wal.purge_before_lsn(next.saturating_sub(10)).unwrap();
        purges += 1;
    }
    appender.join().unwrap();
    assert!(purges > 10, "{purges}");
    assert!(!wal.is_poisoned());
    assert_eq!(wal.next_lsn(), 20_001);
}

/// How one object of a log is damaged.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: u16, bit: u8 },
    Truncate { keep: u16 },
    Extend { bytes: Vec<u8> },
    Replace { bytes: Vec<u8> },
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    /// Hostile bytes in any object: a strict open is `Ok` only if nothing
    /// changed and `Corruption` otherwise, never a panic or another error;
    /// a salvage open returns only records that were written, unchanged.
    #[test]
    fn damaged_objects_are_corruption_and_salvage_returns_only_true_records(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..12),
        victim in any::<u16>(),
        damage in prop_oneof![
            (any::<u16>(), 0..8u8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
            any::<u16>().prop_map(|keep| Damage::Truncate { keep }),
            proptest::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Damage::Extend { bytes }),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|bytes| Damage::Replace { bytes }),
        ],
    ) {
        let b = &backends("olog_hostile")[0];
        let wal = open(&**b, "log");
        let written: Vec<(RecordHandle, Vec<u8>)> = records
            .iter()
            .map(|p| (wal.append(p).unwrap(), p.clone()))
            .collect();
        drop(wal);
        // Objects 1 (the claim) ..= the last record's.
        let last = written.last().unwrap().0.segment();
        let seq = 1 + u64::from(victim) % last;
        let name = log_object_name(seq);
        let good = fetch(&**b, "log", &name);
        let mut bad = good.clone();
        match &damage {
            Damage::Flip { at, bit } => {
                let i = *at as usize % bad.len();
                bad[i] ^= 1 << bit;
            }
            Damage::Truncate { keep } => bad.truncate(*keep as usize % bad.len()),
            Damage::Extend { bytes } => bad.extend_from_slice(bytes),
            Damage::Replace { bytes } => bad = bytes.clone(),
        }
        plant(&**b, "log", &name, bad.clone());
        let salvage = WalOptions { recovery_mode: RecoveryMode::Salvage, ..opts() };
        // Read-only first, so that a strict open's claim does not change
        // what salvage sees.
        let s = Wal::open(b.location("log"), salvage).unwrap();
        for item in s.iter() {
            let (h, p) = item.unwrap();
            let (wh, wp) = &written[(h.lsn() - 1) as usize];
            prop_assert_eq!(&h, wh);
            prop_assert_eq!(&p, wp);
        }
        drop(s);
        match Wal::open(b.location("log"), opts()) {
            Ok(w) => {
                prop_assert_eq!(&bad, &good, "a changed object was accepted");
                prop_assert_eq!(all(&w), written);
            }
            Err(Error::Corruption { file, .. }) => {
                prop_assert!(file.to_string_lossy().ends_with(&name), "{:?}", file);
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
    }
}
