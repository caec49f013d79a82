//! The block tracker: the metadata journal of received blocks, batch
//! allocations, batch commits and cleanups.

mod inflight;
mod journal;
mod state;

pub use inflight::PendingBlock;
pub use journal::{BlockTracker, JournalReplay};
pub use state::{BatchBlocks, BlockInfo, Event, StreamId, TrackerState};
