//! The checkpoint store: atomic, checksummed snapshots of the engine's
//! transformation graph and the batch metadata, newest-valid-first reads,
//! retention, and a background writer.

mod backend;
mod files;
mod format;
mod store;
mod writer;

pub(crate) use backend::CheckpointBackend;
#[cfg(feature = "object-store")]
pub(crate) use backend::rank;
#[cfg(feature = "object-store")]
pub(crate) use backend::{Listed, Listing};
pub(crate) use files::FileCheckpoints;
pub use files::checkpoint_file_name;
pub use format::GraphEncoding;
/// The checkpoint file codec, for the crate's own tools (feature
/// `internals`; no stability promise).
#[cfg(feature = "internals")]
pub use format::{
    CHECKPOINT_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION_MIN, CHECKPOINT_HEADER_BYTES,
    CHECKPOINT_MAGIC, CHECKPOINT_V1_HEADER_BYTES, CheckpointHeader, decode_body, decode_body_raw,
    decode_file, decode_file_raw, decode_file_stored, encode_file, encode_file_with,
};
/// The same codec items for the crate's own use when they are not public.
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use format::{CHECKPOINT_HEADER_BYTES, CheckpointHeader, decode_file, decode_file_raw};
pub use store::{
    CheckpointOptions, CheckpointStore, EncodedCheckpoint, LatestCheckpoint, SkippedCheckpoint,
};
pub use writer::{CheckpointWriter, WriterStats};

use crate::tracker::TrackerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One checkpoint: everything a restarted driver needs besides the journal
/// events written after it and the receiver log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint<G> {
    /// The batch time the checkpoint was taken at (ms).
    pub batch_time: u64,
    /// The engine's batch interval (ms).
    pub batch_interval_ms: u64,
    /// The engine's transformation graph (any serde type it defines).
    pub graph: G,
    /// The schema version of `graph`, owned by the engine; stored apart from
    /// the graph's bytes so a later engine can migrate old graphs.
    pub graph_version: u32,
    /// Batch times generated but not completed when the checkpoint was taken.
    pub pending_batches: Vec<u64>,
    /// Every journal event with an LSN up to and including this one is
    /// reflected in `tracker` (0: none).
    pub journal_lsn: u64,
    /// The tracker's state at `journal_lsn`.
    pub tracker: TrackerState,
    /// Free-form source positions (e.g. Kafka partition -> offset).
    pub source_offsets: BTreeMap<String, String>,
}

impl<G> Checkpoint<G> {
    /// The same checkpoint with another graph (e.g. decoded, or migrated).
    pub fn with_graph<H>(self, graph: H) -> Checkpoint<H> {
        Checkpoint {
            batch_time: self.batch_time,
            batch_interval_ms: self.batch_interval_ms,
            graph,
            graph_version: self.graph_version,
            pending_batches: self.pending_batches,
            journal_lsn: self.journal_lsn,
            tracker: self.tracker,
            source_offsets: self.source_offsets,
        }
    }
}
