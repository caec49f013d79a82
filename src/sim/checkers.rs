//! Built-in checkers for the crate's promises, and recording helpers that
//! drive the crate and record what was attempted and acknowledged.
//!
//! Each checker recovers from the crashed storage with the production
//! constructor and returns `Err(message)` naming the first broken promise.

use super::harness::Recorder;
use crate::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore};
use crate::storage::Storage;
use crate::tracker::{BatchBlocks, BlockInfo, BlockTracker, TrackerState};
use crate::{RecordHandle, Result, Wal, WalOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The payload the WAL checker appends after recovery to prove the log takes
/// appends again; accepted after every workload record.
pub const PROBE_PAYLOAD: &[u8] = b"streamwal-sim-probe";

/// What a WAL workload did, for [`check_wal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEvent {
    /// An append of this payload was started (its fate may be unknown).
    Appending(Vec<u8>),
    /// The append returned `Ok` with this handle.
    Acked {
        /// The handle append returned.
        handle: RecordHandle,
        /// The payload.
        payload: Vec<u8>,
    },
    /// `purge_before_lsn(before_lsn)` was started.
    Purging {
        /// The bound passed.
        before_lsn: u64,
    },
}

/// Append `payload` to `wal` (with record time 0, so the bytes written are
/// the same in every run and a replay is exact), recording the attempt and,
/// on `Ok`, the acknowledgement. Under [`crate::SyncPolicy::Always`] `Ok`
/// means durable; under the relaxed policies record acknowledgements after
/// `sync()` yourself instead.
///
/// # Errors
/// As [`Wal::append`].
pub fn append_recorded(
    wal: &Wal,
    rec: &Recorder<WalEvent>,
    payload: &[u8],
) -> Result<RecordHandle> {
    rec.record(WalEvent::Appending(payload.to_vec()));
    let handle = wal.append_at(payload, 0)?;
    rec.record(WalEvent::Acked {
        handle,
        payload: payload.to_vec(),
    });
    Ok(handle)
}

/// Append `payloads` as one batch, recording the attempts and, on `Ok`,
/// every acknowledgement.
///
/// # Errors
/// As [`Wal::append_batch`].
pub fn append_batch_recorded(
    wal: &Wal,
    rec: &Recorder<WalEvent>,
    payloads: &[Vec<u8>],
) -> Result<Vec<RecordHandle>> {
    for p in payloads {
        rec.record(WalEvent::Appending(p.clone()));
    }
    let handles = wal.append_batch_at(payloads, 0)?;
    for (handle, payload) in handles.iter().zip(payloads) {
        rec.record(WalEvent::Acked {
            handle: *handle,
            payload: payload.clone(),
        });
    }
    Ok(handles)
}

/// `purge_before_lsn(before_lsn)`, recorded.
///
/// # Errors
/// As [`Wal::purge_before_lsn`].
pub fn purge_recorded(wal: &Wal, rec: &Recorder<WalEvent>, before_lsn: u64) -> Result<usize> {
    rec.record(WalEvent::Purging { before_lsn });
    wal.purge_before_lsn(before_lsn)
}

/// A checker for the harness: [`check_wal`] on `dir` with `opts`.
pub fn wal_checker(
    dir: impl AsRef<Path>,
    opts: WalOptions,
) -> impl Fn(Arc<dyn Storage>, &[WalEvent]) -> std::result::Result<(), String> + Sync {
    let dir: PathBuf = dir.as_ref().to_path_buf();
    move |storage, events| check_wal(storage, &dir, &opts, events)
}

