//! Checkpoints on object storage: written whole, newest valid first,
//! retention, damage skipped, and epoch fencing of a driver that was taken
//! over. Every test runs on an in-memory object store, and also on a real
//! S3-protocol server when `STREAMWAL_S3_URL` names a bucket on one
//! (`.ci/run` starts one and sets it; with `STREAMWAL_REQUIRE_S3=1` a
//! missing URL fails the test instead of skipping the S3 half).
#![cfg(feature = "object-store")]

use crate::common;

use common::objects::{Backend, Hook, Interleaving, backends, plant};

use std::sync::Arc;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore};
use streamwal::object::object_store::memory::InMemory;
use streamwal::object::{ObjectCheckpointStore, ObjectLocation};
use streamwal::tracker::TrackerState;
use streamwal::{CorruptionKind, Error};

/// Where the checkpoints go below each backend's prefix.
const CKPT: &str = "ckpt";

/// Put raw bytes under the checkpoints' prefix (to plant damage or stale
/// objects).
fn put(b: &dyn Backend, name: &str, bytes: Vec<u8>) {
    plant(b, CKPT, name, bytes);
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ckpt(batch_time: u64, graph: &str) -> Checkpoint<String> {
    Checkpoint {
        batch_time,
        batch_interval_ms: 1000,
        graph: graph.to_string(),
        graph_version: 1,
        pending_batches: vec![batch_time],
        journal_lsn: batch_time / 10,
        tracker: TrackerState::default(),
        source_offsets: Default::default(),
    }
}

fn opts(keep: usize) -> CheckpointOptions {
    CheckpointOptions { keep }
}

fn latest_time(store: &ObjectCheckpointStore) -> Option<(u64, String)> {
    store
        .latest::<String>()
        .unwrap()
        .checkpoint
        .map(|(_, c)| (c.batch_time, c.graph))
}

#[test]
fn checkpoints_round_trip_and_survive_a_new_driver() {
    for b in backends("round_trip") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        assert_eq!(store.epoch(), Some(1));
        assert_eq!(latest_time(&store), None);
        for t in [1000, 2000, 3000] {
            store.write(&ckpt(t, &format!("graph {t}"))).unwrap();
        }
        assert_eq!(latest_time(&store), Some((3000, "graph 3000".into())));
        let got = store.latest::<String>().unwrap().checkpoint.unwrap().1;
        assert_eq!(got.journal_lsn, 300);
        assert_eq!(got.pending_batches, vec![3000]);
        // A driver restarted elsewhere finds the same checkpoint.
        let next = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        assert_eq!(next.epoch(), Some(2));
        assert_eq!(latest_time(&next), Some((3000, "graph 3000".into())));
        assert_eq!(next.journal_floor().unwrap(), Some(100));
    }
}

#[test]
fn latest_is_the_last_written_even_of_an_older_batch() {
    for b in backends("write_order") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        store.write(&ckpt(2000, "newer batch")).unwrap();
        store.write(&ckpt(1000, "written last")).unwrap();
        assert_eq!(latest_time(&store), Some((1000, "written last".into())));
        // A later epoch's checkpoint was written after every older one.
        let next = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        next.write(&ckpt(500, "next driver")).unwrap();
        let order: Vec<u64> = next.list().unwrap().iter().map(|&(t, _)| t).collect();
        assert_eq!(order, vec![500, 1000, 2000]);
    }
}

#[test]
fn retention_keeps_the_newest() {
    for b in backends("retention") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(3)).unwrap();
        for t in 1..=7u64 {
            store.write(&ckpt(t * 1000, "g")).unwrap();
        }
        let times: Vec<u64> = store.list().unwrap().iter().map(|&(t, _)| t).collect();
        assert_eq!(times, vec![7000, 6000, 5000]);
    }
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped_with_its_reason() {
    for b in backends("damaged") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        store.write(&ckpt(1000, "good")).unwrap();
        // A newer checkpoint of this epoch whose bytes rotted.
        let mut bytes = CheckpointStore::encode(&ckpt(2000, "rotten"))
            .unwrap()
            .as_bytes()
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        // Written after the good one: a larger write sequence number.
        bytes[48..56].copy_from_slice(&99u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        put(&*b, &ckpt_name(2000, store.epoch().unwrap()), bytes);
        let latest = store.latest::<String>().unwrap();
        assert_eq!(latest.checkpoint.map(|(_, c)| c.batch_time), Some(1000));
        assert_eq!(latest.skipped.len(), 1);
        assert!(
            matches!(
                latest.skipped[0].reason,
                Error::Corruption {
                    kind: CorruptionKind::ChecksumMismatch { .. },
                    ..
                }
            ),
            "{:?}",
            latest.skipped[0].reason
        );
    }
}

