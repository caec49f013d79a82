//! Recovery of the state store: the newest snapshot that passes its checks,
//! then every delta after it, in order.
//!
//! Replaying a million changes one key at a time into an ordered map costs
//! seconds (a cache miss per level per key); recovery instead keeps each
//! operator as sorted entries and folds the deltas' changes into them in
//! bulk: a stable sort of the changes by key (so the last batch's change of
//! a key wins), then one merge with the entries. The result is handed to
//! the operator as it is ([`Raw::Recovered`]); registering the operator
//! decodes it once.

use super::StateReport;
use super::operator::{Raw, RecoveredEntries};
use super::record::{self, RawChange, RawEntry, SnapshotBody};
use crate::checkpoint::CheckpointStore;
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::Wal;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Fold pending changes into the entries once there are this many of them
/// and at least as many as entries: bounds the memory of a long log while
/// keeping the number of merges small.
const FOLD_CHANGES_MIN: usize = 1 << 16;

/// What recovery hands the store.
pub(super) struct Recovered {
    pub(super) operators: BTreeMap<String, Raw>,
    pub(super) state_id: Option<u64>,
    pub(super) version: Option<u64>,
    pub(super) last_lsn: u64,
}

/// One operator being rebuilt.
#[derive(Default)]
struct Building {
    /// Sorted by key, each key once.
    entries: Vec<RawEntry>,
    /// Changes not folded in yet, in log order.
    changes: Vec<RawChange>,
}

impl Building {
    fn push(&mut self, changes: Vec<RawChange>) {
        self.changes.extend(changes);
        if self.changes.len() >= FOLD_CHANGES_MIN.max(self.entries.len()) {
            self.fold();
        }
    }

    /// Merge the pending changes into the entries.
    fn fold(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let mut changes = std::mem::take(&mut self.changes);
        // Sort positions, not the changes: comparisons mostly read the
        // keys' first bytes from the array instead of chasing each key's
        // heap copy, and no change moves. Ties on position keep log order,
        // so of a key's changes the last in the log stays last.
        let mut order: Vec<(u64, usize)> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (key_prefix(&c.key), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| changes[a.1].key.cmp(&changes[b.1].key))
                .then(a.1.cmp(&b.1))
        });
        let entries = std::mem::take(&mut self.entries);
        let mut out = Vec::with_capacity(entries.len() + changes.len());
        let mut entries = entries.into_iter().peekable();
        for (n, &(_, i)) in order.iter().enumerate() {
            let later = order.get(n + 1).map(|&(_, j)| j);
            if later.is_some_and(|j| changes[j].key == changes[i].key) {
                continue; // a later change of the same key wins
            }
            let key = std::mem::take(&mut changes[i].key);
            while let Some(e) = entries.next_if(|e| e.key < key) {
                out.push(e);
            }
            entries.next_if(|e| e.key == key); // replaced or removed
            if let Some(slot) = changes[i].slot.take() {
                out.push(RawEntry { key, slot });
            }
        }
        out.extend(entries);
        self.entries = out;
    }

    fn finish(mut self) -> Raw {
        self.fold();
        Raw::Recovered(Arc::new(RecoveredEntries::new(self.entries)))
    }
}