/// The WAL promise after a crash: open the log in `dir` (recovery), then
/// check that every acknowledged record is there byte for byte at its LSN
/// and readable by its handle, that the records form a dense LSN run with no
/// hole, that every record returned was appended (payloads are matched as a
/// multiset, so a workload should use distinct payloads), that records are
/// missing at the front only below a purge bound that was attempted, and
/// that the next LSN is past every acknowledged one (no LSN reuse). Then
/// append [`PROBE_PAYLOAD`] and check it lands at the next LSN.
///
/// # Errors
/// A message naming the broken promise.
pub fn check_wal(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &WalOptions,
    events: &[WalEvent],
) -> std::result::Result<(), String> {
    let wal = Wal::open(crate::Location::dir_on(storage, dir), opts.clone())
        .map_err(|e| format!("recovery failed: {e}"))?;
    let mut got: Vec<(RecordHandle, Vec<u8>)> = Vec::new();
    for item in wal.iter() {
        got.push(item.map_err(|e| format!("iterating after recovery failed: {e}"))?);
    }
    let mut attempted: HashMap<&[u8], usize> = HashMap::new();
    let mut acked: BTreeMap<u64, (&RecordHandle, &[u8])> = BTreeMap::new();
    let mut purge_bound = 1;
    for e in events {
        match e {
            WalEvent::Appending(p) => *attempted.entry(p).or_default() += 1,
            WalEvent::Acked { handle, payload } => {
                acked.insert(handle.lsn(), (handle, payload));
            }
            WalEvent::Purging { before_lsn } => purge_bound = purge_bound.max(*before_lsn),
        }
    }
    let first = got.first().map(|(h, _)| h.lsn());
    if let Some(first) = first
        && first > purge_bound
    {
        return Err(format!(
            "the log starts at LSN {first}, but no purge reached past {purge_bound}"
        ));
    }
    let mut probes_started = false;
    for (i, (h, p)) in got.iter().enumerate() {
        let expected = first.unwrap_or(1) + i as u64;
        if h.lsn() != expected {
            return Err(format!("hole: LSN {} where {expected} belongs", h.lsn()));
        }
        if let Some((_, want)) = acked.get(&h.lsn())
            && want != &p.as_slice()
        {
            return Err(format!(
                "acknowledged record {} came back with different bytes ({} bytes, not {})",
                h.lsn(),
                p.len(),
                want.len()
            ));
        }
        if p == PROBE_PAYLOAD {
            probes_started = true;
            continue;
        }
        if probes_started {
            return Err(format!("record {} follows a recovery probe", h.lsn()));
        }
        match attempted.get_mut(p.as_slice()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                return Err(format!(
                    "record {} ({} bytes) was never appended (or came back twice)",
                    h.lsn(),
                    p.len()
                ));
            }
        }
    }
    let next = wal.next_lsn();
    for (&lsn, (handle, payload)) in &acked {
        if lsn >= next {
            return Err(format!(
                "acknowledged record {lsn} lost: the log ends before it (next LSN {next})"
            ));
        }
        match first {
            Some(f) if lsn >= f => {}
            _ if lsn < purge_bound => continue,
            _ => return Err(format!("acknowledged record {lsn} lost (not purged)")),
        }
        match wal.read(handle) {
            Ok(bytes) if bytes == *payload => {}
            Ok(_) => return Err(format!("acknowledged record {lsn} reads back different")),
            Err(e) => return Err(format!("acknowledged record {lsn} unreadable: {e}")),
        }
    }
    let probe = wal
        .append_at(PROBE_PAYLOAD, 0)
        .map_err(|e| format!("append after recovery failed: {e}"))?;
    if probe.lsn() != next {
        return Err(format!(
            "append after recovery got LSN {}, expected {next}",
            probe.lsn()
        ));
    }
    wal.close()
        .map_err(|e| format!("close after recovery failed: {e}"))
}

/// What a checkpoint workload did, for [`check_checkpoints`].
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointEvent<G> {
    /// A write of this checkpoint was started.
    Writing(Checkpoint<G>),
    /// The write of the checkpoint at this batch time returned `Ok`.
    Written {
        /// Its batch time.
        batch_time: u64,
    },
}

/// Write `ckpt` to `store`, recorded.
///
/// # Errors
/// As [`CheckpointStore::write`].
pub fn write_checkpoint_recorded<G: Serialize + Clone>(
    store: &CheckpointStore,
    rec: &Recorder<CheckpointEvent<G>>,
    ckpt: &Checkpoint<G>,
) -> Result<PathBuf> {
    rec.record(CheckpointEvent::Writing(ckpt.clone()));
    let path = store.write(ckpt)?;
    rec.record(CheckpointEvent::Written {
        batch_time: ckpt.batch_time,
    });
    Ok(path)
}

