//! # streamwal
//!
//! Crash-safe storage for micro-batch streaming engines: a segmented,
//! checksummed, group-committed write-ahead log for received data blocks.
//!
//! **The promise.** A record whose [`Wal::append`] returned `Ok` under
//! [`SyncPolicy::Always`] (the default) is there after any process kill or
//! power loss, byte for byte and in order; recovery never returns a record that
//! was not appended, and what it returns is a prefix of what was appended,
//! with no hole.
//!
//! ```
//! use streamwal::{Wal, WalOptions};
//! # fn main() -> streamwal::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let wal = Wal::open(tmp.path().join("wal"), WalOptions::default())?;
//! let a = wal.append(b"first block")?;
//! let b = wal.append(b"second block")?;
//! assert_eq!(b.lsn(), a.lsn() + 1);
//! assert_eq!(wal.read(&b)?, b"second block");
//! for record in wal.iter() {
//!     let (handle, payload) = record?;
//!     println!("{} -> {} bytes", handle.lsn(), payload.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The parts:
//! - [`Wal`]: the receiver write-ahead log (append with group commit, read
//!   by handle, iterate, retention, recovery);
//! - [`checkpoint`]: atomic, checksummed checkpoints and a background writer;
//! - [`state`]: keyed operator state, versioned by batch and recovered
//!   exactly at the last committed batch;
//! - [`tracker`]: the metadata journal of blocks, batch allocations, commits;
//! - [`retention`]: [`StreamingContext::store_block`] (a block into the
//!   receiver log and the tracker in one call) and
//!   [`StreamingContext::cleanup_covered`] (delete what nothing needs);
//! - [`recovery`]: [`StreamingContext::get_or_create`] and its
//!   [builder](StreamingContext::builder), which rebuild a driver's state
//!   and list the batches it must run again;
//! - [`Location`]: where each part keeps its data (a directory on any
//!   storage, or an object-storage prefix);
//! - [`storage`]: the file-system seam every byte goes through;
//! - `sim` (feature `sim`): the crash simulator and harness.
//!
//! The on-disk format is specified in `docs/FORMAT.md`; the protocols and the
//! crash reasoning in `docs/DESIGN.md`; the failure model and what the tests
//! explored in `docs/RELIABILITY.md`.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod checkpoint;
mod downtime;
// The bincode codec: public only with the `internals` feature.
#[cfg(feature = "internals")]
pub mod codec;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod codec;
mod context_lock;
pub mod error;
/// Entry points of the fuzz targets in `fuzz/` (feature `internals`).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
mod location;
#[cfg(feature = "object-store")]
pub mod object;
pub mod recovery;
pub mod retention;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sink;
pub mod sources;
pub mod state;
pub mod storage;
pub mod tracker;
mod upgrade;
pub mod wal;

pub use checkpoint::{CheckpointOptions, CheckpointStore};
pub use downtime::DowntimePolicy;
pub use error::{CorruptionKind, Error, LockHolder, Result, Unusable};
pub use location::Location;
pub use recovery::{CheckpointAt, ContextBuilder, ContextOptions, StreamingContext};
pub use state::{KeyedState, StateOptions, StateStore};
pub use wal::{
    RecordHandle, RecoveryMode, RecoveryReport, SyncPolicy, Wal, WalIter, WalOptions, WalStats,
};

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
