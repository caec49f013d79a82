//! Fuzz targets, shared by `fuzz/` (cargo-fuzz) and `tests/fuzz_seeds.rs`
//! (which runs them on stable over the checked-in seeds in `fuzz/seeds/`).
//!
//! Each target takes arbitrary bytes and panics only if the crate broke a
//! promise: readers must never panic, never return a payload that was not
//! written, and never allocate from an unchecked length.

use crate::storage::{MemStorage, Storage};
use crate::wal::format::{self, SegmentHeader};
use crate::{Error, RecoveryMode, Wal, WalOptions, wal::segment_file_name};
use std::path::Path;
use std::sync::Arc;

/// Options the targets open logs with: small, so inputs stay small.
pub fn fuzz_options() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 64 << 10,
        max_batch_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    }
}

/// Split `data` into segment files: the first byte says how many (1 to 3),
/// the rest is cut into that many equal parts, named as segments 1, 2, 3.
pub fn files_from_bytes(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Some((&n, rest)) = data.split_first() else {
        return Vec::new();
    };
    let n = usize::from(n % 3) + 1;
    let part = rest.len().div_ceil(n).max(1);
    rest.chunks(part)
        .enumerate()
        .map(|(i, c)| (segment_file_name(i as u64 + 1), c.to_vec()))
        .collect()
}

/// The inverse of [`files_from_bytes`] for up to three segment files of equal
/// length (used to turn real logs into seeds).
pub fn bytes_from_files(files: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![(files.len().clamp(1, 3) - 1) as u8];
    for f in files {
        out.extend_from_slice(f);
    }
    out
}

/// Target `open_log`: `data` becomes a log directory (see
/// [`files_from_bytes`]); open it strict and in salvage mode and read
/// everything. Checks: no panic; in strict mode every iterated record reads
/// back identically by handle, LSNs are dense, and after a successful open a
/// new append lands at the next LSN and survives a reopen.
pub fn open_log(data: &[u8]) {
    let dir = Path::new("/fuzz/wal");
    let storage = MemStorage::new();
    for (name, bytes) in files_from_bytes(data) {
        storage.insert_file(&dir.join(name), bytes);
    }
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());

    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..fuzz_options()
    };
    if let Ok(wal) = Wal::open(crate::Location::dir_on(shared.clone(), dir), salvage) {
        for (h, payload) in wal.iter().flatten() {
            assert_eq!(h.len() as usize, payload.len());
        }
    }

    let wal = match Wal::open(crate::Location::dir_on(shared.clone(), dir), fuzz_options()) {
        Ok(wal) => wal,
        Err(Error::Corruption { .. }) => return,
        Err(e) => panic!("open failed with a non-corruption error: {e:?}"),
    };
    check_clean_log(wal, || {
        Wal::open(crate::Location::dir_on(shared.clone(), dir), fuzz_options())
    });
}

/// After a clean open: every record iterates with dense LSNs and reads back
/// identically by handle, the report counts them, and an append lands at
/// the next LSN and survives `reopen`.
fn check_clean_log(wal: Wal, reopen: impl FnOnce() -> crate::Result<Wal>) {
    let mut expected = wal.first_lsn();
    let mut count = 0u64;
    for item in wal.iter() {
        let (h, payload) = match item {
            Ok(x) => x,
            // Only bit rot after open could cause this; nothing changed here.
            Err(e) => panic!("iteration failed after a clean open: {e:?}"),
        };
        assert_eq!(Some(h.lsn()), expected, "LSNs must be dense");
        expected = Some(h.lsn() + 1);
        assert_eq!(wal.read(&h).ok().as_deref(), Some(&payload[..]));
        count += 1;
    }
    assert_eq!(count, wal.recovery_report().records);
    let next = wal.next_lsn();
    let h = match wal.append(b"fuzz") {
        Ok(h) => h,
        Err(e) => panic!("append after a clean open failed: {e:?}"),
    };
    assert_eq!(h.lsn(), next);
    drop(wal);
    let wal = match reopen() {
        Ok(wal) => wal,
        Err(e) => panic!("reopen after append failed: {e:?}"),
    };
    assert_eq!(wal.read(&h).ok().as_deref(), Some(&b"fuzz"[..]));
}

