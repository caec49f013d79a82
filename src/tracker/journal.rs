//! The block tracker over its journal (a second write-ahead log).

use super::inflight::InFlight;
use super::state::{BatchBlocks, BlockInfo, Event, TrackerState};
use crate::codec;
use crate::error::{CorruptionKind, Error, Result};
use crate::wal::{SyncPolicy, Wal, WalOptions};
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tracks received blocks and their allocation to batches, journaling every
/// change durably before it takes effect, like Spark's `ReceivedBlockTracker`
/// plus an output commit log.
///
/// Every method that changes the state appends one event to the journal under
/// [`crate::SyncPolicy::Always`] (concurrent calls share one `fdatasync`) and
/// returns only once it is durable. Events are applied to the in-memory state
/// in journal (LSN) order, so replaying the journal rebuilds exactly the
/// state the live tracker had. `BlockTracker` is `Send + Sync`.
#[derive(Debug)]
pub struct BlockTracker {
    journal: Wal,
    inner: Mutex<Inner>,
    applied: Condvar,
    allocating: Mutex<()>,
    replay: JournalReplay,
    in_flight: InFlight,
}

#[derive(Debug)]
struct Inner {
    state: TrackerState,
    /// Every event with an LSN up to this one is applied to `state`.
    applied_lsn: u64,
    /// Durable events waiting for an earlier LSN to be applied first.
    waiting: BTreeMap<u64, Event>,
}

/// What opening the tracker replayed.
#[derive(Debug, Clone, Default)]
pub struct JournalReplay {
    /// Journal events applied on top of the snapshot.
    pub events_replayed: u64,
    /// The journal's own recovery (torn bytes and the like).
    pub journal: crate::wal::RecoveryReport,
    /// Time the replay took, journal recovery included.
    pub duration: Duration,
}

impl BlockTracker {
    /// Open the tracker whose journal is at `location` (a directory, or a
    /// log on object storage): start from `snapshot`, a state that reflects
    /// every journal event up to the given LSN (from a checkpoint; `None`
    /// means the empty state at LSN 0), and apply every later event in the
    /// journal.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] unless `opts.sync_policy` is
    /// [`SyncPolicy::Always`];
    /// [`Error::Corruption`] if the journal no longer holds the events right
    /// after the snapshot (retired too far, or lost), or ends before the
    /// snapshot's LSN (the journal lost its newest segments); an event that
    /// passes its checksum but does not decode is [`Error::Decode`]; and the
    /// journal's own [`Wal::open`] errors.
    pub fn open(
        location: impl Into<crate::Location>,
        snapshot: Option<(TrackerState, u64)>,
        opts: WalOptions,
    ) -> Result<BlockTracker> {
        let started = Instant::now();
        if opts.sync_policy != SyncPolicy::Always {
            // add_block's return is the moment a source is acknowledged.
            return Err(Error::InvalidOptions(
                "the tracker's journal must use SyncPolicy::Always",
            ));
        }
        let journal = Wal::open(location, opts)?;
        BlockTracker::replay(journal, snapshot, started)
    }

