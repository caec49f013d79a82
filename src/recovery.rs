//! Driver recovery: `get_or_create`, in the spirit of Spark's
//! `StreamingContext.getOrCreate` plus `JobGenerator.restart`.
//!
//! The newest valid checkpoint gives the graph and the tracker's state at a
//! journal position; the journal events after it bring the tracker up to the
//! moment of the crash; from the two come the batches that must run again.

use crate::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore, SkippedCheckpoint};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::DOWNTIME_BATCHES_MAX;
use crate::storage::{StdStorage, Storage};
use crate::tracker::{BatchBlocks, BlockInfo, BlockTracker, StreamId};
use crate::wal::{RecoveryReport, Wal, WalOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of the journal's directory inside the checkpoint directory.
pub const JOURNAL_DIR_NAME: &str = "journal";

/// Options for [`get_or_create`].
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// The batch interval (ms) of a fresh context. A recovered context uses
    /// the interval stored in its checkpoint.
    pub batch_interval_ms: u64,
    /// Options of the receiver log (data blocks).
    pub receiver_log: WalOptions,
    /// Options of the metadata journal.
    pub journal: WalOptions,
    /// Options of the checkpoint store.
    pub checkpoints: CheckpointOptions,
}

impl ContextOptions {
    /// Durable defaults with the given batch interval (ms); the journal uses
    /// small (4 MiB) segments since its events are small.
    pub fn new(batch_interval_ms: u64) -> Self {
        ContextOptions {
            batch_interval_ms,
            receiver_log: WalOptions::default(),
            journal: WalOptions {
                segment_bytes: 4 << 20,
                max_record_bytes: 16 << 20,
                ..WalOptions::default()
            },
            checkpoints: CheckpointOptions::default(),
        }
    }
}

/// Why a batch is handed back to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    /// Generated but not completed when the checkpoint was taken.
    PendingAtCheckpoint,
    /// Allocated (journaled) and never committed, and not listed as pending
    /// in the checkpoint.
    AllocatedNotCommitted,
    /// Its time fell while the driver was down.
    Downtime,
}

/// A batch the recovered engine must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchToRun {
    /// The batch's time (ms).
    pub batch_time: u64,
    /// Its blocks per stream if it was allocated before the crash; `None` if
    /// not yet allocated: call [`BlockTracker::allocate_blocks_to_batch`]
    /// when running it. Blocks only move forward in time: the first such
    /// batch after the newest allocated one takes every unallocated block; a
    /// never-allocated batch older than the newest allocated one gets none.
    pub blocks: Option<BatchBlocks>,
    /// Why it runs.
    pub reason: RunReason,
}

/// What a recovered context must do and knows.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The batch time of the checkpoint used (`None`: recovered from the
    /// journal alone).
    pub checkpoint_time: Option<u64>,
    /// Batches to run, in time order. Committed batches are not here.
    pub batches: Vec<BatchToRun>,
    /// Blocks received and acknowledged but never allocated; they go to the
    /// next batch allocated.
    pub unallocated: BatchBlocks,
    /// Batches whose output is committed (and not cleaned up).
    pub committed: BTreeSet<u64>,
    /// Source offsets from the checkpoint.
    pub source_offsets: BTreeMap<String, String>,
}

/// What recovery found and did.
#[derive(Debug)]
pub struct ContextReport {
    /// The checkpoint file used, if any.
    pub checkpoint_used: Option<PathBuf>,
    /// Checkpoint files skipped, each with the reason.
    pub checkpoints_skipped: Vec<SkippedCheckpoint>,
    /// Journal events replayed on top of the checkpoint.
    pub journal_events_replayed: u64,
    /// The journal's recovery (torn bytes, segments, records).
    pub journal: RecoveryReport,
    /// The receiver log's recovery.
    pub receiver_log: RecoveryReport,
    /// How many batches must run again.
    pub batches_to_run: usize,
    /// Wall-clock time the whole recovery took.
    pub duration: Duration,
}

/// A streaming context: the graph, the receiver log, the tracker and the
/// checkpoint store, fresh or recovered.
#[derive(Debug)]
pub struct StreamingContext<G> {
    /// The engine's transformation graph.
    pub graph: G,
    /// The graph's schema version (from the checkpoint, or 0 when fresh).
    pub graph_version: u32,
    /// The batch interval (ms).
    pub batch_interval_ms: u64,
    /// The receiver log holding the data blocks.
    pub receiver_log: Arc<Wal>,
    /// The block tracker and its journal.
    pub tracker: Arc<BlockTracker>,
    /// The checkpoint store.
    pub checkpoints: Arc<CheckpointStore>,
    /// `None` for a fresh context; otherwise what must run again.
    pub recovered: Option<Recovered>,
    /// What recovery found and did.
    pub report: ContextReport,
}

