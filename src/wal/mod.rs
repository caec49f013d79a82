//! The write-ahead log: segments of checksummed record frames, appended with
//! group commit, read by handle or in order, trimmed by retention, recovered
//! on open.
//!
//! Submodules: [`format`](mod@format) is the pure codec (every on-disk byte is encoded and
//! decoded there); `segment` names and creates segment files and holds what
//! the open log knows of each; `reader` scans frames; `recover` opens a
//! directory; `writer` is the log handle (open, read, retention) and uses
//! `commit`, which holds the state they share and appends with group commit;
//! `spare` prepares the next segment ahead of need; `iter` reads in order;
//! `files` opens sealed segments on demand, a bounded number at a time.

pub(crate) mod backend;
mod commit;
mod files;
// The segment codec: public only with the `internals` feature (the CLI,
// the fuzz targets and the tests use it; an engine has no need). Without it
// the crate's own modules (the object-storage log among them) still use it.
#[cfg(feature = "internals")]
pub mod format;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
pub(crate) mod format;
mod inspect;
mod iter;
mod log;
mod options;
mod reader;
mod recover;
mod segment;
mod spare;
mod writer;

pub use inspect::{LogScan, SegmentScan, TornFrames, scan_log};
pub use iter::WalIter;
#[cfg(feature = "object-store")]
pub(crate) use iter::{Item as IterItem, RemoteIter};
pub use log::Wal;
pub use options::{
    Lookalike, Problem, RecordHandle, RecoveryMode, RecoveryReport, SyncPolicy, WalOptions,
    WalStats,
};
pub use segment::{SEGMENT_SUFFIX, segment_file_name};
pub(crate) use writer::FileWal;
pub(crate) use writer::new_log_id as random_id;
pub(crate) use writer::now_millis;
