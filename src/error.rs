//! The crate's one error type.
//!
//! Messages are short; the underlying cause, when there is one, comes from
//! [`std::error::Error::source`]. Match on variants, never on message text.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Who holds a context's lock, as written into its lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name (empty if it could not learn it).
    pub host: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "held by pid {} on host {}", self.pid, self.host)
    }
}

/// Why a context's newest checkpoint cannot be used
/// ([`Error::CheckpointUnusable`]). Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unusable {
    /// Its bytes are damaged (torn, truncated, a checksum failed) or it
    /// could not be read.
    Damaged,
    /// Its graph does not decode as the engine's graph type, and no
    /// migration turned it into one.
    GraphDoesNotDecode {
        /// The graph version stored in the checkpoint.
        graph_version: u32,
        /// The graph version the code declared
        /// ([`crate::recovery::ContextBuilder::graph_version`]).
        code_version: u32,
    },
    /// It was written by newer code: its graph version is above the code's.
    GraphVersionTooNew {
        /// The graph version stored in the checkpoint.
        found: u32,
        /// The newest graph version the code declared.
        supported: u32,
    },
    /// It is in a checkpoint format newer than this build reads.
    FormatTooNew {
        /// The format version in its header.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Damaged => write!(
                f,
                "it is damaged or unreadable; restore it, or recover from an older \
                 checkpoint with on_checkpoint_error(OnCheckpointError::UseOlder)"
            ),
            Unusable::GraphDoesNotDecode {
                graph_version,
                code_version,
            } => write!(
                f,
                "its graph (graph version {graph_version}) does not decode as this code's \
                 graph type (graph version {code_version}); register a migration with \
                 ContextBuilder::migrate_graph (and raise graph_version), or start a new \
                 graph with on_checkpoint_error(OnCheckpointError::CreateFresh)"
            ),
            Unusable::GraphVersionTooNew { found, supported } => write!(
                f,
                "it holds graph version {found}, newer than this code's {supported}; \
                 run the code that wrote it (or newer)"
            ),
            Unusable::FormatTooNew { found, supported } => write!(
                f,
                "it is in checkpoint format version {found}, newer than this build reads \
                 ({supported}); run the streamwal version that wrote it (or newer)"
            ),
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `streamwal`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("i/o error during {op} on {}", path.display())]
    Io {
        /// The operation that failed (`"write"`, `"sync_data"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what the writer wrote: a checksum failed, a
    /// length is out of bounds, a sequence is broken, a segment is missing.
    #[error("corruption in {} at offset {offset}: {kind}", file.display())]
    Corruption {
        /// The file holding the damage.
        file: PathBuf,
        /// Byte offset of the damaged structure within `file`.
        offset: u64,
        /// What exactly is wrong.
        kind: CorruptionKind,
    },
    /// Another opener (in this process or another) holds the directory's
    /// lock: a `Wal`, or a [`crate::recovery::StreamingContext`] (whose lock
    /// covers its whole directory). Nothing was changed. Stop the holder
    /// first, or open another location.
    #[error("{} is locked by another open log or context{}; stop it first, or open another location", path.display(), holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        /// The locked directory (for a context: the context's location).
        path: PathBuf,
        /// Who holds it, as the holder wrote into the lock file (a context
        /// does; a bare `Wal` does not), if that could be read.
        holder: Option<LockHolder>,
    },
    /// An earlier write or sync failed, so the log no longer knows what is
    /// durable. Every append and sync fails until the log is reopened, which
    /// re-runs recovery.
    #[error("the log is poisoned by an earlier i/o failure; reopen it to recover")]
    Poisoned,
    /// A payload (or a length read from disk) exceeds the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The maximum allowed.
        max: u64,
    },
    /// A handle names a record that is not in this log: its segment was
    /// removed by retention, or the handle belongs to another log.
    #[error("record {lsn} is not in the log (segment {segment})")]
    NotFound {
        /// The LSN the handle names.
        lsn: u64,
        /// The segment the handle names.
        segment: u64,
    },
    /// The log has used every LSN up to [`crate::limits::LSN_MAX`]; it takes
    /// no more appends.
    #[error("the log has no LSNs left")]
    LsnExhausted,
    /// The log was opened read-only (salvage mode) and cannot be written.
    #[error("the log is open read-only")]
    ReadOnly,
    /// A value could not be encoded (the engine's type refused to serialize).
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded (`"checkpoint"`, `"journal event"`, ...).
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Bytes that passed their checksum do not decode as the expected type:
    /// usually the engine's type changed since the bytes were written.
    #[error("cannot decode {what}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The deserializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The newest checkpoint of a context exists but cannot be used, and
    /// the context was not told what to do then (see
    /// [`crate::recovery::ContextBuilder::on_checkpoint_error`]). Nothing
    /// was changed: no fresh context was started, no file was touched.
    #[error("checkpoint {} cannot be used: {why}", file.display())]
    CheckpointUnusable {
        /// The checkpoint file (or object).
        file: PathBuf,
        /// Why, and what to do.
        why: Unusable,
        /// The error reading or decoding it, where there is one.
        #[source]
        source: Option<Box<Error>>,
    },
    /// The options passed to `open` are out of range.
    #[error("invalid option: {0}")]
    InvalidOptions(&'static str),
    /// A request to object storage failed (feature `object-store`). Like
    /// [`Error::Io`]: the operation's effect is unknown unless its
    /// documentation says otherwise.
    #[error("object storage error during {op} on {location}")]
    Remote {
        /// The operation that failed (`"put"`, `"list"`, ...).
        op: &'static str,
        /// The object or prefix it was applied to.
        location: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another driver took over: a store opened later on the same location
    /// took a newer epoch. Stop using this store: what it writes from now on
    /// never counts (a write that was in flight may or may not).
    #[error("fenced: this store's epoch {epoch} was superseded by epoch {newer}")]
    Fenced {
        /// This store's epoch.
        epoch: u64,
        /// The newest epoch found.
        newer: u64,
    },
    /// Another writer stored the object this log was about to write (a
    /// driver that opened the same log on object storage after this one):
    /// this log is taken over and poisoned, and the records of the batch
    /// that collided are not in the log.
    #[error("log taken over: another writer stored {location} first")]
    LogTakenOver {
        /// The object that collided.
        location: String,
    },
    /// A driver has taken a newer epoch on this object-storage location but
    /// not yet sealed it, so which checkpoints count is not decided yet.
    /// Retry shortly; a driver that died at that point is sealed by the next
    /// one to open.
    #[error("a takeover of the location (epoch {fence}) is in progress")]
    TakeoverInProgress {
        /// The epoch whose seal is missing.
        fence: u64,
    },
    /// An operator's stored keys or values do not decode as the types it was
    /// registered with: the engine changed them, or registered another
    /// operator under this name. Nothing was changed; register it with the
    /// types it was written with (or migrate it under a new name).
    #[error(
        "the state of operator {operator:?} does not decode as the registered key and value types"
    )]
    StateDecode {
        /// The operator's name.
        operator: String,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Keyed state was used out of order: a write with no batch open, a
    /// batch that does not come after the last committed one, a commit of
    /// another batch than the open one, or an operator registered twice
    /// with different types. The message says which; nothing was changed.
    #[error("keyed state: {0}")]
    StateMisuse(&'static str),
    /// The driver was down for more batch intervals than
    /// [`crate::DowntimePolicy::RunEach`] runs one by one; nothing was
    /// changed. Open with [`crate::DowntimePolicy::Coalesce`] (the default)
    /// to run them as one batch.
    #[error(
        "the driver was down for {intervals} batch intervals, more than the {max} \
         DowntimePolicy::RunEach runs; open with DowntimePolicy::Coalesce \
         (ContextBuilder::downtime_policy) to run them as one batch"
    )]
    DowntimeTooLong {
        /// The intervals missed.
        intervals: u64,
        /// The most `RunEach` runs ([`crate::limits::DOWNTIME_BATCHES_MAX`]).
        max: u64,
    },
    /// An exactly-once sink ([`crate::sink`]) failed: its client's error
    /// (a lost connection, a refused statement) is the source. The sink
    /// method's documentation says what is committed after it.
    #[error("sink of query {query:?} failed to {op} batch {batch_time}")]
    Sink {
        /// The query the sink writes for.
        query: String,
        /// The batch (0 when listing the sink's pending transactions).
        batch_time: u64,
        /// What failed: `"pre-commit"`, `"commit"`, `"abort"`, `"write"`,
        /// `"list in-doubt"`.
        op: &'static str,
        /// The sink's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A storage URL that cannot be used.
    #[error("invalid storage URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// What is wrong with bytes that failed a check. Part of [`Error::Corruption`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file does not start with the segment magic.
    BadMagic,
    /// The file was written by a format version this build cannot read.
    UnsupportedVersion {
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A header's fields are inconsistent with each other or with the file
    /// name (wrong header size, nonzero reserved bytes, sequence mismatch).
    BadHeader(&'static str),
    /// A checksum did not match.
    ChecksumMismatch {
        /// The checksum stored on disk.
        expected: u32,
        /// The checksum computed over the bytes read.
        actual: u32,
    },
    /// A record's length field exceeds the maximum record size.
    LengthOutOfBounds {
        /// The length read.
        len: u64,
        /// The bound it broke.
        max: u64,
    },
    /// A structure runs past the end of its file.
    Truncated,
    /// A record frame is malformed (zero or unknown kind, nonzero reserved bytes).
    BadFrame(&'static str),
    /// LSNs are not dense and increasing where they must be.
    LsnOutOfOrder {
        /// The LSN that should come next.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// A segment in the middle of the chain is missing.
    MissingSegment {
        /// The sequence number that should be present.
        expected: u64,
        /// The next sequence number found.
        found: u64,
    },
    /// A segment belongs to a different log (its log identity differs).
    ForeignSegment,
    /// An object the listing named was gone when read (object storage).
    ObjectVanished,
    /// Nonzero bytes where the log must be zero (past the end of the records
    /// of a segment, beyond what a crash can explain).
    UnexpectedData,
    /// A damaged record is followed by records written after it was durable,
    /// so the damage is not a torn write: it is corruption of durable data.
    DurableRecordDamaged {
        /// LSN of a later record that proves the damaged one was durable.
        proven_by_lsn: u64,
    },
    /// A handle does not match the record at its position.
    HandleMismatch,
    /// The log ends before a record that something durable refers to (a
    /// checkpoint's journal position, a tracked block): its newest
    /// segments are gone.
    LogTooShort {
        /// The LSN referred to.
        needed: u64,
        /// The log's last LSN (0 if empty).
        last: u64,
    },
    /// The log no longer holds a record that something durable needs (its
    /// segment was deleted by retention too early, or lost).
    LogStartsTooLate {
        /// The LSN needed.
        needed: u64,
        /// The oldest LSN the log holds (0 if none).
        first: u64,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("bad magic"),
            Self::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "format version {found} is not supported (newest supported: {supported})"
                )
            }
            Self::BadHeader(why) => write!(f, "bad header: {why}"),
            Self::ChecksumMismatch { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
                )
            }
            Self::LengthOutOfBounds { len, max } => {
                write!(f, "length {len} exceeds the bound {max}")
            }
            Self::Truncated => f.write_str("truncated"),
            Self::BadFrame(why) => write!(f, "bad record frame: {why}"),
            Self::LsnOutOfOrder { expected, found } => {
                write!(f, "expected LSN {expected}, found {found}")
            }
            Self::MissingSegment { expected, found } => {
                write!(f, "segment {expected} is missing (next present: {found})")
            }
            Self::ForeignSegment => f.write_str("segment belongs to another log"),
            Self::ObjectVanished => f.write_str("object was listed but gone when read"),
            Self::UnexpectedData => f.write_str("unexpected data past the end of the records"),
            Self::DurableRecordDamaged { proven_by_lsn } => write!(
                f,
                "damaged record was already durable (proven by record {proven_by_lsn})"
            ),
            Self::HandleMismatch => f.write_str("handle does not match the record at its offset"),
            Self::LogStartsTooLate { needed, first } => write!(
                f,
                "LSN {needed} is needed but the log starts at LSN {first}"
            ),
            Self::LogTooShort { needed, last } => write!(
                f,
                "the log ends at LSN {last} but LSN {needed} is referred to"
            ),
        }
    }
}

impl Error {
    /// The message followed by each of its causes, `: `-separated.
    pub(crate) fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            kind,
        }
    }

    /// True if this error reports damaged or inconsistent bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}
