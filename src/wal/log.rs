//! The public log handle: one type over any [`LogBackend`] (a directory of
//! segment files, `writer`; or, with the `object-store` feature, a prefix
//! in an object store), chosen by the [`Location`] it is opened at.

use super::backend::{LogBackend, Payloads};
use super::iter::WalIter;
use super::options::{RecordHandle, RecoveryReport, WalOptions, WalStats};
use super::writer::now_millis;
use crate::error::Result;
use crate::location::Location;

/// A segmented, checksummed write-ahead log over one directory, or (cargo
/// feature `object-store`) under a prefix of an object store
/// ([`Location::parse`]): the same API over either.
///
/// `Wal` is `Send + Sync`: share it (e.g. in an `Arc`) and append from many
/// threads; concurrent appends are group-committed. A directory is locked
/// exclusively while the `Wal` lives; a prefix is claimed, and the latest
/// opener fences the earlier ones.
///
/// A log holds a bounded number of file descriptors however many segments
/// it has: the lock, the tail segment and at most
/// [`OPEN_SEALED_SEGMENTS_MAX`](crate::limits::OPEN_SEALED_SEGMENTS_MAX)
/// sealed segments, opened when a read or an iterator needs them.
///
/// **Fork.** A process forked without exec inherits the log's descriptors,
/// and the directory lock with them (it belongs to the shared open file
/// description). The child must not use the inherited `Wal`: its
/// background threads do not exist there, and two writers would
/// interleave. Dropping it in the child is safe and leaves the parent's lock
/// in place; the lock is released when the parent drops its `Wal`.
///
/// # Example
///
/// ```
/// use streamwal::{Wal, WalOptions};
/// # fn main() -> streamwal::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path().join("wal");
/// let wal = Wal::open(&dir, WalOptions::default())?;
/// let handle = wal.append(b"block 1")?; // durable when this returns
/// assert_eq!(wal.read(&handle)?, b"block 1");
/// drop(wal);
///
/// let wal = Wal::open(&dir, WalOptions::default())?;
/// let records: Vec<_> = wal.iter().collect::<Result<_, _>>()?;
/// assert_eq!(records[0].1, b"block 1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Wal {
    backend: Box<dyn LogBackend>,
    location: Location,
}

impl Wal {
    /// Open (or create) the log at `location`, recovering whatever a crash
    /// left: a directory (a path converts into one on the real file system;
    /// [`Location::dir_on`] puts it on another storage) or, with the
    /// `object-store` feature, a prefix in an object store
    /// ([`Location::parse`]).
    ///
    /// **In a directory**, it creates the directory if needed (and fsyncs its
    /// parent), takes the directory's exclusive lock, fsyncs the directory
    /// and every segment (so nothing a crashed predecessor left in the page
    /// cache is trusted before it is durable), checks every segment header,
    /// record checksum, LSN and segment link, and repairs a torn tail of the
    /// last segment by zeroing it and syncing. It then writes the last
    /// segment's unproven last write (records no later frame proves durable)
    /// again with the same bytes and syncs, so a predecessor's failed fsync
    /// cannot leave records that look durable but are not. What it found is
    /// in [`Wal::recovery_report`].
    ///
    /// **On object storage** the log is a chain of immutable objects, one
    /// per group-commit batch (layout in docs/FORMAT.md): `append` returns
    /// once the PUT holding its record returned, and concurrent appenders
    /// share one PUT as they share one `fdatasync` on disk. Reads by handle
    /// are ranged GETs; iteration reads whole objects. Opening lists the
    /// prefix, reads and checks every object (headers, checksums, the LSN
    /// chain; a missing object in the chain is corruption, since object
    /// storage has no torn writes), then, unless read-only, *claims* the log
    /// with a conditional PUT at the next sequence number. From then on a
    /// writer that opened the log earlier fails its next append with
    /// [`Error::LogTakenOver`](crate::Error::LogTakenOver) and is poisoned,
    /// so a partitioned old driver cannot add to what the new one recovered;
    /// the latest opener wins. `sync_policy` must be
    /// [`crate::SyncPolicy::Always`]; `max_batch_bytes` bounds an object;
    /// `segment_bytes`, `preallocate` and `prepare_ahead` do not apply;
    /// [`crate::RecoveryMode::Salvage`] opens read-only without claiming.
    /// An [`append_batch`](Wal::append_batch) larger than `max_batch_bytes`
    /// spans several objects: when it fails, a prefix of it may be stored.
    ///
    /// # Errors
    /// - [`Error::Locked`](crate::Error::Locked) at once if another `Wal` holds the directory.
    /// - [`Error::Corruption`](crate::Error::Corruption) for damage that is not a torn tail (strict mode), naming the file or object and the offset.
    /// - [`Error::InvalidOptions`](crate::Error::InvalidOptions) for out-of-range options (or, on object storage, another sync policy).
    /// - [`Error::Io`](crate::Error::Io) if the file system fails; [`Error::Remote`](crate::Error::Remote) if a request fails.
    /// - [`Error::LogTakenOver`](crate::Error::LogTakenOver) if other writers kept claiming first.
    pub fn open(location: impl Into<Location>, opts: WalOptions) -> Result<Wal> {
        let location = location.into();
        let backend = location.open_log(opts)?;
        Ok(Wal { backend, location })
    }

    /// Where the log is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The policy the log appends under (a log on object storage always
    /// stores before `append` returns: [`crate::SyncPolicy::Always`]).
    pub fn sync_policy(&self) -> crate::SyncPolicy {
        self.backend.sync_policy()
    }

