//! The tracker's events and the state they build. Pure: no I/O.

use crate::wal::RecordHandle;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Identifies one input stream of the engine.
pub type StreamId = u32;

/// A block of received records stored in the receiver log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The stream the block was received on.
    pub stream_id: StreamId,
    /// Where the block's bytes are in the receiver log.
    pub handle: RecordHandle,
    /// How many records the block holds (engine-defined).
    pub records: u64,
    /// When the block was received (ms, engine clock).
    pub receive_time: u64,
}

/// The blocks of one batch, per stream, each stream's list in the order the
/// blocks were added.
pub type BatchBlocks = BTreeMap<StreamId, Vec<BlockInfo>>;

/// One journal event. The journal is the tracker's write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A block was stored in the receiver log and may now be acknowledged.
    BlockAdded(BlockInfo),
    /// Every unallocated block was given to the batch at `batch_time`.
    BatchAllocated {
        /// The batch's time (ms).
        batch_time: u64,
        /// Exactly the blocks allocated, per stream.
        blocks: BatchBlocks,
    },
    /// The engine finished the batch's output (the output commit log).
    BatchCommitted {
        /// The batch's time (ms).
        batch_time: u64,
    },
    /// Everything about batches before `before` may be forgotten.
    Cleanup {
        /// Batches with a time strictly below this are dropped.
        before: u64,
    },
}

/// What the tracker knows: blocks not yet allocated, allocations, commits.
/// Built by applying events in journal order; snapshotted into checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    /// Blocks added but not yet allocated to a batch, per stream.
    pub unallocated: BatchBlocks,
    /// Allocated batches not yet cleaned up, by batch time.
    pub allocated: BTreeMap<u64, BatchBlocks>,
    /// Batch times whose output is committed (not yet cleaned up).
    pub committed: BTreeSet<u64>,
    /// The newest batch time ever allocated (0 if none), kept after cleanup so
    /// allocation never goes back in time.
    pub last_allocated_time: u64,
    /// Batches with a time below this have been cleaned up (0 if never).
    pub cleaned_before: u64,
    /// The highest receiver-log LSN of any block ever added (0 if none).
    pub last_block_lsn: u64,
}

impl TrackerState {
    /// Apply one event. Events are applied in journal order; applying the
    /// same allocation twice leaves the state as once.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::BlockAdded(b) => {
                self.last_block_lsn = self.last_block_lsn.max(b.handle.lsn());
                self.unallocated
                    .entry(b.stream_id)
                    .or_default()
                    .push(b.clone());
            }
            Event::BatchAllocated { batch_time, blocks } => {
                // Already allocated, or cleaned up: the blocks stay where
                // they are (the tracker never journals either).
                if self.allocated.contains_key(batch_time) || *batch_time < self.cleaned_before {
                    return;
                }
                // The allocated blocks leave the unallocated set.
                for (stream, list) in blocks {
                    if let Some(un) = self.unallocated.get_mut(stream) {
                        un.retain(|b| !list.contains(b));
                        if un.is_empty() {
                            self.unallocated.remove(stream);
                        }
                    }
                }
                self.allocated.insert(*batch_time, blocks.clone());
                self.last_allocated_time = self.last_allocated_time.max(*batch_time);
            }
            Event::BatchCommitted { batch_time } => {
                if *batch_time >= self.cleaned_before {
                    self.committed.insert(*batch_time);
                }
            }
            Event::Cleanup { before } => {
                self.allocated = self.allocated.split_off(before);
                self.committed = self.committed.split_off(before);
                self.cleaned_before = self.cleaned_before.max(*before);
            }
        }
    }

    /// The smallest receiver-log LSN any block still known to the tracker
    /// refers to, or `None` if it knows no block.
    pub fn min_live_lsn(&self) -> Option<u64> {
        self.unallocated
            .values()
            .chain(self.allocated.values().flat_map(|b| b.values()))
            .flatten()
            .map(|b| b.handle.lsn())
            .min()
    }
}