/// A checker for the harness: [`check_checkpoints`] on `dir` with `opts`.
pub fn checkpoint_checker<G>(
    dir: impl AsRef<Path>,
    opts: CheckpointOptions,
) -> impl Fn(Arc<dyn Storage>, &[CheckpointEvent<G>]) -> std::result::Result<(), String> + Sync
where
    G: DeserializeOwned + PartialEq + Debug,
{
    let dir: PathBuf = dir.as_ref().to_path_buf();
    move |storage, events| check_checkpoints(storage, &dir, &opts, events)
}

/// The checkpoint promise after a crash: open the store in `dir` and read
/// [`CheckpointStore::latest`]; it must be a checkpoint that was completely
/// written (equal to one whose write started), not older than the last one
/// whose write returned `Ok`, with no checkpoint file skipped as damaged
/// (a checkpoint's name appears only after its bytes are durable).
///
/// # Errors
/// A message naming the broken promise.
pub fn check_checkpoints<G>(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &CheckpointOptions,
    events: &[CheckpointEvent<G>],
) -> std::result::Result<(), String>
where
    G: DeserializeOwned + PartialEq + Debug,
{
    let store = CheckpointStore::open(crate::Location::dir_on(storage, dir), opts.clone())
        .map_err(|e| format!("opening the store failed: {e}"))?;
    let latest = store
        .latest::<G>()
        .map_err(|e| format!("latest() failed: {e}"))?;
    if let Some(s) = latest.skipped.first() {
        return Err(format!(
            "checkpoint file {} skipped: {}",
            s.file.display(),
            s.reason
        ));
    }
    let last_ok = events.iter().rev().find_map(|e| match e {
        CheckpointEvent::Written { batch_time } => Some(*batch_time),
        CheckpointEvent::Writing(_) => None,
    });
    match (latest.checkpoint, last_ok) {
        (None, None) => Ok(()),
        (None, Some(t)) => Err(format!(
            "no checkpoint after recovery, but the write at batch time {t} returned Ok"
        )),
        (Some((path, got)), last_ok) => {
            if let Some(t) = last_ok
                && got.batch_time < t
            {
                return Err(format!(
                    "latest() is batch time {} ({}), older than {t} whose write returned Ok",
                    got.batch_time,
                    path.display()
                ));
            }
            let written = events.iter().any(|e| match e {
                CheckpointEvent::Writing(c) => *c == got,
                CheckpointEvent::Written { .. } => false,
            });
            if written {
                Ok(())
            } else {
                Err(format!(
                    "latest() ({}) is not a checkpoint that was written",
                    path.display()
                ))
            }
        }
    }
}

/// What a tracker workload did, for [`check_tracker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerEvent {
    /// `add_block` was started.
    Adding(BlockInfo),
    /// `add_block` returned `Ok`.
    Added(BlockInfo),
    /// `allocate_blocks_to_batch` was started for this batch time.
    Allocating(u64),
    /// `allocate_blocks_to_batch` returned `Ok` with these blocks.
    Allocated {
        /// The batch time.
        batch_time: u64,
        /// The blocks it returned.
        blocks: BatchBlocks,
    },
    /// `commit_batch` was started for this batch time.
    Committing(u64),
    /// `commit_batch` returned `Ok`.
    Committed(u64),
}

/// `add_block`, recorded.
///
/// # Errors
/// As [`BlockTracker::add_block`].
pub fn add_block_recorded(
    tracker: &BlockTracker,
    rec: &Recorder<TrackerEvent>,
    block: BlockInfo,
) -> Result<()> {
    rec.record(TrackerEvent::Adding(block.clone()));
    tracker.add_block(block.clone())?;
    rec.record(TrackerEvent::Added(block));
    Ok(())
}

/// `allocate_blocks_to_batch`, recorded.
///
/// # Errors
/// As [`BlockTracker::allocate_blocks_to_batch`].
pub fn allocate_recorded(
    tracker: &BlockTracker,
    rec: &Recorder<TrackerEvent>,
    batch_time: u64,
) -> Result<BatchBlocks> {
    rec.record(TrackerEvent::Allocating(batch_time));
    let blocks = tracker.allocate_blocks_to_batch(batch_time)?;
    rec.record(TrackerEvent::Allocated {
        batch_time,
        blocks: blocks.clone(),
    });
    Ok(blocks)
}

