//! The write-ahead log on object storage: appends stored one object per
//! group-commit batch, read back by handle and in order, recovered by
//! listing, damage reported by object and offset, retention, a model test,
//! and a two-driver takeover. Every test runs on an in-memory store, and on
//! a real S3-protocol server when `STREAMWAL_S3_URL` is set (see
//! `tests/common/objects.rs`).
#![cfg(feature = "object-store")]

use crate::common;
use crate::common::rng::Rng;

use common::objects::{Backend, Hook, Interleaving, backends, fetch, plant, put_fault, remove};
use proptest::prelude::*;
use std::sync::Arc;
use streamwal::object::ObjectLocation;
use streamwal::object::log_object_name;
use streamwal::object::object_store::memory::InMemory;
use streamwal::{CorruptionKind, Error, RecordHandle, RecoveryMode, SyncPolicy, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        max_batch_bytes: 64 << 10,
        max_record_bytes: 1 << 20,
        ..WalOptions::default()
    }
}

fn open(b: &dyn Backend, sub: &str) -> Wal {
    Wal::open_at(b.location(sub), opts()).unwrap()
}

fn all(wal: &Wal) -> Vec<(RecordHandle, Vec<u8>)> {
    wal.iter().collect::<Result<_, _>>().unwrap()
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len).map(|k| (i as usize + k) as u8).collect()
}

