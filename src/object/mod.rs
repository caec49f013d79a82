//! Checkpoints on S3-compatible object storage (cargo feature
//! `object-store`).
//!
//! Spark keeps its checkpoint directory on HDFS so that a driver restarted on
//! another machine finds it. [`ObjectCheckpointStore`] keeps checkpoints as
//! objects under a URL prefix; and since two drivers can see the same prefix
//! at once (a partitioned old one and its replacement), it fences: each
//! opening takes a new *epoch* with a conditional PUT and seals the
//! checkpoints that exist at that moment, and what an older epoch writes
//! after that never counts for [`ObjectCheckpointStore::latest`].
//!
//! The write-ahead log goes there too ([`crate::Wal::open`]: one
//! immutable object per group-commit batch, fenced by a claim object), and
//! [`crate::StreamingContext::builder`] at a parsed URL keeps a whole
//! context under one prefix. docs/DESIGN.md ("Object storage") has the layouts and the rules.
//!
//! The API blocks: each store runs its requests on a small runtime of its
//! own. Do not call it from inside an async task (use `spawn_blocking`).
//!
//! ```
//! use streamwal::checkpoint::{Checkpoint, CheckpointOptions};
//! use streamwal::object::{ObjectCheckpointStore, ObjectLocation};
//! # fn main() -> streamwal::Result<()> {
//! // `s3://bucket/prefix` in production; memory for the example.
//! let store = ObjectCheckpointStore::open(
//!     ObjectLocation::parse("memory:///engine")?,
//!     CheckpointOptions::default(),
//! )?;
//! let ckpt = Checkpoint {
//!     batch_time: 1000,
//!     batch_interval_ms: 1000,
//!     graph: String::from("the graph"),
//!     graph_version: 1,
//!     pending_batches: vec![],
//!     journal_lsn: 0,
//!     tracker: Default::default(),
//!     source_offsets: Default::default(),
//! };
//! store.write(&ckpt)?;
//! let (_, got) = store.latest::<String>()?.checkpoint.expect("just written");
//! assert_eq!(got.graph, "the graph");
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod location;
mod log;

pub use checkpoint::{ObjectCheckpointStore, ObjectLatest, RawObject, SkippedObject};
pub use location::{ObjectLocation, file_url_path};
pub(crate) use log::ObjectLog;
pub use log::{LOG_OBJECT_SUFFIX, log_object_name};
/// The `object_store` crate this module is built on (feature `internals`,
/// for the crate's own tests). An engine that passes its own store to
/// [`ObjectLocation::with_store`] depends on `object_store` 0.14 itself.
#[cfg(feature = "internals")]
pub use object_store;