/// `commit_batch`, recorded.
///
/// # Errors
/// As [`BlockTracker::commit_batch`].
pub fn commit_recorded(
    tracker: &BlockTracker,
    rec: &Recorder<TrackerEvent>,
    batch_time: u64,
) -> Result<()> {
    rec.record(TrackerEvent::Committing(batch_time));
    tracker.commit_batch(batch_time)?;
    rec.record(TrackerEvent::Committed(batch_time));
    Ok(())
}

/// A checker for the harness: [`check_tracker`] on `dir` with `opts`.
pub fn tracker_checker(
    dir: impl AsRef<Path>,
    opts: WalOptions,
) -> impl Fn(Arc<dyn Storage>, &[TrackerEvent]) -> std::result::Result<(), String> + Sync {
    let dir: PathBuf = dir.as_ref().to_path_buf();
    move |storage, events| check_tracker(storage, &dir, &opts, events)
}

/// The tracker promise after a crash (journal only, no checkpoint): open the
/// tracker in `dir` and check that every acknowledged block is recoverable
/// exactly once (unallocated, or in exactly one allocated batch), that every
/// block it knows was added, that every acknowledged allocation holds exactly
/// the blocks it returned (allocations never change), that every allocated
/// batch was being allocated, and that every acknowledged commit is there and
/// every commit was started.
///
/// # Errors
/// A message naming the broken promise.
pub fn check_tracker(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &WalOptions,
    events: &[TrackerEvent],
) -> std::result::Result<(), String> {
    let tracker = BlockTracker::open(crate::Location::dir_on(storage, dir), None, opts.clone())
        .map_err(|e| format!("opening the tracker failed: {e}"))?;
    let (state, _) = tracker
        .snapshot()
        .map_err(|e| format!("snapshot failed: {e}"))?;
    check_tracker_state(&state, events)
}

/// The checks of [`check_tracker`] on a recovered state (from
/// [`BlockTracker::snapshot`], e.g. of a tracker recovered from a checkpoint
/// plus the journal). The workload must not clean up (`cleanup` forgets
/// blocks on purpose).
///
/// # Errors
/// A message naming the broken promise.
pub fn check_tracker_state(
    state: &TrackerState,
    events: &[TrackerEvent],
) -> std::result::Result<(), String> {
    let mut seen: HashMap<&BlockInfo, usize> = HashMap::new();
    let all = state
        .unallocated
        .values()
        .chain(state.allocated.values().flat_map(|b| b.values()));
    for list in all {
        for b in list {
            *seen.entry(b).or_default() += 1;
        }
    }
    let mut adding = BTreeSet::new();
    let mut allocating = BTreeSet::new();
    let mut committing = BTreeSet::new();
    for e in events {
        match e {
            TrackerEvent::Adding(b) => {
                adding.insert(b.handle);
            }
            TrackerEvent::Allocating(t) => {
                allocating.insert(*t);
            }
            TrackerEvent::Committing(t) => {
                committing.insert(*t);
            }
            _ => {}
        }
    }
    for (b, n) in &seen {
        if *n > 1 {
            return Err(format!("block {:?} recovered {n} times", b.handle));
        }
        if !adding.contains(&b.handle) {
            return Err(format!("block {:?} was never added", b.handle));
        }
    }
    for e in events {
        match e {
            TrackerEvent::Added(b) if !seen.contains_key(b) => {
                return Err(format!("acknowledged block {:?} lost", b.handle));
            }
            TrackerEvent::Allocated { batch_time, blocks } => {
                match state.allocated.get(batch_time) {
                    Some(got) if got == blocks => {}
                    Some(_) => {
                        return Err(format!(
                            "the allocation of batch {batch_time} changed after recovery"
                        ));
                    }
                    // An allocation that found no blocks journals nothing.
                    None if blocks.is_empty() => {}
                    None => return Err(format!("acknowledged allocation {batch_time} lost")),
                }
            }
            TrackerEvent::Committed(t) if !state.committed.contains(t) => {
                return Err(format!("acknowledged commit of batch {t} lost"));
            }
            _ => {}
        }
    }
    if let Some(t) = state.allocated.keys().find(|t| !allocating.contains(*t)) {
        return Err(format!("batch {t} allocated but never being allocated"));
    }
    if let Some(t) = state.committed.iter().find(|t| !committing.contains(*t)) {
        return Err(format!("batch {t} committed but never being committed"));
    }
    Ok(())
}
