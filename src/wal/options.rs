//! Options, handles, reports and statistics of the log.

use crate::error::{Error, Result};
use crate::limits::{
    BATCH_BYTES_DEFAULT, BATCH_BYTES_MIN, FRAME_HEADER_BYTES, RECORD_BYTES_DEFAULT,
    RECORD_BYTES_MAX, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    UNSYNCED_WINDOW_UNBOUNDED,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// When an append is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every append returns only after its record is durable (`fdatasync`).
    /// Concurrent appenders share one sync (group commit). The default.
    Always,
    /// Appends return once written to the operating system (they survive a
    /// process kill, not a power loss). The log syncs when `max_unsynced_bytes`
    /// have been written since the last sync, and a background thread syncs
    /// whatever is unsynced every `interval`. A power loss can lose at most
    /// the records of the last `interval` or `max_unsynced_bytes`.
    Periodic {
        /// Longest time a written record stays unsynced (roughly: the
        /// background thread wakes this often).
        interval: Duration,
        /// Most bytes written since the last sync before an append syncs.
        max_unsynced_bytes: u64,
    },
    /// Appends return once written to the operating system; the log syncs only
    /// when [`crate::Wal::sync`] is called and when a segment fills up. A power
    /// loss can lose any record appended since the last sync.
    Never,
}

/// How `Wal::open` treats damage it cannot explain as a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Damage outside the torn tail is an [`Error::Corruption`]; a torn tail is
    /// truncated (zeroed and synced). The default.
    #[default]
    Strict,
    /// For forensics: open read-only, modify no log file (only the empty
    /// `LOCK` file may be created), skip over damage to
    /// every valid record that can be found, and list each problem in the
    /// [`RecoveryReport`]. Appends fail with [`Error::ReadOnly`]. Records
    /// returned in this mode passed their checksums, but records may be
    /// missing between them.
    Salvage,
}

/// Options for [`crate::Wal::open`]. `WalOptions::default()` is durable.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// When appends are made durable. Default: [`SyncPolicy::Always`].
    pub sync_policy: SyncPolicy,
    /// Size at which a segment rolls over. A record larger than a segment
    /// gets a segment of its own. Default 64 MiB; 4 KiB to 16 GiB.
    pub segment_bytes: u64,
    /// Largest payload accepted by append, and the bound readers of segments
    /// written with these options apply. Default 64 MiB; at most 1 GiB.
    pub max_record_bytes: u32,
    /// Most bytes one group-commit batch gathers before it is written and
    /// synced. A single larger record still goes alone. Default 4 MiB.
    pub max_batch_bytes: u64,
    /// Preallocate each new segment to `segment_bytes` when it is created.
    /// Segments after one of small records (under 128 KiB per record on
    /// average) are zero-filled, so that appends overwrite written blocks and
    /// `fdatasync` commits no metadata; segments after one of large records
    /// are allocated with `fallocate` (where the storage can), since writing
    /// zeros first would double the bytes written. The first segment is
    /// zero-filled. Default true.
    pub preallocate: bool,
    /// Prepare (preallocate and sync) the next segment on a background
    /// thread once the current one is half full, so that rollover on the
    /// append path only writes the new segment's header, syncs it and
    /// renames the file. Applies only with `preallocate`. On storage that
    /// does not [allow background I/O](crate::storage::Storage::allows_background_io)
    /// (the simulator, the fault injector) the appender that reaches the
    /// half-way point prepares it at once instead, so the operation order
    /// stays reproducible and crash tests still cover spares. Default true.
    pub prepare_ahead: bool,
    /// How damage found on open is treated. Default [`RecoveryMode::Strict`].
    pub recovery_mode: RecoveryMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync_policy: SyncPolicy::Always,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            max_record_bytes: RECORD_BYTES_DEFAULT,
            max_batch_bytes: BATCH_BYTES_DEFAULT,
            preallocate: true,
            prepare_ahead: true,
            recovery_mode: RecoveryMode::Strict,
        }
    }
}