#[test]
fn concurrent_appends_share_puts_and_survive_reopen() {
    for b in backends("olog_concurrent") {
        let wal = Arc::new(open(&*b, "log"));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    (0..25u64)
                        .map(|i| {
                            let id = t * 1000 + i;
                            (wal.append(&payload(id)).unwrap(), id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let acked: Vec<(RecordHandle, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(acked.len(), 200);
        for (h, id) in &acked {
            assert_eq!(wal.read(h).unwrap(), payload(*id), "{}", b.name());
        }
        let stats = wal.stats();
        assert_eq!(stats.records_appended, 200);
        assert!(stats.batches >= 1 && stats.batches <= 201, "{stats:?}");
        drop(wal);

        let wal = open(&*b, "log");
        let got = all(&wal);
        assert_eq!(got.len(), 200);
        let lsns: Vec<u64> = got.iter().map(|(h, _)| h.lsn()).collect();
        assert_eq!(lsns, (1..=200).collect::<Vec<_>>(), "dense, in order");
        for (h, id) in &acked {
            let (gh, bytes) = &got[(h.lsn() - 1) as usize];
            assert_eq!(gh, h, "the handle append gave is the one iteration gives");
            assert_eq!(bytes, &payload(*id));
        }
        assert_eq!(wal.recovery_report().records, 200);
        assert_eq!(wal.next_lsn(), 201);
    }
}

#[test]
fn batches_split_at_max_batch_bytes_and_a_large_record_goes_alone() {
    for b in backends("olog_split") {
        let wal = open(&*b, "log");
        let small: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 4000]).collect();
        let hs = wal.append_batch(&small).unwrap();
        let objects: std::collections::BTreeSet<u64> = hs.iter().map(|h| h.segment()).collect();
        // 40 frames of ~4 KiB in 64 KiB objects: at least three objects.
        assert!(objects.len() >= 3, "{objects:?}");
        let big = vec![7u8; 200 << 10];
        let hb = wal.append(&big).unwrap();
        assert!(!objects.contains(&hb.segment()));
        drop(wal);
        let wal = open(&*b, "log");
        for (h, p) in hs.iter().zip(&small) {
            assert_eq!(&wal.read(h).unwrap(), p);
        }
        assert_eq!(wal.read(&hb).unwrap(), big);
        assert_eq!(all(&wal).len(), 41);
        assert!(matches!(
            wal.append(&vec![0u8; (1 << 20) + 1]),
            Err(Error::TooLarge { .. })
        ));
    }
}

#[test]
fn only_sync_policy_always_is_accepted() {
    let b = &backends("olog_policy")[0];
    let o = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..opts()
    };
    assert!(matches!(
        Wal::open_at(b.location("log"), o),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn a_newer_writer_fences_the_older_one() {
    for b in backends("olog_takeover") {
        let old = open(&*b, "log");
        let before = old.append(b"before").unwrap();
        // The new driver opens the same log: it sees what was acknowledged
        // and claims the next object.
        let new = open(&*b, "log");
        assert_eq!(all(&new).len(), 1);
        // The old driver's next batch collides with the claim.
        match old.append(b"stale") {
            Err(Error::LogTakenOver { location }) => {
                assert!(location.contains(".wal"), "{location}")
            }
            other => panic!("{}: {other:?}", b.name()),
        }
        assert!(old.is_poisoned());
        assert!(matches!(old.append(b"again"), Err(Error::Poisoned)));
        let after = new.append(b"after").unwrap();
        drop((old, new));
        let wal = open(&*b, "log");
        let got: Vec<Vec<u8>> = all(&wal).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, vec![b"before".to_vec(), b"after".to_vec()]);
        assert_eq!(wal.read(&before).unwrap(), b"before");
        assert_eq!(wal.read(&after).unwrap(), b"after");
    }
}

#[test]
fn a_batch_that_lands_between_the_listing_and_the_claim_is_kept() {
    // Get the bytes of a real batch object: the old driver's second batch.
    let scratch = &backends("olog_late")[0];
    let old = open(&**scratch, "log");
    old.append(b"one").unwrap();
    let h = old.append(b"two").unwrap();
    let late = fetch(&**scratch, "log", &log_object_name(h.segment()));
    drop(old);
    remove(&**scratch, "log", &log_object_name(h.segment()));
    let (inner, prefix) = scratch.raw("log");
    let _ = inner;

    // Copy what the old driver had stored before that batch into a store
    // whose listing can be interleaved with.
    let mem = Arc::new(InMemory::new());
    let store = Interleaving::new(mem.clone());
    for seq in 1..h.segment() {
        let name = log_object_name(seq);
        plant_raw(
            &mem,
            &format!("t/log/{name}"),
            fetch(&**scratch, "log", &name),
        );
    }
    // The new driver lists the log; its old driver's batch lands right
    // after the listing, before the claim: the claim collides with it.
    store.arm(Hook {
        listing_ends_with: "log".into(),
        after_listing: true,
        plant: vec![(format!("t/log/{}", log_object_name(h.segment())), late)],
        remove: vec![],
    });
    let new = Wal::open_at(ObjectLocation::with_store(store, "t/log").unwrap(), opts()).unwrap();
    let got: Vec<Vec<u8>> = all(&new).into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()], "{prefix}");
    assert_eq!(new.recovery_report().records, 2);
    let h3 = new.append(b"three").unwrap();
    assert_eq!(h3.lsn(), 3);
    assert!(
        h3.segment() > h.segment() + 1,
        "the claim took the next name"
    );
}

fn plant_raw(store: &InMemory, path: &str, bytes: Vec<u8>) {
    use streamwal::object::object_store::{ObjectStoreExt, PutPayload, path::Path};
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.put(&Path::from(path), PutPayload::from(bytes)))
        .unwrap();
}

#[test]
fn retention_by_the_new_writer_does_not_let_the_old_one_back_in() {
    for b in backends("olog_purge_fence") {
        let old = open(&*b, "log");
        old.append(b"old").unwrap();
        let new = open(&*b, "log");
        let hs: Vec<RecordHandle> = (0..3).map(|i| new.append(&[i]).unwrap()).collect();
        let last = hs[2];
        // Everything but the newest data object goes; the claim that fences
        // the old writer stays.
        new.purge_before_lsn(u64::MAX).unwrap();
        assert_eq!(new.first_lsn(), Some(last.lsn()));
        assert!(matches!(
            old.append(b"stale"),
            Err(Error::LogTakenOver { .. })
        ));
        // A fenced writer's retention is refused too.
        assert!(old.purge_before_lsn(u64::MAX).is_err());
        drop((old, new));
        let wal = open(&*b, "log");
        let got: Vec<Vec<u8>> = all(&wal).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, vec![vec![2u8]], "{}", b.name());
    }
}