/// Recover from `snapshots` and `log`, filling in `report`'s snapshot and
/// delta fields.
pub(super) fn recover(
    log: &Wal,
    snapshots: &CheckpointStore,
    report: &mut StateReport,
) -> Result<Recovered> {
    let latest = snapshots.latest::<SnapshotBody>()?;
    report.snapshots_skipped = latest.skipped;
    let mut building: BTreeMap<String, Building> = BTreeMap::new();
    let (mut state_id, mut version, mut last_lsn) = (None, None, 0);
    if let Some((path, ckpt)) = latest.checkpoint {
        let body = ckpt.graph;
        record::check_format(&path, ckpt.graph_version)?;
        record::check_format(&path, body.format)?;
        if body.batch_time != ckpt.batch_time || body.log_lsn != ckpt.journal_lsn {
            return Err(Error::corruption(
                &path,
                0,
                CorruptionKind::BadHeader("snapshot body and header disagree"),
            ));
        }
        for (name, entries) in body.operators {
            let entries = sorted_entries(&path, entries)?;
            let op = building.entry(name).or_default();
            if op.entries.is_empty() {
                op.entries = entries;
            } else {
                // The same operator listed twice: keep both, as a replay
                // in order would.
                op.push(entries.into_iter().map(RawChange::from).collect());
            }
        }
        report.snapshot_used = Some((path, body.batch_time));
        (state_id, version, last_lsn) = (Some(body.state_id), Some(body.batch_time), body.log_lsn);
    }
    let log_path = log.location().display_path();
    check_log_covers(log, &log_path, last_lsn)?;
    for item in log.iter_from(last_lsn + 1) {
        let (handle, payload) = item?;
        // Errors about one delta name its segment and offset (on object
        // storage, the log and the record's position in it).
        let file = match log.location().path() {
            Some(dir) => dir.join(crate::wal::segment_file_name(handle.segment())),
            None => log_path.clone(),
        };
        let bad = |why| Error::corruption(&file, handle.offset(), CorruptionKind::BadHeader(why));
        let delta = record::decode_delta(&file, &payload)?;
        if *state_id.get_or_insert(delta.state_id) != delta.state_id {
            return Err(bad(
                "a state delta belongs to another context (its state id differs)",
            ));
        }
        if version.is_some_and(|v| delta.batch_time <= v) {
            return Err(bad("state deltas are out of batch order"));
        }
        for (name, changes) in delta.operators {
            building.entry(name).or_default().push(changes);
        }
        version = Some(delta.batch_time);
        last_lsn = handle.lsn();
        report.deltas_replayed.push(delta.batch_time);
    }
    Ok(Recovered {
        operators: building
            .into_iter()
            .map(|(name, b)| (name, b.finish()))
            .collect(),
        state_id,
        version,
        last_lsn,
    })
}

/// A key's first 8 bytes (zero-padded) as a big-endian number: where two
/// differ, they order the keys as the bytes do.
fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl From<RawEntry> for RawChange {
    fn from(e: RawEntry) -> Self {
        RawChange {
            key: e.key,
            slot: Some(e.slot),
        }
    }
}

/// A snapshot's entries of one operator sorted by key bytes (they are in
/// the operator's key order, which is the byte order only for some key
/// types). A key listed twice is a damaged snapshot.
fn sorted_entries(path: &Path, mut entries: Vec<RawEntry>) -> Result<Vec<RawEntry>> {
    if entries.is_sorted_by(|a, b| a.key < b.key) {
        return Ok(entries);
    }
    entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    if entries
        .windows(2)
        .any(|w| w[0].key.cmp(&w[1].key) == Ordering::Equal)
    {
        return Err(Error::corruption(
            path,
            0,
            CorruptionKind::BadHeader("a state snapshot holds a key twice"),
        ));
    }
    Ok(entries)
}

/// The log must hold every record after `covered` (the snapshot's LSN):
/// not end before it, and not start after the next one.
fn check_log_covers(log: &Wal, log_path: &Path, covered: u64) -> Result<()> {
    let last = log.next_lsn().saturating_sub(1);
    if last < covered {
        return Err(Error::corruption(
            log_path,
            0,
            CorruptionKind::LogTooShort {
                needed: covered,
                last,
            },
        ));
    }
    let needed = covered + 1;
    if last >= needed {
        let first = log.first_lsn().unwrap_or(0);
        if first == 0 || first > needed {
            return Err(Error::corruption(
                log_path,
                0,
                CorruptionKind::LogStartsTooLate { needed, first },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::RawSlot;

    fn change(key: u8, value: Option<u8>) -> RawChange {
        RawChange {
            key: vec![key],
            slot: value.map(|v| RawSlot {
                value: vec![v],
                expires_at: None,
            }),
        }
    }

    /// Folding in bulk gives what applying each change in order to a
    /// `BTreeMap` gives.
    #[test]
    fn fold_is_replay_in_order() {
        let mut model: BTreeMap<u8, u8> = BTreeMap::new();
        let mut b = Building::default();
        let mut x: u32 = 12345;
        for round in 0..40 {
            let mut batch = Vec::new();
            for _ in 0..(round % 7 + 1) * 5 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (x >> 16) as u8 % 31;
                let value = if x.is_multiple_of(5) {
                    None
                } else {
                    Some((x >> 8) as u8)
                };
                match value {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
                batch.push(change(key, value));
            }
            b.push(batch);
            if round % 9 == 0 {
                b.fold();
            }
        }
        b.fold();
        let got: BTreeMap<u8, u8> = b
            .entries
            .iter()
            .map(|e| (e.key[0], e.slot.value[0]))
            .collect();
        assert_eq!(got, model);
        assert!(b.entries.is_sorted_by(|a, b| a.key < b.key));
    }
}