fn ckpt_name(t: u64, e: u64) -> String {
    format!("checkpoints/checkpoint-{t:020}-{e:020}.ckpt")
}

fn plant_checkpoint(b: &dyn Backend, t: u64, e: u64, graph: &str) {
    let bytes = CheckpointStore::encode(&ckpt(t, graph)).unwrap();
    put(b, &ckpt_name(t, e), bytes.as_bytes().to_vec());
}

#[test]
fn a_driver_that_was_taken_over_is_fenced() {
    for b in backends("fenced") {
        let old = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let old_epoch = old.epoch().unwrap();
        old.write(&ckpt(1000, "old 1000")).unwrap();
        old.write(&ckpt(2000, "old 2000")).unwrap();

        // A new driver takes over the prefix (the old one is partitioned,
        // not dead).
        let new = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let new_epoch = new.epoch().unwrap();
        assert!(new_epoch > old_epoch);
        assert_eq!(latest_time(&new), Some((2000, "old 2000".into())));

        // The old driver's next write is refused...
        match old.write(&ckpt(3000, "old 3000")) {
            Err(Error::Fenced { epoch, newer }) => {
                assert_eq!((epoch, newer), (old_epoch, new_epoch));
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
        // ...and one that raced the takeover and landed after its seal
        // never counts, for either store.
        plant_checkpoint(&*b, 4000, old_epoch, "stale 4000");
        assert_eq!(latest_time(&new), Some((2000, "old 2000".into())));
        assert_eq!(latest_time(&old), Some((2000, "old 2000".into())));
        assert_eq!(
            new.latest::<String>().unwrap().fenced,
            vec![(4000, old_epoch)]
        );

        // The new driver goes on; its checkpoints win, and a third driver
        // sees the same.
        new.write(&ckpt(2500, "new 2500")).unwrap();
        assert_eq!(latest_time(&new), Some((2500, "new 2500".into())));
        let third = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        assert_eq!(latest_time(&third), Some((2500, "new 2500".into())));
        // The new driver's retention cleared the fenced-out object.
        assert_eq!(third.latest::<String>().unwrap().fenced, vec![]);
    }
}

/// A fenced driver's stragglers stay out even when a later takeover lists
/// them, and even when they carry batch times below what exists.
#[test]
fn stragglers_never_count_for_later_drivers() {
    for b in backends("stragglers") {
        let a = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let ea = a.epoch().unwrap();
        a.write(&ckpt(10, "a 10")).unwrap();
        a.write(&ckpt(20, "a 20")).unwrap();
        let b2 = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let eb = b2.epoch().unwrap();
        assert!(eb > ea);
        // A's late PUT lands after B's seal.
        plant_checkpoint(&*b, 30, ea, "a 30 late");
        // C takes over before B wrote anything (so B's retention never ran).
        let c = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        // B, which passed its check before C existed, lands a PUT late.
        plant_checkpoint(&*b, 25, eb, "b 25 late");
        // A fourth driver recovers from A's last acknowledged checkpoint.
        let d = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        assert_eq!(latest_time(&d), Some((20, "a 20".into())));
        assert_eq!(latest_time(&c), Some((20, "a 20".into())));
        let fenced = d.latest::<String>().unwrap().fenced;
        assert_eq!(fenced, vec![(30, ea), (25, eb)]);
    }
}

/// A driver that died between its fence and its seal holds up nobody: the
/// next driver seals its epoch, and what was acknowledged before counts.
#[test]
fn an_unsealed_takeover_is_sealed_by_the_next_driver() {
    for b in backends("unsealed") {
        let a = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let ea = a.epoch().unwrap();
        a.write(&ckpt(10, "a 10")).unwrap();
        // A driver took epoch ea+1 and died before sealing it.
        let nonce_fence = {
            let mut v = Vec::new();
            v.extend_from_slice(b"SWFENCE1");
            v.extend_from_slice(&(ea + 1).to_le_bytes());
            v.extend_from_slice(&7u64.to_le_bytes());
            let crc = crc32fast_hash(&v);
            v.extend_from_slice(&crc.to_le_bytes());
            v
        };
        put(&*b, &format!("epochs/epoch-{:020}", ea + 1), nonce_fence);
        // Until sealed, nothing is decided (the takeover is in progress),
        // and A is fenced.
        assert!(matches!(
            a.latest::<String>(),
            Err(Error::TakeoverInProgress { fence }) if fence == ea + 1
        ));
        let reader = ObjectCheckpointStore::open_read_only(b.location(CKPT));
        assert!(matches!(
            reader.list(),
            Err(Error::TakeoverInProgress { .. })
        ));
        assert!(matches!(
            a.write(&ckpt(20, "a 20")),
            Err(Error::Fenced { .. })
        ));
        let c = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        assert_eq!(c.epoch(), Some(ea + 2));
        assert_eq!(latest_time(&c), Some((10, "a 10".into())));
    }
}

fn crc32fast_hash(bytes: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise: the test does not borrow the crate's encoder.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn hostile_names_at_the_edge_of_u64_do_not_panic() {
    for b in backends("hostile_names") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        store.write(&ckpt(10, "g")).unwrap();
        // Named at the edge but well-formed: its content decides.
        plant_checkpoint(&*b, u64::MAX, u64::MAX, "max");
        let latest = store.latest::<String>().unwrap().checkpoint.unwrap().1;
        assert_eq!(latest.batch_time, u64::MAX);
        // A fence at the last epoch: this store is fenced, its checkpoints
        // wait for a seal, and no epoch is left to take.
        put(
            &*b,
            &format!("epochs/epoch-{:020}", u64::MAX),
            vec![1, 2, 3],
        );
        assert!(matches!(
            store.write(&ckpt(20, "g")),
            Err(Error::Fenced { .. })
        ));
        assert!(matches!(
            store.latest::<String>(),
            Err(Error::TakeoverInProgress { fence: u64::MAX })
        ));
        assert!(matches!(
            ObjectCheckpointStore::open(b.location(CKPT), opts(10)),
            Err(Error::Corruption { .. })
        ));
    }
}

/// Empty and short objects named like checkpoints are skipped by every
/// reader, and do not make the journal floor fail.
#[test]
fn empty_and_short_checkpoint_objects_are_skipped() {
    for b in backends("short_objects") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        let e = store.epoch().unwrap();
        store.write(&ckpt(1000, "good")).unwrap();
        put(&*b, &ckpt_name(2000, e), Vec::new());
        put(&*b, &ckpt_name(3000, e), vec![0x53; 7]);
        let latest = store.latest::<String>().unwrap();
        assert_eq!(latest.checkpoint.map(|(_, c)| c.batch_time), Some(1000));
        assert_eq!(latest.skipped.len(), 2);
        assert_eq!(store.journal_floor().unwrap(), Some(100));
    }
}