    fn replay(
        journal: Wal,
        snapshot: Option<(TrackerState, u64)>,
        started: Instant,
    ) -> Result<BlockTracker> {
        let dir = journal.location().display_path();
        let dir = dir.as_path();
        let (mut state, snap_lsn) = snapshot.unwrap_or_default();
        let last = journal.next_lsn().saturating_sub(1);
        if last < snap_lsn {
            return Err(Error::corruption(
                dir,
                0,
                CorruptionKind::LogTooShort {
                    needed: snap_lsn,
                    last,
                },
            ));
        }
        let mut replayed = 0;
        let mut applied_lsn = snap_lsn;
        if last > snap_lsn {
            for item in journal.iter_from(snap_lsn + 1) {
                let (h, bytes) = item.map_err(|e| match e {
                    Error::NotFound { lsn, .. } => Error::corruption(
                        dir,
                        0,
                        CorruptionKind::LogStartsTooLate {
                            needed: lsn,
                            first: journal.first_lsn().unwrap_or(0),
                        },
                    ),
                    other => other,
                })?;
                let event: Event = codec::decode(&bytes, "journal event")?;
                state.apply(&event);
                applied_lsn = h.lsn();
                replayed += 1;
            }
        }
        let replay = JournalReplay {
            events_replayed: replayed,
            journal: journal.recovery_report().clone(),
            duration: started.elapsed(),
        };
        Ok(BlockTracker {
            journal,
            inner: Mutex::new(Inner {
                state,
                applied_lsn,
                waiting: BTreeMap::new(),
            }),
            applied: Condvar::new(),
            allocating: Mutex::new(()),
            replay,
            in_flight: InFlight::default(),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| Error::Poisoned)
    }

    /// Journal `event` durably, then apply it (and any later events that
    /// were waiting for it) in LSN order; return once it is applied. Returns
    /// the event's LSN.
    fn record(&self, event: Event) -> Result<u64> {
        let bytes = codec::encode(&event, "journal event")?;
        let lsn = self.journal.append(&bytes)?.lsn();
        let mut inner = self.lock()?;
        inner.waiting.insert(lsn, event);
        loop {
            let next = inner.applied_lsn + 1;
            let Some(ev) = inner.waiting.remove(&next) else {
                break;
            };
            inner.state.apply(&ev);
            inner.applied_lsn = next;
        }
        let applied = inner.applied_lsn;
        drop(inner);
        self.applied.notify_all();
        // Read your writes: return only once this event (and every event
        // before it) is applied, so a call that follows sees it.
        if applied < lsn {
            drop(self.wait_applied(lsn)?);
        }
        Ok(lsn)
    }

    /// Wait until every event up to `lsn` is applied.
    fn wait_applied(&self, lsn: u64) -> Result<MutexGuard<'_, Inner>> {
        let mut inner = self.lock()?;
        while inner.applied_lsn < lsn {
            if self.journal.is_poisoned() {
                return Err(Error::Poisoned);
            }
            inner = self
                .applied
                .wait_timeout(inner, Duration::from_millis(50))
                .map_err(|_| Error::Poisoned)?
                .0;
        }
        Ok(inner)
    }

    /// Record that `block` is stored in the receiver log. Returns once the
    /// event is durable: from then on the block survives any crash, and the
    /// receiver may acknowledge its source. The second half of
    /// [`BlockTracker::store_block`], which is the way to store a block: a
    /// block appended by hand is not protected from retention until this
    /// returns (see [`BlockTracker::cleanup_receiver_log`]).
    ///
    /// # Errors
    /// The journal's append errors ([`Error::Poisoned`], [`Error::Io`], ...).
    pub fn add_block(&self, block: BlockInfo) -> Result<()> {
        self.record(Event::BlockAdded(block)).map(|_| ())
    }

    /// Give every unallocated block to the batch at `batch_time`, journal the
    /// allocation durably, and return it. Deterministic and idempotent: a
    /// batch time already allocated returns the same blocks again without
    /// journaling anything. A batch time at or before the newest allocated
    /// one that was never allocated (or was cleaned up) gets no blocks and
    /// journals nothing: blocks only ever move forward in time.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for batch time 0 (reserved: it means "none");
    /// the journal's append errors.
    pub fn allocate_blocks_to_batch(&self, batch_time: u64) -> Result<BatchBlocks> {
        if batch_time == 0 {
            return Err(Error::InvalidOptions("batch time 0 is reserved"));
        }
        let _one_at_a_time = self.allocating.lock().map_err(|_| Error::Poisoned)?;
        let blocks = {
            let inner = self.lock()?;
            if let Some(blocks) = inner.state.allocated.get(&batch_time) {
                return Ok(blocks.clone());
            }
            if batch_time <= inner.state.last_allocated_time
                || batch_time < inner.state.cleaned_before
            {
                return Ok(BatchBlocks::new());
            }
            inner.state.unallocated.clone()
        };
        self.record(Event::BatchAllocated {
            batch_time,
            blocks: blocks.clone(),
        })?;
        Ok(blocks)
    }

    /// Record durably that the output of the batch at `batch_time` is
    /// complete (the output commit log). A recovered engine does not run a
    /// committed batch again.
    ///
    /// # Errors
    /// The journal's append errors.
    pub fn commit_batch(&self, batch_time: u64) -> Result<()> {
        self.record(Event::BatchCommitted { batch_time })
            .map(|_| ())
    }

