//! Object storage of format version 1: fences and seals of epochs 1 and 2,
//! and a log of a claim, two batch objects and the floor retention left.

use super::{data_dir, fields, golden, segment};
use std::sync::Arc;
use streamwal::object::object_store::memory::InMemory;
use streamwal::object::object_store::{ObjectStoreExt, PutPayload, path::Path as OPath};
use streamwal::object::{ObjectCheckpointStore, ObjectLocation};
use streamwal::wal::format::SegmentHeader;
use streamwal::{Wal, WalOptions};

const LOG_ID: u64 = 0x7e65_c7ab_b25d_b1d2;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The object's trailing CRC32, checked against the bytes before it.
fn trailing_crc(b: &[u8]) -> u32 {
    let (body, crc) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().unwrap());
    assert_eq!(stored, crc32fast::hash(body), "trailing crc");
    stored
}

#[test]
fn fences_and_seals_decode_field_by_field() {
    for (epoch, nonce, crc) in [
        (1, 0x0413_42a5_5482_16c4, 0x9621_3a10),
        (2, 0xfe69_8fb7_e7fd_8c65, 0xd47a_9d2b),
    ] {
        let b = golden(&format!("object/epochs/epoch-{epoch:020}"));
        assert_eq!(b.len(), 28);
        assert_eq!(b[..8], *b"SWFENCE1");
        assert_eq!((u64_at(&b, 8), u64_at(&b, 16)), (epoch, nonce));
        assert_eq!(trailing_crc(&b), crc);
    }
    let b = golden("object/epochs/seal-00000000000000000001");
    assert_eq!(b.len(), 24);
    assert_eq!(b[..8], *b"SWSEAL01");
    assert_eq!((u64_at(&b, 8), u32_at(&b, 16)), (1, 0));
    assert_eq!(trailing_crc(&b), 0x53f2_70fc);
    let b = golden("object/epochs/seal-00000000000000000002");
    assert_eq!(b.len(), 40);
    assert_eq!(b[..8], *b"SWSEAL01");
    assert_eq!((u64_at(&b, 8), u32_at(&b, 16)), (2, 1));
    // The one checkpoint of epoch 1, at batch time 1000.
    assert_eq!((u64_at(&b, 20), u64_at(&b, 28)), (1_000, 1));
    assert_eq!(trailing_crc(&b), 0x5ead_76d3);
}

#[test]
fn log_objects_decode_field_by_field() {
    let header = |segment_seq, first_lsn| SegmentHeader {
        log_id: LOG_ID,
        segment_seq,
        first_lsn,
        unsynced_window_bytes: 0,
        max_record_bytes: 64 << 20,
    };
    let claim = golden("object/log/00000000000000000001.wal");
    assert_eq!(claim.len(), 76);
    assert_eq!(SegmentHeader::decode(&claim).unwrap(), header(1, 1));
    assert_eq!(u64_at(&claim, 64), 0xd8d6_7f70_4695_624b, "nonce");
    assert_eq!(trailing_crc(&claim), 0xe2eb_d88f);

    let (h, frames) = segment("object/log/00000000000000000003.wal");
    assert_eq!(h, header(3, 2));
    let got: Vec<_> = frames.iter().map(|(f, p)| (fields(f), p.clone())).collect();
    assert_eq!(got, [((3, 2, 2_000, 1, 0x7bf3_b379), b"two".to_vec())]);
    let (h, frames) = segment("object/log/00000000000000000004.wal");
    assert_eq!(h, header(4, 3));
    let got: Vec<_> = frames.iter().map(|(f, p)| (fields(f), p.clone())).collect();
    assert_eq!(got, [((5, 3, 3_000, 2, 0x3365_4a90), b"three".to_vec())]);

    assert!(golden("object/log/floor-00000000000000000003").is_empty());
}

/// Put every golden file of `object/sub` under `prefix` in `store`.
fn plant(store: &Arc<InMemory>, sub: &str, prefix: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for e in std::fs::read_dir(data_dir().join("object").join(sub)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        rt.block_on(store.put(
            &OPath::from(format!("{prefix}/{name}")),
            PutPayload::from(bytes),
        ))
        .unwrap();
    }
}

#[test]
fn the_log_and_the_epochs_open() {
    let store = Arc::new(InMemory::new());
    plant(&store, "log", "p/log");
    plant(&store, "epochs", "p/ckpt/epochs");
    let at = |sub: &str| ObjectLocation::with_store(store.clone(), &format!("p/{sub}")).unwrap();

    let wal = Wal::open(at("log"), WalOptions::default()).unwrap();
    assert_eq!(wal.first_lsn(), Some(2), "below the floor is gone");
    let got: Vec<_> = wal
        .iter()
        .map(|r| r.unwrap())
        .map(|(h, p)| (h.lsn(), p))
        .collect();
    assert_eq!(got, [(2, b"two".to_vec()), (3, b"three".to_vec())]);

    let ckpts = ObjectCheckpointStore::open(at("ckpt"), Default::default()).unwrap();
    assert_eq!(ckpts.epoch(), Some(3), "the epoch after the newest fence");
    assert!(ckpts.latest::<()>().unwrap().checkpoint.is_none());
}