/// Open the context in `checkpoint_dir` (checkpoints, and the journal in its
/// `journal/` subdirectory) with the receiver log in `receiver_dir`, on the
/// real file system. See [`get_or_create_with_storage`].
///
/// # Errors
/// As [`get_or_create_with_storage`].
pub fn get_or_create<G, F>(
    checkpoint_dir: impl AsRef<Path>,
    receiver_dir: impl AsRef<Path>,
    opts: ContextOptions,
    now_ms: u64,
    create: F,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    get_or_create_with_storage(
        Arc::new(StdStorage::new()),
        checkpoint_dir,
        receiver_dir,
        opts,
        now_ms,
        create,
    )
}

/// Open or recover a streaming context.
///
/// With no checkpoint and an empty journal, the context is fresh: the graph
/// comes from `create` and `recovered` is `None`. Otherwise the newest valid
/// checkpoint (damaged ones are skipped and reported) supplies the graph and
/// the tracker's state, the journal events after it are replayed, and
/// `recovered` lists every batch to run, in time order: batches pending at
/// the checkpoint, batches allocated after it and never committed, and one
/// batch per interval from the newest batch time up to `now_ms` (the
/// downtime), plus the acknowledged blocks never allocated. With no valid
/// checkpoint but a journal, the graph comes from `create` and the journal
/// alone gives the batches.
///
/// Recovery changes no record. It does write: missing directories and lock
/// files are created, an empty segment for a fresh or re-configured log,
/// leftover temporary files are removed, torn tails are zeroed and each log's
/// unproven last write is rewritten with its own bytes (see
/// [`Wal::open_with_storage`]).
///
/// # Errors
/// [`Error::InvalidOptions`] if the batch interval is zero or the downtime
/// spans more than [`DOWNTIME_BATCHES_MAX`] batches; the errors of
/// [`Wal::open_with_storage`], [`CheckpointStore::open_with_storage`] and
/// [`BlockTracker::open_with_storage`].
pub fn get_or_create_with_storage<G, F>(
    storage: Arc<dyn Storage>,
    checkpoint_dir: impl AsRef<Path>,
    receiver_dir: impl AsRef<Path>,
    opts: ContextOptions,
    now_ms: u64,
    create: F,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    let started = Instant::now();
    let checkpoint_dir = checkpoint_dir.as_ref();
    let store = CheckpointStore::open_with_storage(
        storage.clone(),
        checkpoint_dir,
        opts.checkpoints.clone(),
    )?;
    let journal_opts = opts.journal.clone();
    let receiver_opts = opts.receiver_log.clone();
    let journal_storage = storage.clone();
    assemble(
        store,
        |snapshot| {
            BlockTracker::open_with_storage(
                journal_storage,
                checkpoint_dir.join(JOURNAL_DIR_NAME),
                snapshot,
                journal_opts,
            )
        },
        || {
            Wal::open(
                crate::Location::dir_on(storage, receiver_dir.as_ref()),
                receiver_opts,
            )
        },
        &opts,
        now_ms,
        create,
        started,
    )
}

/// Name of the receiver log's location below a context's URL.
#[cfg(feature = "object-store")]
pub const RECEIVER_LOG_NAME: &str = "receiver";

/// [`get_or_create`] with everything at one URL: on object storage
/// (`s3://bucket/prefix`; see [`crate::object::ObjectLocation::parse`] and
/// [`get_or_create_at`]), or for `file:///path` on the local file system,
/// with the same layout (checkpoints in `path`, the journal in
/// `path/journal`, the receiver log in `path/receiver`).
///
/// # Errors
/// [`Error::InvalidUrl`], and as [`get_or_create_at`] or [`get_or_create`].
#[cfg(feature = "object-store")]
pub fn get_or_create_url<G, F>(
    url: &str,
    opts: ContextOptions,
    now_ms: u64,
    create: F,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    match crate::object::file_url_path(url)? {
        Some(dir) => get_or_create(&dir, dir.join(RECEIVER_LOG_NAME), opts, now_ms, create),
        None => get_or_create_at(
            crate::object::ObjectLocation::parse(url)?,
            opts,
            now_ms,
            create,
        ),
    }
}