#[test]
fn of_two_writers_that_open_the_same_state_the_later_one_wins() {
    use streamwal::object::object_store::{ObjectStoreExt, path::Path};
    let mem = Arc::new(InMemory::new());
    let store = Interleaving::new(mem.clone());
    let loc = || ObjectLocation::with_store(store.clone(), "t/log").unwrap();
    let first = Wal::open_at(loc(), opts()).unwrap().append(b"a").unwrap();
    // Writer A opens and claims. Take its claim away for a moment and put
    // it back right after B lists: both have seen the same log, and B's
    // claim of the same name meets A's.
    let a = Wal::open_at(loc(), opts()).unwrap();
    let claim_seq = first.segment() + 1;
    let claim = format!("t/log/{}", log_object_name(claim_seq));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt
        .block_on(async {
            mem.get(&Path::from(claim.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap()
        .to_vec();
    rt.block_on(mem.delete(&Path::from(claim.as_str())))
        .unwrap();
    store.arm(Hook {
        listing_ends_with: "log".into(),
        after_listing: true,
        plant: vec![(claim, bytes)],
        remove: vec![],
    });
    let b = Wal::open_at(loc(), opts()).unwrap();
    // Claims carry a nonce: B saw A's claim as someone else's and claimed
    // the next name, where A's next batch now collides.
    assert!(matches!(a.append(b"x"), Err(Error::LogTakenOver { .. })));
    b.append(b"y").unwrap();
    drop((a, b));
    let got: Vec<Vec<u8>> = all(&Wal::open_at(loc(), opts()).unwrap())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, vec![b"a".to_vec(), b"y".to_vec()]);
}

#[test]
fn damage_is_reported_by_object_and_offset() {
    for b in backends("olog_damage") {
        let wal = open(&*b, "log");
        let h1 = wal.append(b"first record").unwrap();
        let h2 = wal.append(b"second record").unwrap();
        let h3 = wal.append(b"third record").unwrap();
        drop(wal);
        // Flip one payload byte of the second record's object.
        let name = log_object_name(h2.segment());
        let good = fetch(&*b, "log", &name);
        let mut bad = good.clone();
        let at = h2.offset() as usize + 40 + 3;
        bad[at] ^= 0x10;
        plant(&*b, "log", &name, bad);
        match Wal::open_at(b.location("log"), opts()) {
            Err(Error::Corruption { file, offset, kind }) => {
                assert!(file.to_string_lossy().ends_with(&name), "{file:?}");
                assert_eq!(offset, h2.offset());
                assert!(matches!(kind, CorruptionKind::ChecksumMismatch { .. }));
            }
            other => panic!("{}: {other:?}", b.name()),
        }
        // Salvage reads around it and lists the damage.
        let salvage = Wal::open_at(
            b.location("log"),
            WalOptions {
                recovery_mode: RecoveryMode::Salvage,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(salvage.recovery_report().problems.len(), 1);
        let got: Vec<u64> = all(&salvage).iter().map(|(h, _)| h.lsn()).collect();
        assert_eq!(got, vec![h1.lsn(), h3.lsn()]);
        assert!(matches!(salvage.append(b"x"), Err(Error::ReadOnly)));
        drop(salvage);

        // A missing object in the middle of the chain is corruption.
        plant(&*b, "log", &name, good);
        remove(&*b, "log", &name);
        match Wal::open_at(b.location("log"), opts()) {
            Err(Error::Corruption {
                kind: CorruptionKind::MissingSegment { expected, found },
                ..
            }) => {
                assert_eq!(expected, h2.segment());
                assert!(found > expected);
            }
            other => panic!("{}: {other:?}", b.name()),
        }
        // An object of another log, at the right name and sequence number,
        // is foreign.
        let other = Wal::open_at(b.location("other"), opts()).unwrap();
        let mut ho = other.append(b"x").unwrap();
        while ho.segment() < h2.segment() {
            ho = other.append(b"x").unwrap();
        }
        drop(other);
        assert_eq!(ho.segment(), h2.segment());
        let foreign = fetch(&*b, "other", &log_object_name(ho.segment()));
        plant(&*b, "log", &name, foreign);
        match Wal::open_at(b.location("log"), opts()) {
            Err(Error::Corruption {
                kind: CorruptionKind::ForeignSegment,
                ..
            }) => {}
            other => panic!("{}: {other:?}", b.name()),
        }
    }
}

#[test]
fn retention_deletes_old_objects_and_keeps_the_newest() {
    for b in backends("olog_retention") {
        let wal = open(&*b, "log");
        let hs: Vec<RecordHandle> = (0..10u64)
            .map(|i| wal.append_at(&payload(i), 100 + i).unwrap())
            .collect();
        let removed = wal.purge_before_lsn(hs[5].lsn()).unwrap();
        assert!(removed >= 5, "claim and five records' objects: {removed}");
        assert_eq!(wal.first_lsn(), Some(hs[5].lsn()));
        assert!(matches!(wal.read(&hs[0]), Err(Error::NotFound { .. })));
        assert!(matches!(
            wal.iter_from(1).next(),
            Some(Err(Error::NotFound { .. }))
        ));
        assert_eq!(wal.read(&hs[5]).unwrap(), payload(5));
        // By time: records 5..=7 have times below 108.
        wal.purge_before_time(108).unwrap();
        assert_eq!(wal.first_lsn(), Some(hs[8].lsn()));
        // Never the newest object, even when everything qualifies.
        wal.purge_before_lsn(u64::MAX).unwrap();
        assert_eq!(wal.last_lsn(), Some(hs[9].lsn()));
        drop(wal);
        let wal = open(&*b, "log");
        assert_eq!(wal.next_lsn(), hs[9].lsn() + 1);
        let h = wal.append(b"more").unwrap();
        assert_eq!(h.lsn(), hs[9].lsn() + 1);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `append_at` with this time.
    Append(Vec<u8>, u64),
    /// `append_batch_at`; may span several objects (64 KiB batches).
    Batch(Vec<Vec<u8>>, u64),
    /// A payload one byte over the bound: `TooLarge`, no LSN used.
    TooLarge,
    Reopen,
    PurgeLsn(u16),
    PurgeTime(u64),
    Read(u16),
    IterFrom(u16),
    /// An iterator made before an append sees exactly what was there.
    IterThenAppend(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let payload = || proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => (payload(), 0..100u64).prop_map(|(p, t)| Op::Append(p, t)),
        2 => (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20_000), 0..8),
            0..100u64
        )
            .prop_map(|(ps, t)| Op::Batch(ps, t)),
        1 => Just(Op::TooLarge),
        1 => Just(Op::Reopen),
        1 => any::<u16>().prop_map(Op::PurgeLsn),
        1 => (0..120u64).prop_map(Op::PurgeTime),
        2 => any::<u16>().prop_map(Op::Read),
        1 => any::<u16>().prop_map(Op::IterFrom),
        1 => payload().prop_map(Op::IterThenAppend),
    ]
}

/// What the model knows of one record.
#[derive(Debug, Clone)]
struct Rec {
    handle: RecordHandle,
    payload: Vec<u8>,
    time: u64,
}

/// The log as a list of records, and where its retained part starts.
struct Model {
    records: Vec<Rec>,
    first: u64,
    /// The newest object holds no record (a claim after an open), so every
    /// object holding records may be deleted.
    claim_newest: bool,
}

impl Model {
    fn retained(&self) -> impl Iterator<Item = &Rec> {
        self.records.iter().filter(|r| r.handle.lsn() >= self.first)
    }

    /// Retention deletes the oldest objects whose records all qualify,
    /// stopping at the first that does not, never the newest object, and
    /// skipping claims (which hold no records). The new first LSN.
    fn predict_purge(&self, qualifies: impl Fn(&Rec) -> bool) -> u64 {
        let mut groups: Vec<Vec<&Rec>> = Vec::new();
        for r in self.retained() {
            match groups.last_mut() {
                Some(g) if g[0].handle.segment() == r.handle.segment() => g.push(r),
                _ => groups.push(vec![r]),
            }
        }
        let deletable = if self.claim_newest {
            groups.len()
        } else {
            groups.len().saturating_sub(1)
        };
        let removed = groups[..deletable]
            .iter()
            .take_while(|g| g.iter().all(|r| qualifies(r)))
            .count();
        groups
            .get(removed)
            .map_or(self.records.len() as u64 + 1, |g| g[0].handle.lsn())
    }

    fn accept(&mut self, handle: RecordHandle, payload: &[u8], time: u64) {
        assert_eq!(
            handle.lsn(),
            self.records.len() as u64 + 1,
            "LSNs are dense"
        );
        assert_eq!(handle.len() as usize, payload.len());
        self.records.push(Rec {
            handle,
            payload: payload.to_vec(),
            time,
        });
        self.claim_newest = false;
    }

    /// Everything the log shows agrees with the model.
    fn check(&self, wal: &Wal) {
        let next = self.records.len() as u64 + 1;
        assert_eq!(wal.next_lsn(), next);
        let any = self.first < next;
        assert_eq!(wal.first_lsn(), any.then_some(self.first));
        assert_eq!(wal.last_lsn(), any.then_some(next - 1));
        check_iter(wal.iter(), self, self.first);
        for r in &self.records {
            match wal.read(&r.handle) {
                Ok(p) => {
                    assert!(r.handle.lsn() >= self.first, "read a purged record");
                    assert_eq!(p, r.payload);
                }
                Err(Error::NotFound { .. }) => assert!(r.handle.lsn() < self.first),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}

fn check_iter(iter: streamwal::WalIter, m: &Model, from: u64) {
    let got: Vec<(RecordHandle, Vec<u8>)> = iter.collect::<Result<_, _>>().unwrap();
    let want: Vec<(RecordHandle, Vec<u8>)> = m
        .retained()
        .filter(|r| r.handle.lsn() >= from)
        .map(|r| (r.handle, r.payload.clone()))
        .collect();
    assert_eq!(got, want, "iteration from {from}");
}

/// Run `ops` against the log at `sub` and a model of it.
fn run_model(b: &dyn Backend, sub: &str, ops: &[Op]) {
    let mut wal = open(b, sub);
    let mut m = Model {
        records: Vec::new(),
        first: 1,
        claim_newest: true,
    };
    for op in ops {
        match op {
            Op::Append(p, t) => m.accept(wal.append_at(p, *t).unwrap(), p, *t),
            Op::Batch(ps, t) => {
                let hs = wal.append_batch_at(ps, *t).unwrap();
                for (h, p) in hs.into_iter().zip(ps) {
                    m.accept(h, p, *t);
                }
            }
            Op::TooLarge => {
                let big = vec![1u8; (1 << 20) + 1];
                assert!(matches!(wal.append(&big), Err(Error::TooLarge { .. })));
            }
            Op::Reopen => {
                drop(wal);
                wal = open(b, sub);
                let report = wal.recovery_report();
                assert_eq!(report.records, m.retained().count() as u64);
                m.claim_newest = true;
            }
            Op::PurgeLsn(k) => {
                let lsn = u64::from(*k) % (m.records.len() as u64 + 2);
                let first = m.predict_purge(|r| r.handle.lsn() < lsn);
                wal.purge_before_lsn(lsn).unwrap();
                m.first = first.max(m.first);
            }
            Op::PurgeTime(time) => {
                let first = m.predict_purge(|r| r.time < *time);
                wal.purge_before_time(*time).unwrap();
                m.first = first.max(m.first);
            }
            Op::Read(k) => {
                if let Some(r) = m.records.get(*k as usize % m.records.len().max(1)) {
                    match wal.read(&r.handle) {
                        Ok(p) => assert_eq!(p, r.payload),
                        Err(Error::NotFound { .. }) => assert!(r.handle.lsn() < m.first),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            Op::IterFrom(k) => {
                let from = 1 + u64::from(*k) % (m.records.len() as u64 + 2);
                let mut it = wal.iter_from(from);
                if from < m.first {
                    assert!(matches!(it.next(), Some(Err(Error::NotFound { .. }))));
                } else {
                    check_iter(it, &m, from);
                }
            }
            Op::IterThenAppend(p) => {
                let held = wal.iter();
                let h = wal.append_at(p, 0).unwrap();
                check_iter(held, &m, m.first);
                m.accept(h, p, 0);
            }
        }
        m.check(&wal);
    }
    drop(wal);
    let wal = open(b, sub);
    m.check(&wal);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_log_matches_a_model_on_memory(ops in proptest::collection::vec(op(), 1..40)) {
        let b = &backends("olog_model")[0];
        run_model(&**b, "log", &ops);
    }
}

#[test]
fn the_log_matches_a_model_on_every_backend() {
    // Fixed pseudo-random sequences, so the S3 runs are the same every time.
    for seed in [
        0x2545_f491_4f6c_dd1du64,
        0x9e37_79b9_7f4a_7c15,
        0xd1b5_4a32_d192_ed03,
    ] {
        let mut rng = Rng::new(seed);
        let mut next = move || rng.next();
        let ops: Vec<Op> = (0..60)
            .map(|_| match next() % 13 {
                0..=3 => Op::Append(vec![next() as u8; (next() % 300) as usize], next() % 100),
                4 | 5 => Op::Batch(
                    (0..next() % 6)
                        .map(|i| vec![i as u8; (next() % 20_000) as usize])
                        .collect(),
                    next() % 100,
                ),
                6 => Op::Reopen,
                7 => Op::PurgeLsn(next() as u16),
                8 => Op::PurgeTime(next() % 120),
                9 => Op::IterFrom(next() as u16),
                10 => Op::IterThenAppend(vec![7; 10]),
                11 => Op::TooLarge,
                _ => Op::Read(next() as u16),
            })
            .collect();
        for b in backends(&format!("olog_model_{seed:x}")) {
            run_model(&*b, "log", &ops);
        }
    }
}

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
    let wal = Arc::new(Wal::open_at(loc(), opts()).unwrap());
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
    let wal = Wal::open_at(loc(), opts()).unwrap();
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
    let got: Vec<Vec<u8>> = all(&Wal::open_at(loc(), opts()).unwrap())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_panicking_store_fails_the_other_appenders_instead_of_hanging_them() {
    let (store, loc) = faulty();
    let wal = Arc::new(Wal::open_at(loc(), opts()).unwrap());
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
    let wal = Wal::open_at(loc(), opts()).unwrap();
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
        let wal = Wal::open_at(loc(), o).unwrap();
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
        let s = Wal::open_at(b.location("log"), salvage).unwrap();
        for item in s.iter() {
            let (h, p) = item.unwrap();
            let (wh, wp) = &written[(h.lsn() - 1) as usize];
            prop_assert_eq!(&h, wh);
            prop_assert_eq!(&p, wp);
        }
        drop(s);
        match Wal::open_at(b.location("log"), opts()) {
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

/// A copy of a log object under a number beyond u64 is not read, and is
/// reported (issue 13's look-alike names, on object storage).
#[test]
fn an_object_numbered_beyond_u64_is_reported_not_read() {
    for b in backends("olog_lookalike") {
        let wal = open(&*b, "log");
        wal.append(b"kept").unwrap();
        drop(wal);
        let name = log_object_name(1);
        let bytes = fetch(&*b, "log", &name);
        let copy = format!("99999999999999999999{}", &name[20..]);
        plant(&*b, "copy", &copy, bytes);
        let salvage = WalOptions {
            recovery_mode: RecoveryMode::Salvage,
            ..opts()
        };
        let wal = Wal::open_at(b.location("copy"), salvage).unwrap();
        let report = wal.recovery_report();
        assert_eq!(report.segments, 0, "{}", b.name());
        let found: Vec<&str> = report
            .lookalike_files
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(found, [copy.as_str()], "{}", b.name());
    }
}