/// Target `decode`: run the pure codec on arbitrary bytes: a segment header,
/// then frames one after another. Checks: no panic; anything that decodes
/// re-encodes to the same bytes.
pub fn decode(data: &[u8]) {
    let (identity, mut rest) = match SegmentHeader::decode(data) {
        Ok(h) => {
            assert_eq!(&h.encode()[..], &data[..64]);
            (h.identity(), &data[64..])
        }
        Err(_) => ([7u8; 16], data),
    };
    while let Some(hb) = rest.first_chunk::<40>() {
        let Ok(fh) = format::decode_frame_header(&identity, hb, 1 << 16) else {
            return;
        };
        let Some(payload) = rest.get(40..40 + fh.payload_len as usize) else {
            return;
        };
        if format::check_payload(&identity, hb, &fh, payload).is_err() {
            return;
        }
        let mut out = Vec::new();
        format::encode_frame(&identity, &fh, payload, &mut out);
        assert_eq!(&out[..], &rest[..out.len()]);
        rest = &rest[out.len()..];
    }
}

/// Target `checkpoint`: arbitrary bytes as a checkpoint file, and as a
/// journal event. Checks: no panic; a checkpoint that decodes encodes again
/// and decodes to the same value.
pub fn checkpoint(data: &[u8]) {
    use crate::checkpoint::{Checkpoint, decode_file, encode_file};
    type Graph = std::collections::BTreeMap<String, Vec<u64>>;
    let path = Path::new("fuzz.ckpt");
    if let Ok(c) = decode_file::<Graph>(path, data) {
        let bytes = match encode_file(&c) {
            Ok(bytes) => bytes,
            Err(e) => panic!("a decoded checkpoint failed to encode: {e:?}"),
        };
        let again: Option<Checkpoint<Graph>> = decode_file(path, &bytes).ok();
        assert_eq!(
            again.as_ref(),
            Some(&c),
            "re-encoding changed the checkpoint"
        );
    }
    let _ = crate::codec::decode::<crate::tracker::Event>(data, "journal event");
}

/// Target `journal`: `data` becomes a tracker journal directory (see
/// [`files_from_bytes`]) and the tracker replays it. Checks: no panic; a
/// journal that opens replays to the same state when opened again.
pub fn journal(data: &[u8]) {
    use crate::tracker::BlockTracker;
    let dir = Path::new("/fuzz/ckpt/journal");
    let storage = MemStorage::new();
    for (name, bytes) in files_from_bytes(data) {
        storage.insert_file(&dir.join(name), bytes);
    }
    let shared: Arc<dyn Storage> = Arc::new(storage);
    let first = match BlockTracker::open(
        crate::Location::dir_on(shared.clone(), dir),
        None,
        fuzz_options(),
    ) {
        Ok(t) => t.snapshot(),
        Err(_) => return,
    };
    let again = BlockTracker::open(crate::Location::dir_on(shared, dir), None, fuzz_options())
        .and_then(|t| t.snapshot());
    match (first, again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a journal must replay to the same state"),
        (a, b) => panic!("replay changed its mind: {a:?} then {b:?}"),
    }
}

/// Split `data` into log objects for [`open_object_log`]: the first byte's
/// low bits say which sequence number the first object has (1 to 4) and its
/// next bit whether a floor names it; then objects follow, each a 16-bit
/// little-endian length and that many bytes (at most 4 objects; a short
/// last one takes what is left).
#[cfg(feature = "object-store")]
pub fn objects_from_bytes(data: &[u8]) -> (u64, bool, Vec<Vec<u8>>) {
    let Some((&head, mut rest)) = data.split_first() else {
        return (1, false, Vec::new());
    };
    let first = u64::from(head & 3) + 1;
    let floor = head & 4 != 0;
    let mut objects = Vec::new();
    while objects.len() < 4 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        objects.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    (first, floor, objects)
}

/// The inverse of [`objects_from_bytes`] (used to turn real logs into seeds).
#[cfg(feature = "object-store")]
pub fn bytes_from_objects(first: u64, floor: bool, objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![((first.clamp(1, 4) - 1) as u8) | if floor { 4 } else { 0 }];
    for o in objects.iter().take(4) {
        let len = u16::try_from(o.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&o[..usize::from(len)]);
    }
    out
}

