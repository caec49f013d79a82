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
use super::packed::Packed;
use super::record::{self, SnapshotRef};
use crate::checkpoint::{CheckpointStore, GraphEncoding};
use crate::codec;
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::Wal;
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
    /// Sorted by key, each key once, every one present.
    entries: Packed,
    /// Changes not folded in yet, in log order.
    changes: Packed,
}

impl Building {
    fn folded_if_due(&mut self) {
        if self.changes.len() >= FOLD_CHANGES_MIN.max(self.entries.len()) {
            self.fold();
        }
    }

    /// Merge the pending changes into the entries: the last change of each
    /// key wins, a removal drops it.
    fn fold(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        let entries = std::mem::take(&mut self.entries);
        let order = changes.sorted_order();
        let mut out = Packed::with_capacity(
            entries.len() + changes.len(),
            entries.byte_len() + changes.byte_len(),
        );
        let mut next = 0; // the next entry not yet copied or replaced
        for (n, &i) in order.iter().enumerate() {
            let key = changes.key(i);
            if order.get(n + 1).is_some_and(|&j| changes.key(j) == key) {
                continue; // a later change of the same key wins
            }
            while next < entries.len() && entries.key(next) < key {
                let (k, slot) = entries.get(next);
                out.push(k, slot);
                next += 1;
            }
            if next < entries.len() && entries.key(next) == key {
                next += 1; // replaced or removed
            }
            if let Some(slot) = changes.slot(i) {
                out.push(key, Some(slot));
            }
        }
        for e in next..entries.len() {
            let (k, slot) = entries.get(e);
            out.push(k, slot);
        }
        self.entries = out;
    }

    fn finish(mut self) -> Raw {
        self.fold();
        Raw::Recovered(Arc::new(RecoveredEntries::new(self.entries)))
    }
}

/// A snapshot as recovery keeps it: per operator, its entries packed in
/// key-byte order.
struct PackedSnapshot {
    state_id: u64,
    batch_time: u64,
    log_lsn: u64,
    operators: Vec<(String, Packed)>,
}

/// Decode and check a snapshot's body; an error makes recovery skip the
/// snapshot (and report it) for an older one and more deltas.
fn decode_snapshot(
    path: &Path,
    encoding: GraphEncoding,
    ckpt: &crate::checkpoint::Checkpoint<Vec<u8>>,
) -> Result<PackedSnapshot> {
    let bad = |why| Error::corruption(path, 0, CorruptionKind::BadHeader(why));
    if encoding != GraphEncoding::Bincode {
        return Err(bad("a state snapshot's body is not bincode"));
    }
    record::check_format(path, ckpt.graph_version)?;
    let body: SnapshotRef<'_> = codec::decode_borrowed(&ckpt.graph, "state snapshot")?;
    record::check_format(path, body.format)?;
    if body.batch_time != ckpt.batch_time || body.log_lsn != ckpt.journal_lsn {
        return Err(bad("snapshot body and header disagree"));
    }
    let mut operators = Vec::with_capacity(body.operators.len());
    for (name, entries) in body.operators {
        let bytes = entries.iter().map(|(k, s)| k.len() + s.value.len()).sum();
        let mut packed = Packed::with_capacity(entries.len(), bytes);
        for (key, slot) in &entries {
            packed.push(key, Some(slot.view()));
        }
        // The entries are in the operator's key order, which is the byte
        // order only for some key types.
        if !packed.is_strictly_sorted() {
            let mut sorted = Packed::with_capacity(packed.len(), packed.byte_len());
            let order = packed.sorted_order();
            for (n, &i) in order.iter().enumerate() {
                if order
                    .get(n + 1)
                    .is_some_and(|&j| packed.key(j) == packed.key(i))
                {
                    return Err(bad("a state snapshot holds a key twice"));
                }
                let (k, slot) = packed.get(i);
                sorted.push(k, slot);
            }
            packed = sorted;
        }
        operators.push((name.to_string(), packed));
    }
    Ok(PackedSnapshot {
        state_id: body.state_id,
        batch_time: body.batch_time,
        log_lsn: body.log_lsn,
        operators,
    })
}

