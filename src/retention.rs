//! Storing blocks and freeing what nothing needs any more, on a
//! [`StreamingContext`]: [`StreamingContext::store_block`] and
//! [`StreamingContext::cleanup_covered`].
//!
//! What may go, and why it is safe:
//!
//! - A receiver-log record is needed while its block is live in the tracker
//!   (unallocated, or allocated to a batch not cleaned up) or is being
//!   stored (appended, not yet added). Recovery from any kept checkpoint
//!   replays the journal up to now, so it needs exactly the blocks the
//!   tracker knows live today: the batches it hands back are the pending
//!   ones, and `committed_after_checkpoint` lists only batches not cleaned
//!   up. A segment goes once every record in it is dead.
//! - A journal event is needed while some kept checkpoint is older than it
//!   (recovery from that checkpoint replays it).
//! - Checkpoint files are retired by the store as it writes (the newest
//!   [`crate::CheckpointOptions`] `keep`); keyed-state deltas and snapshots
//!   by the state store after each snapshot (every kept snapshot keeps its
//!   deltas).

use crate::error::Result;
use crate::recovery::StreamingContext;
use crate::tracker::{BlockInfo, PendingBlock, StreamId};

/// What [`StreamingContext::cleanup_covered`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Sealed receiver-log segments deleted.
    pub receiver_segments_removed: usize,
    /// The receiver-log LSN below which every record was dead when the pass
    /// ran ([`crate::tracker::BlockTracker::receiver_floor`]); the segments
    /// wholly below it were deleted.
    pub receiver_floor_lsn: u64,
    /// Journal segments deleted: their events are all covered by every kept
    /// checkpoint.
    pub journal_segments_removed: usize,
}

impl<G> StreamingContext<G> {
    /// Store a block of stream `stream_id`: append `payload` to the
    /// receiver log, durably, and add it to the tracker, durably, in one
    /// call. When it returns `Ok` the block survives any crash and the
    /// source may be acknowledged. Callable from several receiver threads at
    /// once; retention ([`StreamingContext::cleanup_covered`]) keeps the
    /// block from the moment its append starts, whatever order receivers
    /// append and register in.
    ///
    /// ```
    /// use streamwal::recovery::StreamingContext;
    /// # fn main() -> streamwal::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let ctx = StreamingContext::get_or_create(tmp.path().join("ctx"), 1_000, || ())?;
    /// let block = ctx.store_block(0, b"to be or not", 1, 10_000)?;
    /// // now acknowledge the source
    /// assert_eq!(ctx.read_block(&block)?, b"to be or not");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`crate::tracker::BlockTracker::store_block`]: the receiver log's
    /// append errors and the journal's. After an error the block is not
    /// acknowledged.
    pub fn store_block(
        &self,
        stream_id: StreamId,
        payload: &[u8],
        records: u64,
        receive_time: u64,
    ) -> Result<BlockInfo> {
        self.tracker.store_block(
            &self.receiver_log,
            stream_id,
            payload,
            records,
            receive_time,
        )
    }

    /// The first half of [`StreamingContext::store_block`]: append the
    /// block and return it unregistered, protected from retention until it
    /// is registered or dropped. For a receiver that registers later (or in
    /// another order than it appended); most receivers want `store_block`.
    ///
    /// # Errors
    /// The receiver log's append errors.
    pub fn append_block(
        &self,
        stream_id: StreamId,
        payload: &[u8],
        records: u64,
        receive_time: u64,
    ) -> Result<PendingBlock<'_>> {
        self.tracker.append_block(
            &self.receiver_log,
            stream_id,
            payload,
            records,
            receive_time,
        )
    }

    /// Delete what no kept checkpoint and no pending batch can need: the
    /// sealed receiver-log segments in which no block is live (unallocated,
    /// allocated to a batch not cleaned up, or being stored), and the
    /// journal segments whose events every kept checkpoint covers. Call it
    /// after [`crate::tracker::BlockTracker::cleanup`] (which decides which
    /// batches are forgotten) and after checkpoints; it is cheap when there
    /// is nothing to delete. Safe while receivers store blocks and batches
    /// are allocated on other threads.
    ///
    /// Each log keeps a suffix of its segments (a deleted segment in the
    /// middle would read as a lost one): the oldest live block keeps its
    /// segment and every later one. Clean up batches promptly. Checkpoint
    /// files and keyed-state files are retired as they are written (see the
    /// module's documentation); this removes none of them.
    ///
    /// Deletes oldest first, fsyncing the directory after each; a crash
    /// midway leaves a suffix, and the next call finishes.
    ///
    /// # Errors
    /// [`crate::Wal::purge_before_lsn`] errors of either log (what was
    /// deleted before stays deleted), and the errors of
    /// [`StreamingContext::retire_journal`].
    pub fn cleanup_covered(&self) -> Result<CleanupReport> {
        let receiver_floor_lsn = self.tracker.receiver_floor(&self.receiver_log)?;
        let receiver_segments_removed = self.receiver_log.purge_before_lsn(receiver_floor_lsn)?;
        let journal_segments_removed = self.retire_journal()?;
        Ok(CleanupReport {
            receiver_segments_removed,
            receiver_floor_lsn,
            journal_segments_removed,
        })
    }
}