    /// Append one record, stamped with the current wall-clock time in
    /// milliseconds since the Unix epoch (see [`Wal::append_at`]).
    ///
    /// Under [`SyncPolicy::Always`](crate::SyncPolicy::Always) this returns only once the record is
    /// durable; under the other policies once it is written to the operating
    /// system. Safe to call from many threads: concurrent appends share syncs.
    ///
    /// # Errors
    /// [`Error::TooLarge`](crate::Error::TooLarge) if the payload exceeds `max_record_bytes`;
    /// [`Error::Poisoned`](crate::Error::Poisoned) after an earlier failed write or sync;
    /// [`Error::Io`](crate::Error::Io) if this append's write or sync failed (the log is then
    /// poisoned, and the record's fate is unknown until reopen);
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) in salvage mode.
    pub fn append(&self, payload: &[u8]) -> Result<RecordHandle> {
        self.append_at(payload, now_millis())
    }

    /// Append one record with a caller-supplied `time` (e.g. the batch time
    /// in ms), which [`Wal::purge_before_time`] compares against.
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub fn append_at(&self, payload: &[u8], time: u64) -> Result<RecordHandle> {
        self.backend.append_at(payload, time)
    }

    /// Append several records as one unit of waiting: their LSNs are
    /// consecutive, and under [`SyncPolicy::Always`](crate::SyncPolicy::Always) they become durable with
    /// one sync (more if they exceed `max_batch_bytes` or cross into a new
    /// segment). All records are
    /// stamped with the current time.
    ///
    /// Not atomic across a crash: after a crash, a prefix of the batch may
    /// survive (as with separate appends), never a record out of order.
    ///
    /// # Errors
    /// As [`Wal::append`]; a payload that is too large fails the whole call
    /// before anything is written.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Vec<RecordHandle>> {
        self.append_batch_at(payloads, now_millis())
    }

    /// [`Wal::append_batch`] with a caller-supplied time for every record.
    ///
    /// # Errors
    /// As [`Wal::append_batch`].
    pub fn append_batch_at<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        time: u64,
    ) -> Result<Vec<RecordHandle>> {
        let at = |i: usize| -> &[u8] { payloads[i].as_ref() };
        self.backend
            .append_batch_at(Payloads::new(payloads.len(), &at), time)
    }

    /// Make every record appended so far durable (`fdatasync`). Under
    /// [`SyncPolicy::Always`](crate::SyncPolicy::Always) there is nothing left to do and it returns at once.
    ///
    /// # Errors
    /// [`Error::Poisoned`](crate::Error::Poisoned), [`Error::Io`](crate::Error::Io) (which poisons the log), [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    /// Sync, then close the log, releasing the directory lock. Dropping a
    /// `Wal` closes it too but cannot report a failed sync.
    ///
    /// # Errors
    /// As [`Wal::sync`]; a read-only log closes without syncing.
    pub fn close(self) -> Result<()> {
        self.backend.close()
    }

    /// Read the record `handle` names, checking its checksums and that it is
    /// the record the handle says (LSN and length).
    ///
    /// Costs one positional read of the frame; allocates the payload.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if the handle's segment was removed by retention or
    /// the handle points past what this log holds; [`Error::Corruption`](crate::Error::Corruption) if
    /// the bytes there fail their checks or are another record; [`Error::Io`](crate::Error::Io).
    pub fn read(&self, handle: &RecordHandle) -> Result<Vec<u8>> {
        self.backend.read(handle)
    }

    /// Iterate over every record in the log, in LSN order, from the oldest
    /// retained. The iterator sees the records written when it was created.
    pub fn iter(&self) -> WalIter {
        self.backend.iter()
    }

    /// Iterate in LSN order from record `lsn` (the first item is `lsn` itself
    /// if it exists). If `lsn` was already removed by retention, the first
    /// item is [`Error::NotFound`](crate::Error::NotFound).
    pub fn iter_from(&self, lsn: u64) -> WalIter {
        self.backend.iter_from(lsn)
    }

    /// Delete every sealed segment whose records all have LSNs below `lsn`,
    /// oldest first, fsyncing the directory after each delete. The segment
    /// being written is never deleted. Call it once a durable checkpoint
    /// covers everything before `lsn`. Returns how many segments were deleted.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if a delete or directory sync fails (segments deleted
    /// before it stay deleted; a retry finishes the job); [`Error::Poisoned`](crate::Error::Poisoned);
    /// [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub fn purge_before_lsn(&self, lsn: u64) -> Result<usize> {
        self.backend.purge_before_lsn(lsn)
    }

    /// Delete every sealed segment, oldest first and stopping at the first
    /// that does not qualify, whose records all have a time below `time`
    /// (Spark's `clean(threshTime)`). As [`Wal::purge_before_lsn`] otherwise.
    ///
    /// # Errors
    /// As [`Wal::purge_before_lsn`].
    pub fn purge_before_time(&self, time: u64) -> Result<usize> {
        self.backend.purge_before_time(time)
    }

    /// LSN of the oldest retained record, or `None` if the log has none.
    pub fn first_lsn(&self) -> Option<u64> {
        self.backend.first_lsn()
    }

    /// LSN of the newest written record, or `None` if the log has none.
    pub fn last_lsn(&self) -> Option<u64> {
        self.backend.last_lsn()
    }

    /// The LSN the next append will get: one past the newest record ever
    /// written, whether or not retention has deleted it since.
    pub fn next_lsn(&self) -> u64 {
        self.backend.next_lsn()
    }

    /// What opening the log found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.backend.recovery_report()
    }

    /// Counters of the log's work since it was opened.
    pub fn stats(&self) -> WalStats {
        self.backend.stats()
    }

    /// True once a failed write or sync has poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.backend.is_poisoned()
    }
}