/// Recover from `snapshots` and `log`, filling in `report`'s snapshot and
/// delta fields.
pub(super) fn recover(
    log: &Wal,
    snapshots: &CheckpointStore,
    report: &mut StateReport,
) -> Result<Recovered> {
    let latest = snapshots
        .latest_by(|path, header, raw| decode_snapshot(path, header.graph_encoding, raw))?;
    report.snapshots_skipped = latest.skipped;
    let mut building: BTreeMap<String, Building> = BTreeMap::new();
    let (mut state_id, mut version, mut last_lsn) = (None, None, 0);
    if let Some((path, ckpt)) = latest.checkpoint {
        let body = ckpt.graph;
        for (name, entries) in body.operators {
            let op = building.entry(name).or_default();
            if op.entries.is_empty() {
                op.entries = entries;
            } else {
                // The same operator listed twice: the later list wins, as a
                // replay in order would have it.
                for i in 0..entries.len() {
                    let (k, slot) = entries.get(i);
                    op.changes.push(k, slot);
                }
                op.fold();
            }
        }
        report.snapshot_used = Some((path, body.batch_time));
        (state_id, version, last_lsn) = (Some(body.state_id), Some(body.batch_time), body.log_lsn);
    }
    let log_path = log.location().display_path();
    if let Err(e) = check_log_covers(log, &log_path, last_lsn) {
        // With newer snapshots skipped, the reason one was skipped is the
        // cause to report, not the log that does not reach back far enough.
        if report.snapshot_used.is_none() && !report.snapshots_skipped.is_empty() {
            return Err(report.snapshots_skipped.remove(0).reason);
        }
        return Err(e);
    }
    for item in log.iter_from(last_lsn + 1) {
        let (handle, payload) = item?;
        // Errors about one delta name its segment and offset (on object
        // storage, the log and the record's position in it).
        let file = match log.location().path() {
            Some(dir) => dir.join(crate::wal::segment_file_name(handle.segment())),
            None => log_path.clone(),
        };
        let bad = |why| Error::corruption(&file, handle.offset(), CorruptionKind::BadHeader(why));
        let delta = record::decode_delta_ref(&file, &payload)?;
        if *state_id.get_or_insert(delta.state_id) != delta.state_id {
            return Err(bad(
                "a state delta belongs to another context (its state id differs)",
            ));
        }
        if version.is_some_and(|v| delta.batch_time <= v) {
            return Err(bad("state deltas are out of batch order"));
        }
        for (name, changes) in delta.operators {
            let op = match building.get_mut(name) {
                Some(op) => op,
                None => building.entry(name.to_string()).or_default(),
            };
            for (key, slot) in &changes {
                op.changes.push(key, slot.as_ref().map(|s| s.view()));
            }
            op.folded_if_due();
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

    /// Folding in bulk gives what applying each change in order to a
    /// `BTreeMap` gives.
    #[test]
    fn fold_is_replay_in_order() {
        let mut model: BTreeMap<u8, u8> = BTreeMap::new();
        let mut b = Building::default();
        let mut x: u32 = 12345;
        for round in 0..40 {
            for _ in 0..(round % 7 + 1) * 5 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let key = (x >> 16) as u8 % 31;
                let value = (!x.is_multiple_of(5)).then_some((x >> 8) as u8);
                match value {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
                let v = value.map(|v| [v]);
                b.changes.push(&[key], v.as_ref().map(|v| (&v[..], None)));
            }
            if round % 9 == 0 {
                b.fold();
            }
        }
        b.fold();
        let got: BTreeMap<u8, u8> = (0..b.entries.len())
            .map(|i| {
                let (k, slot) = b.entries.get(i);
                (k[0], slot.expect("present").0[0])
            })
            .collect();
        assert_eq!(got, model);
        assert!(b.entries.is_strictly_sorted());
    }
}