    /// Record durably that everything about batches before `before` may be
    /// forgotten, and forget it. Follow with
    /// [`crate::StreamingContext::cleanup_covered`] (or
    /// [`BlockTracker::cleanup_receiver_log`]) to free their blocks' space.
    ///
    /// # Errors
    /// The journal's append errors.
    pub fn cleanup(&self, before: u64) -> Result<()> {
        // Never between an allocation's decision and its event.
        let _no_allocation = self.allocating.lock().map_err(|_| Error::Poisoned)?;
        self.record(Event::Cleanup { before }).map(|_| ())
    }

    /// Delete the receiver log's sealed segments that no block the tracker
    /// or a receiver still needs lies in: every segment wholly below
    /// [`BlockTracker::receiver_floor`], oldest first. Returns how many
    /// segments were deleted.
    ///
    /// Right whatever the order in which receivers appended and batches
    /// were allocated, for every block stored with
    /// [`BlockTracker::store_block`] or [`BlockTracker::append_block`].
    /// A block appended to `receiver` by hand ([`Wal::append`]) and not yet
    /// added is protected only if its LSN is above the newest block added.
    ///
    /// The receiver log keeps a suffix of its segments, never a gap: one
    /// live block (an old batch not cleaned up, an old unallocated block)
    /// keeps its segment and every later one.
    ///
    /// # Errors
    /// The receiver log's [`Wal::purge_before_lsn`] errors.
    pub fn cleanup_receiver_log(&self, receiver: &Wal) -> Result<usize> {
        receiver.purge_before_lsn(self.receiver_floor(receiver)?)
    }

    /// The lowest receiver-log LSN anything may still need: the smallest of
    /// the LSNs of the blocks the tracker knows live (unallocated, or
    /// allocated to a batch not cleaned up), the floors of blocks being
    /// stored and not yet added, one past the newest block ever added, and
    /// the receiver log's next LSN. Every record below it is dead.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a lock is poisoned.
    pub fn receiver_floor(&self, receiver: &Wal) -> Result<u64> {
        // The floors stay locked while the state is read: a block leaving
        // them (being added) is then seen in one or the other.
        let floors = self.in_flight.lock()?;
        let in_flight = floors.min();
        let next = receiver.next_lsn();
        let inner = self.lock()?;
        let newest = inner.state.last_block_lsn.saturating_add(1);
        let live = inner.state.min_live_lsn();
        drop(inner);
        drop(floors);
        Ok([Some(newest), Some(next), live, in_flight]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next))
    }

    pub(super) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The state and the journal LSN it reflects (every event up to it), for
    /// a checkpoint.
    pub fn snapshot(&self) -> Result<(TrackerState, u64)> {
        let inner = self.lock()?;
        Ok((inner.state.clone(), inner.applied_lsn))
    }

    /// Delete journal segments whose events all have LSNs at or below
    /// `covered_lsn`: call it with the `journal_lsn` of the oldest checkpoint
    /// a recovery may fall back to. Returns how many segments were deleted.
    ///
    /// # Errors
    /// The journal's [`Wal::purge_before_lsn`] errors.
    pub fn retire_journal(&self, covered_lsn: u64) -> Result<usize> {
        self.journal.purge_before_lsn(covered_lsn.saturating_add(1))
    }

    /// The blocks allocated to `batch_time`, if it is allocated and not
    /// cleaned up.
    pub fn batch(&self, batch_time: u64) -> Result<Option<BatchBlocks>> {
        Ok(self.lock()?.state.allocated.get(&batch_time).cloned())
    }

    /// True if the batch at `batch_time` is committed (and not cleaned up).
    pub fn is_committed(&self, batch_time: u64) -> Result<bool> {
        Ok(self.lock()?.state.committed.contains(&batch_time))
    }

    /// What opening the tracker replayed.
    pub fn replay_report(&self) -> &JournalReplay {
        &self.replay
    }

    /// The journal itself (for inspection and statistics).
    pub fn journal(&self) -> &Wal {
        &self.journal
    }
}