/// Open or recover a streaming context kept on object storage (cargo
/// feature `object-store`), as [`get_or_create_with_storage`] does on a
/// file system, so that a driver restarted on any machine recovers it.
/// Below `location`: the checkpoints ([`CheckpointStore::open_at`]), the
/// journal in `journal/` and the receiver log in `receiver/` (both
/// [`Wal::open_at`]).
///
/// Opening takes the location over, part by part: the checkpoint store
/// takes a new epoch, then the journal and the receiver log are claimed.
/// A driver that opened it before is fenced as each part is taken (its
/// checkpoints stop counting, its appends fail with
/// [`Error::LogTakenOver`]); until then it can still write that part, and
/// what it wrote is what the new driver recovers. A driver that gets
/// [`Error::Fenced`] or [`Error::LogTakenOver`] from any part must stop:
/// two drivers opening at the same moment can each win a different part,
/// and both then fail at their first write to a part the other holds. The
/// journal and the receiver log must use [`crate::SyncPolicy::Always`]
/// (the default).
///
/// # Errors
/// As [`get_or_create_with_storage`], with [`Error::Remote`] for failed
/// requests and [`Error::TakeoverInProgress`] if another driver is half-way
/// through taking the checkpoints over.
#[cfg(feature = "object-store")]
pub fn get_or_create_at<G, F>(
    location: crate::object::ObjectLocation,
    opts: ContextOptions,
    now_ms: u64,
    create: F,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    let started = Instant::now();
    let journal = location.child(JOURNAL_DIR_NAME)?;
    let receiver = location.child(RECEIVER_LOG_NAME)?;
    let store = CheckpointStore::open_at(location, opts.checkpoints.clone())?;
    let journal_opts = opts.journal.clone();
    let receiver_opts = opts.receiver_log.clone();
    assemble(
        store,
        |snapshot| BlockTracker::open_with_log(Wal::open(journal, journal_opts)?, snapshot),
        || Wal::open(receiver, receiver_opts),
        &opts,
        now_ms,
        create,
        started,
    )
}

/// The recovery itself, over a store and two logs opened by the caller's
/// closures (the tracker needs the checkpoint's snapshot first).
fn assemble<G, F>(
    store: CheckpointStore,
    open_tracker: impl FnOnce(Option<(crate::tracker::TrackerState, u64)>) -> Result<BlockTracker>,
    open_receiver: impl FnOnce() -> Result<Wal>,
    opts: &ContextOptions,
    now_ms: u64,
    create: F,
    started: Instant,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    let latest = store.latest::<G>()?;
    let (checkpoint_used, checkpoint) = match latest.checkpoint {
        Some((path, c)) => (Some(path), Some(c)),
        None => (None, None),
    };
    let snapshot = checkpoint
        .as_ref()
        .map(|c| (c.tracker.clone(), c.journal_lsn));
    let tracker = open_tracker(snapshot)?;
    let receiver_log = open_receiver()?;
    let (state, journal_lsn) = tracker.snapshot()?;
    // Every acknowledged block must still be in the receiver log: a log whose
    // newest segments vanished cannot tell by itself.
    let receiver_last = receiver_log.next_lsn().saturating_sub(1);
    if state.last_block_lsn > receiver_last {
        return Err(Error::corruption(
            receiver_log.location().display_path(),
            0,
            CorruptionKind::LogTooShort {
                needed: state.last_block_lsn,
                last: receiver_last,
            },
        ));
    }

    let fresh = checkpoint.is_none() && journal_lsn == 0;
    let (graph, graph_version, interval, recovered) = match checkpoint {
        None if fresh => (create(), 0, opts.batch_interval_ms, None),
        checkpoint => {
            let (graph, version, interval, ckpt_time, pending, offsets) = match checkpoint {
                Some(c) => (
                    c.graph,
                    c.graph_version,
                    c.batch_interval_ms,
                    Some(c.batch_time),
                    c.pending_batches,
                    c.source_offsets,
                ),
                None => (
                    create(),
                    0,
                    opts.batch_interval_ms,
                    None,
                    Vec::new(),
                    BTreeMap::new(),
                ),
            };
            let batches = batches_to_run(&state, ckpt_time, &pending, interval, now_ms)?;
            let recovered = Recovered {
                checkpoint_time: ckpt_time,
                batches,
                unallocated: state.unallocated.clone(),
                committed: state.committed.clone(),
                source_offsets: offsets,
            };
            (graph, version, interval, Some(recovered))
        }
    };
    if interval == 0 {
        return Err(Error::InvalidOptions("the batch interval must be nonzero"));
    }
    let report = ContextReport {
        checkpoint_used,
        checkpoints_skipped: latest.skipped,
        journal_events_replayed: tracker.replay_report().events_replayed,
        journal: tracker.replay_report().journal.clone(),
        receiver_log: receiver_log.recovery_report().clone(),
        batches_to_run: recovered.as_ref().map_or(0, |r| r.batches.len()),
        duration: started.elapsed(),
    };
    Ok(StreamingContext {
        graph,
        graph_version,
        batch_interval_ms: interval,
        receiver_log: Arc::new(receiver_log),
        tracker: Arc::new(tracker),
        checkpoints: Arc::new(store),
        recovered,
        report,
    })
}

