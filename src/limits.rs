//! Every bound the crate keeps, in one place, with units in the names.
//!
//! A reader never trusts a length it read from disk beyond these bounds, and a
//! writer never produces anything a reader would reject.

/// Size of a segment file's header, in bytes. Records start at this offset.
pub const SEGMENT_HEADER_BYTES: u64 = 64;

/// Size of a record frame's header (checksum, length, LSN, time, durable LSN,
/// kind), in bytes. The payload follows it.
pub const FRAME_HEADER_BYTES: u64 = 40;

/// Largest LSN and largest segment sequence number a reader accepts: 2^63.
/// Bounds every `+ 1` on values read from disk far from overflow.
pub const LSN_MAX: u64 = 1 << 63;

/// Default size at which a segment rolls over: 64 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Smallest segment size accepted by [`crate::WalOptions`]: 4 KiB.
pub const SEGMENT_BYTES_MIN: u64 = 4 << 10;

/// Largest segment size accepted by [`crate::WalOptions`]: 16 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 16 << 30;

/// Default largest payload a record may carry: 64 MiB.
pub const RECORD_BYTES_DEFAULT: u32 = 64 << 20;

/// Hard ceiling on a record payload, whatever the options say: 1 GiB. Keeps
/// every length a reader allocates from bounded even if a header lies.
pub const RECORD_BYTES_MAX: u32 = 1 << 30;

/// Default cap on the bytes one group-commit batch writes before its sync:
/// 4 MiB. A single record larger than this still goes out, alone.
pub const BATCH_BYTES_DEFAULT: u64 = 4 << 20;

/// Smallest batch cap accepted by [`crate::WalOptions`].
pub const BATCH_BYTES_MIN: u64 = 4 << 10;

/// Size of the zero buffer used to fill preallocated segments and to zero a
/// torn tail: 1 MiB.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Average frame size (bytes per record in the segment being filled) from
/// which the next segment is preallocated with `fallocate` instead of being
/// zero-filled: 128 KiB. Zero-filling writes every block twice, which costs
/// bandwidth; blocks that were only allocated cost a metadata commit at each
/// sync, which costs latency. Small records are latency-bound and large ones
/// bandwidth-bound; docs/PERFORMANCE.md has the measurements.
pub const ALLOCATE_FRAME_BYTES_MIN: u64 = 128 << 10;

/// Most sealed segment files a log keeps open at once: 64. Sealed segments
/// are opened when a read or an iterator needs them and the least recently
/// opened is closed beyond this, so that the descriptors a log holds do not
/// grow with the log. The tail segment is open besides, and a reader that is
/// in the middle of a segment keeps its file until it moves on.
pub const OPEN_SEALED_SEGMENTS_MAX: usize = 64;

/// Size of the reads the sequential scanner issues: 1 MiB (grown to one
/// record's size when a record is larger).
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The value stored in a segment header when the writer kept no bound on its
/// unsynced bytes (`SyncPolicy::Never`, or a purely time-based policy).
pub const UNSYNCED_WINDOW_UNBOUNDED: u64 = u64::MAX;

/// Most bytes the decoder may allocate for one checkpoint or journal event,
/// and the largest encoded checkpoint accepted: 1 GiB.
pub const DECODE_BYTES_MAX: usize = 1 << 30;

/// Most downtime batches recovery hands back under
/// [`crate::DowntimePolicy::RunEach`] (one per batch interval between the
/// last batch and "now"): 1,048,576, e.g. 12 days of 1-second batches.
/// Beyond it opening fails with [`crate::Error::DowntimeTooLong`].
pub const DOWNTIME_BATCHES_MAX: u64 = 1 << 20;

/// Default number of checkpoints kept on disk.
pub const CHECKPOINTS_KEPT_DEFAULT: usize = 10;

/// The longest query name of an exactly-once sink ([`crate::sink`]), in
/// bytes. Names are `[A-Za-z0-9_-]`: they become a directory name and part
/// of a sink's transaction names.
pub const QUERY_NAME_BYTES_MAX: usize = 48;

/// The largest transaction handle a [`crate::sink::TransactionalSink`] may
/// return from its pre-commit: 4 KiB.
pub const TXN_HANDLE_BYTES_MAX: usize = 4 << 10;

/// The largest record of a sink log: 64 KiB (one event, a handle at most).
pub const SINK_RECORD_BYTES_MAX: u32 = 64 << 10;

/// The most sources one batch of the offsets log ([`crate::sources`]) names.
pub const SOURCES_PER_BATCH_MAX: usize = 4_096;

/// The longest source name, in bytes.
pub const SOURCE_NAME_BYTES_MAX: usize = 256;

/// The largest record of the offsets log: 4 MiB (one batch's ranges).
pub const OFFSETS_RECORD_BYTES_MAX: u32 = 4 << 20;

// An event with the largest handle fits a sink record (version byte, tag,
// batch time and the handle's length prefix: under 32 bytes).
const _: () = assert!(TXN_HANDLE_BYTES_MAX + 32 <= SINK_RECORD_BYTES_MAX as usize);
// A plan with the most and longest names fits an offsets record (per
// source: the name's length prefix and two varint offsets, under 32 bytes).
const _: () = assert!(
    SOURCES_PER_BATCH_MAX * (SOURCE_NAME_BYTES_MAX + 32) + 32 <= OFFSETS_RECORD_BYTES_MAX as usize
);

const _: () = assert!(SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES <= SEGMENT_BYTES_MIN);
const _: () = assert!(RECORD_BYTES_DEFAULT <= RECORD_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= SEGMENT_BYTES_MIN);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_DEFAULT >= BATCH_BYTES_MIN);
const _: () = assert!(ZERO_CHUNK_BYTES as u64 >= SEGMENT_HEADER_BYTES);
