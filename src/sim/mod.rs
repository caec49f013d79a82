//! The crash simulator and crash harness (feature `sim`): prove that your
//! engine's recovery survives a crash at every I/O step.
//!
//! - [`SimStorage`] is a simulated file system behind the crate's
//!   [`crate::storage::Storage`] seam. It keeps, per file, what the process
//!   sees (page cache) and what is durable, and per directory which entries
//!   are durable; [`SimStorage::after_crash`] turns that into what survives a
//!   process kill or a power loss, following the failure model in
//!   `docs/RELIABILITY.md` (unsynced writes dropped, kept, torn at sector
//!   boundaries or inside a sector, surviving out of order, zero-filled;
//!   sizes landing before data; unsynced directory entries reverting),
//!   deterministically from a seed, or exhaustively for small cases. It
//!   also injects faults: EIO on the Nth write or sync (a failed sync drops
//!   the dirty pages, as Linux does), ENOSPC after N bytes, short writes.
//! - [`CrashHarness`] runs a workload once, then crashes it after every I/O
//!   step (and again during recovery), recovers, and runs a checker; it
//!   reports how many crash states it explored and the first failure with a
//!   one-line replay command.
//! - [`checkers`] holds the checkers for the crate's own promises (the WAL,
//!   checkpoints, the block tracker) and helpers that record what a workload
//!   attempted and what was acknowledged.
//! - [`differential`] runs an arbitrary sequence of operations (appends,
//!   syncs, purges, reopens, crashes, faults) against the log and checks it
//!   after every crash: a fuzz target and a property test.
//!
//! The real [`crate::Wal`], [`crate::checkpoint::CheckpointStore`] and
//! [`crate::tracker::BlockTracker`] run on the simulator unchanged through
//! their constructors (given a `Location::dir_on(storage, path)`), so the code paths under test are
//! the production ones.
//!
//! ```
//! use std::path::Path;
//! use streamwal::sim::{CrashHarness, checkers};
//! use streamwal::{Wal, WalOptions};
//!
//! let dir = Path::new("/engine/wal");
//! let opts = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
//! let report = CrashHarness::new("doc-example").run(
//!     |storage, rec| {
//!         let Ok(wal) = Wal::open(streamwal::Location::dir_on(storage, dir), opts.clone()) else { return };
//!         for i in 0..10 {
//!             let block = format!("block {i}");
//!             if checkers::append_recorded(&wal, rec, block.as_bytes()).is_err() {
//!                 return;
//!             }
//!         }
//!     },
//!     checkers::wal_checker(dir, opts.clone()),
//! );
//! report.assert_passed();
//! assert!(report.states > 50);
//! ```
//!
//! Panics: the simulator never panics on the crate's calls; the harness
//! panics only in [`CrashReport::assert_passed`], by design.

pub mod checkers;
pub mod differential;
mod harness;
mod storage;

pub use harness::{
    CrashFailure, CrashHarness, CrashPoint, CrashReport, ENV_REPLAY, ENV_SEED, ENV_SEEDS, Recorder,
    StateChoice,
};
pub use storage::{CrashKind, PowerLossStates, SECTOR_BYTES, SimStats, SimStorage};