#[test]
fn a_read_only_store_fences_nobody_and_writes_nothing() {
    for b in backends("read_only") {
        let writer = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        writer.write(&ckpt(10, "g 10")).unwrap();
        let reader = ObjectCheckpointStore::open_read_only(b.location(CKPT));
        assert_eq!(reader.epoch(), None);
        assert_eq!(latest_time(&reader), Some((10, "g 10".into())));
        assert!(matches!(reader.write(&ckpt(30, "g")), Err(Error::ReadOnly)));
        // The writer was not fenced by the reader.
        writer.write(&ckpt(20, "g 20")).unwrap();
        assert_eq!(latest_time(&reader), Some((20, "g 20".into())));
    }
}

#[test]
fn calling_from_async_code_is_an_error_not_a_panic() {
    let rt = tokio_rt();
    let store =
        ObjectCheckpointStore::open(ObjectLocation::parse("memory:///x").unwrap(), opts(10))
            .unwrap();
    let got = rt.block_on(async { store.write(&ckpt(1, "g")).map(|_| ()) });
    assert!(matches!(got, Err(Error::InvalidOptions(_))), "{got:?}");
    // Dropping the store inside async code does not panic either.
    rt.block_on(async move { drop(store) });
}

#[test]
fn drivers_opening_at_once_take_distinct_epochs() {
    for b in backends("race") {
        let epochs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || {
                        ObjectCheckpointStore::open(b.location(CKPT), opts(10))
                            .unwrap()
                            .epoch()
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = epochs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            epochs.len(),
            "two drivers shared an epoch: {epochs:?}"
        );
    }
}