impl WalOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::InvalidOptions(
                "segment_bytes must be 4 KiB ..= 16 GiB",
            ));
        }
        if self.max_record_bytes > RECORD_BYTES_MAX {
            return Err(Error::InvalidOptions(
                "max_record_bytes must be at most 1 GiB",
            ));
        }
        if self.max_batch_bytes < BATCH_BYTES_MIN {
            return Err(Error::InvalidOptions(
                "max_batch_bytes must be at least 4 KiB",
            ));
        }
        if let SyncPolicy::Periodic { interval, .. } = self.sync_policy
            && interval.is_zero()
        {
            return Err(Error::InvalidOptions(
                "a periodic sync interval must be nonzero",
            ));
        }
        Ok(())
    }

    /// The most bytes one batch can hold: the batch cap, or one maximal frame.
    pub(crate) fn batch_bound_bytes(&self) -> u64 {
        self.max_batch_bytes
            .max(FRAME_HEADER_BYTES + u64::from(self.max_record_bytes))
    }

    /// The bound on written-but-unsynced bytes a writer with these options
    /// keeps, as recorded in segment headers.
    pub(crate) fn unsynced_window_bytes(&self) -> u64 {
        match self.sync_policy {
            SyncPolicy::Always => self.batch_bound_bytes(),
            SyncPolicy::Periodic {
                max_unsynced_bytes, ..
            } => max_unsynced_bytes.saturating_add(self.batch_bound_bytes()),
            SyncPolicy::Never => UNSYNCED_WINDOW_UNBOUNDED,
        }
    }
}

/// Where a record lives: its segment, byte offset and payload length, and its
/// LSN. Returned by append; [`crate::Wal::read`] reads the record back with
/// it. Serializable, so an engine can keep it in its own metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordHandle {
    pub(crate) lsn: u64,
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

impl RecordHandle {
    /// The record's log sequence number: dense, strictly increasing, from 1.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }
    /// Sequence number of the segment holding the record.
    pub fn segment(&self) -> u64 {
        self.segment
    }
    /// Byte offset of the record's frame in its segment file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Payload length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }
    /// True if the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What `Wal::open` found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// LSN of the first record in the log (None if empty).
    pub first_lsn: Option<u64>,
    /// LSN of the last record in the log (None if empty).
    pub last_lsn: Option<u64>,
    /// Bytes of torn tail discarded (zeroed) from the last segment.
    pub torn_bytes: u64,
    /// File and offset at which the torn tail started, if there was one.
    pub torn_at: Option<(PathBuf, u64)>,
    /// Leftover temporary files of interrupted segment creations, removed.
    pub removed_temp_files: Vec<String>,
    /// Files in the directory that are not the log's, left alone.
    pub ignored_files: Vec<String>,
    /// Of those, the ones named like a segment that are not one (a
    /// directory, a FIFO, a number beyond `u64`): a sign that someone copied,
    /// renamed or planted files here. `streamwal verify` reports them.
    pub lookalike_files: Vec<Lookalike>,
    /// Salvage mode only: every problem found and skipped.
    pub problems: Vec<Problem>,
    /// Wall-clock time the recovery took.
    pub duration: Duration,
}

/// A directory entry named like one of the log's files that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookalike {
    /// The entry's name.
    pub name: String,
    /// Why it is not what its name says, and what was done (never read).
    pub reason: &'static str,
}

/// A damaged spot found and skipped in salvage mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file holding the damage.
    pub file: PathBuf,
    /// Byte offset of the damage within `file`.
    pub offset: u64,
    /// What is wrong there.
    pub kind: crate::error::CorruptionKind,
}

/// Counters of what the log has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended.
    pub records_appended: u64,
    /// Payload and frame bytes written by appends.
    pub bytes_written: u64,
    /// Writes issued by the append path: one per group-commit chunk (a batch
    /// is split per segment and at `max_batch_bytes`).
    pub batches: u64,
    /// `fdatasync` calls on segment files by the append and sync paths.
    pub data_syncs: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Of those, segments installed from a spare the background thread had
    /// prepared (see [`WalOptions::prepare_ahead`]).
    pub segments_prepared_ahead: u64,
    /// Segments deleted by retention.
    pub segments_removed: u64,
}