/// Target `open_object_log`: `data` becomes the objects of a log on an
/// in-memory object store (see [`objects_from_bytes`]); open it read-only
/// (salvage) and as a writer and read everything. Checks: no panic; only
/// `Corruption` errors; after a successful open every iterated record reads
/// back identically by handle, LSNs are dense, and a new append lands at the
/// next LSN and survives a reopen.
#[cfg(feature = "object-store")]
pub fn open_object_log(data: &[u8]) {
    use crate::object::{ObjectLocation, log_object_name};
    use object_store::ObjectStore;
    let (first, floor, objects) = objects_from_bytes(data);
    let store = Arc::new(object_store::memory::InMemory::new());
    let loc = || {
        ObjectLocation::with_store(store.clone() as Arc<dyn ObjectStore>, "fuzz/log")
            .expect("a valid prefix")
    };
    let planter = loc();
    for (i, bytes) in objects.into_iter().enumerate() {
        let name = log_object_name(first + i as u64);
        planter.put_new(&name, bytes).expect("memory store");
    }
    if floor {
        planter
            .put_new(&format!("floor-{first:020}"), Vec::new())
            .expect("memory store");
    }
    let options = WalOptions {
        max_record_bytes: 64 << 10,
        max_batch_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..options.clone()
    };
    if let Ok(wal) = Wal::open(loc(), salvage) {
        for (h, payload) in wal.iter().flatten() {
            assert_eq!(h.len() as usize, payload.len());
        }
    }
    let wal = match Wal::open(loc(), options.clone()) {
        Ok(wal) => wal,
        Err(Error::Corruption { .. } | Error::LsnExhausted) => return,
        Err(e) => panic!("open failed with a non-corruption error: {e:?}"),
    };
    check_clean_log(wal, || Wal::open(loc(), options));
}

/// Target `state`: arbitrary bytes as a state delta, as a state snapshot
/// file, and as the segments of a state log (see [`files_from_bytes`])
/// that a [`crate::StateStore`] recovers. Checks: no panic; a delta or a
/// snapshot that decodes encodes again to the same value; a state that
/// opens recovers to the same version and operators when opened again.
pub fn state(data: &[u8]) {
    use crate::checkpoint::{Checkpoint, decode_file, encode_file};
    use crate::state::{SnapshotBody, StateDelta, StateOptions, StateStore, decode_delta};
    let path = Path::new("fuzz.state");
    if let Ok(delta) = decode_delta(path, data) {
        let bytes = match crate::codec::encode(&delta, "state delta") {
            Ok(b) => b,
            Err(e) => panic!("a decoded delta failed to encode: {e:?}"),
        };
        let again: Option<StateDelta> = decode_delta(path, &bytes).ok();
        assert_eq!(
            again.as_ref(),
            Some(&delta),
            "re-encoding changed the delta"
        );
    }
    if let Ok(c) = decode_file::<SnapshotBody>(path, data) {
        let bytes = match encode_file(&c) {
            Ok(b) => b,
            Err(e) => panic!("a decoded snapshot failed to encode: {e:?}"),
        };
        let again: Option<Checkpoint<SnapshotBody>> = decode_file(path, &bytes).ok();
        assert_eq!(again.as_ref(), Some(&c), "re-encoding changed the snapshot");
    }
    let dir = Path::new("/fuzz/state");
    let storage = MemStorage::new();
    for (name, bytes) in files_from_bytes(data) {
        storage.insert_file(&dir.join(crate::state::STATE_LOG_NAME).join(name), bytes);
    }
    let shared: Arc<dyn Storage> = Arc::new(storage);
    let opts = StateOptions {
        log: fuzz_options(),
        ..StateOptions::default()
    };
    let seen = |store: &StateStore| (store.version(), store.operators());
    let first = match StateStore::open(crate::Location::dir_on(shared.clone(), dir), opts.clone()) {
        Ok(store) => seen(&store),
        Err(_) => return,
    };
    match StateStore::open(crate::Location::dir_on(shared, dir), opts) {
        Ok(store) => assert_eq!(seen(&store), first, "a state must recover the same twice"),
        Err(e) => panic!("a state that opened once failed to open again: {e:?}"),
    }
}