/// The batches to run after a crash, in time order (see [`get_or_create`]).
fn batches_to_run(
    state: &crate::tracker::TrackerState,
    checkpoint_time: Option<u64>,
    pending: &[u64],
    interval: u64,
    now_ms: u64,
) -> Result<Vec<BatchToRun>> {
    if interval == 0 {
        return Err(Error::InvalidOptions("the batch interval must be nonzero"));
    }
    let mut out: BTreeMap<u64, BatchToRun> = BTreeMap::new();
    let mut add = |t: u64, reason| {
        if state.committed.contains(&t) || t < state.cleaned_before {
            return;
        }
        out.entry(t).or_insert_with(|| BatchToRun {
            batch_time: t,
            blocks: state.allocated.get(&t).cloned(),
            reason,
        });
    };
    for &t in pending {
        add(t, RunReason::PendingAtCheckpoint);
    }
    for &t in state.allocated.keys() {
        add(t, RunReason::AllocatedNotCommitted);
    }
    let last = [
        checkpoint_time.unwrap_or(0),
        state.last_allocated_time,
        pending.iter().copied().max().unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let has_history =
        checkpoint_time.is_some() || state.last_allocated_time > 0 || !pending.is_empty();
    if has_history && now_ms > last {
        let count = (now_ms - last) / interval;
        if count > DOWNTIME_BATCHES_MAX {
            return Err(Error::InvalidOptions(
                "the downtime spans more batches than DOWNTIME_BATCHES_MAX",
            ));
        }
        for k in 1..=count {
            add(last + k * interval, RunReason::Downtime);
        }
    }
    Ok(out.into_values().collect())
}

impl<G> StreamingContext<G> {
    /// Read a block's bytes back from the receiver log, checking them.
    ///
    /// # Errors
    /// As [`Wal::read`].
    pub fn read_block(&self, block: &BlockInfo) -> Result<Vec<u8>> {
        self.receiver_log.read(&block.handle)
    }

    /// Read every block of a batch, per stream, in allocation order.
    ///
    /// # Errors
    /// As [`Wal::read`]; the first failing block ends the call.
    pub fn read_batch(&self, blocks: &BatchBlocks) -> Result<BTreeMap<StreamId, Vec<Vec<u8>>>> {
        read_batch(&self.receiver_log, blocks)
    }
}

impl<G: Serialize> StreamingContext<G> {
    /// Write a checkpoint of the graph and the tracker now, synchronously
    /// (durable when it returns), then [retire the
    /// journal](StreamingContext::retire_journal).
    ///
    /// # Errors
    /// [`CheckpointStore::write`] and [`BlockTracker::retire_journal`] errors.
    pub fn checkpoint(
        &mut self,
        batch_time: u64,
        pending_batches: Vec<u64>,
        source_offsets: BTreeMap<String, String>,
    ) -> Result<()> {
        let (tracker, journal_lsn) = self.tracker.snapshot()?;
        let ckpt = Checkpoint {
            batch_time,
            batch_interval_ms: self.batch_interval_ms,
            graph: &self.graph,
            graph_version: self.graph_version,
            pending_batches,
            journal_lsn,
            tracker,
            source_offsets,
        };
        self.checkpoints.write(&ckpt)?;
        self.retire_journal()?;
        Ok(())
    }
}

impl<G> StreamingContext<G> {
    /// Delete the journal segments that no kept checkpoint needs: every
    /// event at or below the smallest journal position among the checkpoint
    /// files on disk ([`CheckpointStore::journal_floor`]), so recovery from
    /// any of them still finds every event after it. Call it after a
    /// checkpoint written through a [`crate::checkpoint::CheckpointWriter`]
    /// is flushed. Returns how many journal segments were deleted.
    ///
    /// # Errors
    /// [`CheckpointStore::journal_floor`] and [`BlockTracker::retire_journal`]
    /// errors.
    pub fn retire_journal(&self) -> Result<usize> {
        match self.checkpoints.journal_floor()? {
            Some(floor) => self.tracker.retire_journal(floor),
            None => Ok(0),
        }
    }
}

/// Read every block of a batch from `receiver`, per stream, in order.
///
/// # Errors
/// As [`Wal::read`]; the first failing block ends the call.
pub fn read_batch(
    receiver: &Wal,
    blocks: &BatchBlocks,
) -> Result<BTreeMap<StreamId, Vec<Vec<u8>>>> {
    let mut out = BTreeMap::new();
    for (stream, list) in blocks {
        let mut payloads = Vec::with_capacity(list.len());
        for b in list {
            payloads.push(receiver.read(&b.handle)?);
        }
        out.insert(*stream, payloads);
    }
    Ok(out)
}
