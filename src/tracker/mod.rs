//! The block tracker: the metadata journal of received blocks, batch
//! allocations, batch commits and cleanups.

mod journal;
mod state;

pub use journal::{BlockTracker, JournalReplay};
pub use state::{BatchBlocks, BlockInfo, Event, StreamId, TrackerState};
