//! The block tracker: the metadata journal of received blocks, batch
//! allocations, batch commits and cleanups.

mod state;

pub use state::{BatchBlocks, BlockInfo, Event, StreamId, TrackerState};
