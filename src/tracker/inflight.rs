//! Blocks appended to the receiver log and not yet added to the tracker.
//!
//! Between a block's append and its `BlockAdded` event the tracker does not
//! know the block, yet the receiver log holds it and retention must not
//! delete it. Every append made through [`BlockTracker::append_block`] (and
//! so [`BlockTracker::store_block`]) first records a floor here: the
//! receiver log's next LSN at that moment, which the block's LSN cannot be
//! below. Retention never deletes at or above the lowest floor.

use super::journal::BlockTracker;
use super::state::{BlockInfo, StreamId};
use crate::error::{Error, Result};
use crate::wal::Wal;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// The floors of the appends in flight, by token.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    inner: Mutex<Floors>,
}

#[derive(Debug, Default)]
pub(crate) struct Floors {
    next_token: u64,
    by_token: BTreeMap<u64, u64>,
}

impl Floors {
    /// The lowest LSN a block in flight may have, if any is in flight.
    pub(crate) fn min(&self) -> Option<u64> {
        self.by_token.values().copied().min()
    }
}

impl InFlight {
    /// Lock the floors. Retention holds this lock while it reads the
    /// tracker's state, so that a block cannot leave the floors (being
    /// added) between the two reads and be seen by neither.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Floors>> {
        self.inner.lock().map_err(|_| Error::Poisoned)
    }

    /// Record that an append to `receiver` is about to start.
    fn enter(&self, receiver: &Wal) -> Result<u64> {
        let mut floors = self.lock()?;
        let token = floors.next_token;
        floors.next_token += 1;
        // Read under the lock: a retention pass that locked before this
        // saw a next LSN no greater than this one.
        floors.by_token.insert(token, receiver.next_lsn());
        Ok(token)
    }

    fn leave(&self, token: u64) {
        // A poisoned lock only means another thread panicked holding it;
        // the map itself is still whole.
        let mut floors = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        floors.by_token.remove(&token);
    }
}

/// A block stored in the receiver log but not yet added to the tracker:
/// made by [`BlockTracker::append_block`]. While it lives, retention keeps
/// the block's segment. [`PendingBlock::register`] adds it to the tracker;
/// dropping it unregistered forgets it (the block was never acknowledged:
/// it stays in the log until retention passes it, and recovery does not
/// hand it back).
#[derive(Debug)]
#[must_use = "a pending block is not acknowledged until register"]
pub struct PendingBlock<'a> {
    tracker: &'a BlockTracker,
    token: u64,
    info: BlockInfo,
}

impl PendingBlock<'_> {
    /// The block as it will be added.
    pub fn info(&self) -> &BlockInfo {
        &self.info
    }

    /// Add the block to the tracker ([`BlockTracker::add_block`]): once
    /// this returns `Ok` the block survives any crash and its source may be
    /// acknowledged.
    ///
    /// # Errors
    /// As [`BlockTracker::add_block`]; the block is then not acknowledged.
    pub fn register(self) -> Result<BlockInfo> {
        self.tracker.add_block(self.info.clone())?;
        Ok(self.info.clone())
    }
}

impl Drop for PendingBlock<'_> {
    fn drop(&mut self) {
        self.tracker.in_flight().leave(self.token);
    }
}

impl BlockTracker {
    /// Append `payload` to `receiver` as a block of stream `stream_id` and
    /// return it unregistered; retention keeps it until the returned
    /// [`PendingBlock`] is registered or dropped. For a receiver that
    /// acknowledges later; [`BlockTracker::store_block`] does both halves.
    ///
    /// # Errors
    /// The receiver log's [`Wal::append`] errors; [`Error::Poisoned`].
    pub fn append_block(
        &self,
        receiver: &Wal,
        stream_id: StreamId,
        payload: &[u8],
        records: u64,
        receive_time: u64,
    ) -> Result<PendingBlock<'_>> {
        let token = self.in_flight().enter(receiver)?;
        let handle = match receiver.append(payload) {
            Ok(h) => h,
            Err(e) => {
                self.in_flight().leave(token);
                return Err(e);
            }
        };
        Ok(PendingBlock {
            tracker: self,
            token,
            info: BlockInfo {
                stream_id,
                handle,
                records,
                receive_time,
            },
        })
    }

    /// Store a block: append `payload` to `receiver`, durably, then add it
    /// to the tracker, durably. When it returns `Ok` the block survives any
    /// crash and its source may be acknowledged; retention keeps it from
    /// the moment the append starts. Safe to call from several receivers
    /// (threads) at once. This is the way to store a block: appending and
    /// calling [`BlockTracker::add_block`] by hand leaves a window in which
    /// [`BlockTracker::cleanup_receiver_log`] does not know the block.
    ///
    /// # Errors
    /// [`Wal::append`] and [`BlockTracker::add_block`] errors. After an
    /// error the block is not acknowledged; it may still come back after a
    /// crash (its event's fate is unknown), exactly once.
    pub fn store_block(
        &self,
        receiver: &Wal,
        stream_id: StreamId,
        payload: &[u8],
        records: u64,
        receive_time: u64,
    ) -> Result<BlockInfo> {
        self.append_block(receiver, stream_id, payload, records, receive_time)?
            .register()
    }
}