#[test]
fn a_damaged_epoch_object_is_an_error_not_a_guess() {
    for b in backends("epoch_damage") {
        let store = ObjectCheckpointStore::open(b.location(CKPT), opts(10)).unwrap();
        store.write(&ckpt(1000, "g")).unwrap();
        // A newer driver's fence, and a seal that rotted.
        let next = store.epoch().unwrap() + 1;
        put(&*b, &format!("epochs/epoch-{next:020}"), vec![0u8; 28]);
        put(&*b, &format!("epochs/seal-{next:020}"), vec![0u8; 40]);
        assert!(matches!(
            store.latest::<String>(),
            Err(Error::Corruption { .. })
        ));
    }
}

#[test]
fn urls_that_cannot_work_are_refused() {
    for url in ["file:///tmp/x", "ftp://host/x", "not a url"] {
        assert!(
            matches!(ObjectLocation::parse(url), Err(Error::InvalidUrl { .. })),
            "{url}"
        );
    }
    assert!(ObjectLocation::parse("memory:///a/b").is_ok());
}

fn seal_bytes(epoch: u64, sealed: &[(u64, u64)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"SWSEAL01");
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    for &(t, e) in sealed {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&e.to_le_bytes());
    }
    let crc = crc32fast_hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// A reader lists the checkpoints while, in between its requests, a new
/// driver fences and seals and the old driver's late checkpoint lands: the
/// late checkpoint must not count, whatever the reader listed first.
#[test]
fn a_takeover_between_a_readers_requests_cannot_let_a_straggler_in() {
    let inner = Arc::new(InMemory::new());
    let store = Interleaving::new(inner.clone());
    let old = ObjectCheckpointStore::open(
        ObjectLocation::with_store(store.clone(), "engine/ckpt").unwrap(),
        opts(10),
    )
    .unwrap();
    let e = old.epoch().unwrap();
    old.write(&ckpt(10, "old 10")).unwrap();
    old.write(&ckpt(20, "old 20")).unwrap();
    let late = CheckpointStore::encode(&ckpt(30, "late 30")).unwrap();
    store.arm(Hook {
        listing_ends_with: "checkpoints".into(),
        after_listing: false,
        plant: [
            (format!("epochs/epoch-{:020}", e + 1), b"fence".to_vec()),
            (
                format!("epochs/seal-{:020}", e + 1),
                seal_bytes(e + 1, &[(10, e), (20, e)]),
            ),
            (ckpt_name(30, e), late.as_bytes().to_vec()),
        ]
        .into_iter()
        .map(|(name, bytes)| (format!("engine/ckpt/{name}"), bytes))
        .collect(),
        remove: vec![],
    });
    let reader = ObjectCheckpointStore::open_read_only(
        ObjectLocation::with_store(store.clone(), "engine/ckpt").unwrap(),
    );
    let latest = reader.latest::<String>().unwrap();
    assert_eq!(
        latest.checkpoint.map(|(_, c)| c.batch_time),
        Some(20),
        "a checkpoint that landed after the seal counted"
    );
    assert_eq!(latest.fenced, vec![(30, e)]);
}
