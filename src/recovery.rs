//! Driver recovery: [`StreamingContext::get_or_create`], in the spirit of Spark's
//! `StreamingContext.getOrCreate` plus `JobGenerator.restart`.
//!
//! The newest valid checkpoint gives the graph and the tracker's state at a
//! journal position; the journal events after it bring the tracker up to the
//! moment of the crash; from the two come the batches that must run again.

use crate::Location;
use crate::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore, SkippedCheckpoint};
pub use crate::downtime::DowntimePolicy;
use crate::error::{CorruptionKind, Error, Result};
use crate::state::{KeyedState, StateKey, StateOptions, StateStore, StateValue};
use crate::tracker::{BatchBlocks, BlockInfo, BlockTracker, StreamId};
use crate::upgrade::{GraphPolicy, unusable};
pub use crate::upgrade::{OnCheckpointError, StoredGraph};
use crate::wal::{RecoveryReport, Wal, WalOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of the journal's directory inside the checkpoint directory.
pub const JOURNAL_DIR_NAME: &str = "journal";

/// Name of the keyed state's location below a context's location.
pub const STATE_DIR_NAME: &str = "state";

/// Options for [`ContextBuilder::options`].
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
    /// Options of the keyed state store.
    pub state: StateOptions,
    /// What recovery does with the intervals missed while the driver was
    /// down. Default: [`DowntimePolicy::Coalesce`].
    pub downtime: DowntimePolicy,
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
            state: StateOptions::default(),
            downtime: DowntimePolicy::default(),
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
    /// Its time fell while the driver was down; under
    /// [`DowntimePolicy::Coalesce`] it stands for every missed interval.
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
    /// The batches committed after the checkpoint was taken, in time order,
    /// with their blocks: an engine that keeps its state in the graph runs
    /// them again on the checkpoint's graph, without writing output, before
    /// the `batches` (state kept in [`crate::state`] needs no such replay:
    /// it is already as of the last committed batch). Empty without a
    /// checkpoint. A batch cleaned up since the checkpoint is not listed
    /// (its blocks are forgotten): clean up only batches a checkpoint covers.
    pub committed_after_checkpoint: Vec<CommittedBatch>,
    /// The last committed batch that changed the keyed state.
    pub state_version: Option<u64>,
    /// Source offsets from the checkpoint.
    pub source_offsets: BTreeMap<String, String>,
}

/// A batch committed after the checkpoint recovery started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The batch's time (ms).
    pub batch_time: u64,
    /// Its blocks per stream, as allocated.
    pub blocks: BatchBlocks,
}

/// What recovery found and did.
#[derive(Debug)]
pub struct ContextReport {
    /// The checkpoint file used, if any.
    pub checkpoint_used: Option<PathBuf>,
    /// Checkpoint files skipped, each with the reason (only with
    /// [`OnCheckpointError::UseOlder`] or [`OnCheckpointError::CreateFresh`]:
    /// by default an unusable newest checkpoint is an error).
    pub checkpoints_skipped: Vec<SkippedCheckpoint>,
    /// Why the graph came from `create` although a checkpoint was used
    /// ([`OnCheckpointError::CreateFresh`]); `None` otherwise.
    pub graph_not_restored: Option<Error>,
    /// Journal events replayed on top of the checkpoint.
    pub journal_events_replayed: u64,
    /// The journal's recovery (torn bytes, segments, records).
    pub journal: RecoveryReport,
    /// The receiver log's recovery.
    pub receiver_log: RecoveryReport,
    /// How many batches must run again.
    pub batches_to_run: usize,
    /// Batches whose state delta was durable but whose commit in the tracker
    /// was not (a crash between the two steps of
    /// [`StreamingContext::commit_batch`]): recovery committed them.
    pub commits_completed: Vec<u64>,
    /// Wall-clock time the whole recovery took.
    pub duration: Duration,
}

/// A streaming context: the graph, the receiver log, the tracker and the
/// checkpoint store, fresh or recovered.
#[derive(Debug)]
pub struct StreamingContext<G> {
    /// The engine's transformation graph.
    pub graph: G,
    /// The graph's schema version, written into every checkpoint: the one
    /// set with [`ContextBuilder::graph_version`]; without it, the
    /// checkpoint's (0 when fresh).
    pub graph_version: u32,
    /// The batch interval (ms).
    pub batch_interval_ms: u64,
    /// The receiver log holding the data blocks.
    pub receiver_log: Arc<Wal>,
    /// The block tracker and its journal.
    pub tracker: Arc<BlockTracker>,
    /// The checkpoint store.
    pub checkpoints: Arc<CheckpointStore>,
    /// The keyed state, as of the last committed batch.
    pub state: Arc<StateStore>,
    /// `None` for a fresh context; otherwise what must run again.
    pub recovered: Option<Recovered>,
    /// What recovery found and did.
    pub report: ContextReport,
    /// The context's lock (in a directory); released on drop.
    _lock: Option<Box<dyn crate::storage::DirLock>>,
}

/// Name of the receiver log's location below a context's location, unless
/// [`ContextBuilder::receiver_log`] puts it elsewhere.
pub const RECEIVER_LOG_NAME: &str = "receiver";

impl<G: DeserializeOwned> StreamingContext<G> {
    /// Open or recover the context at `location` with the given batch
    /// interval for a fresh one, everything else at its default: the one
    /// line for the common case, as Spark's `getOrCreate(dir, create)`.
    ///
    /// ```
    /// use streamwal::recovery::StreamingContext;
    /// # fn main() -> streamwal::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let dir = tmp.path().join("ctx");
    /// let ctx = StreamingContext::get_or_create(&dir, 1_000, || vec![String::from("count")])?;
    /// assert!(ctx.recovered.is_none()); // fresh: nothing was there
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`ContextBuilder::get_or_create`].
    pub fn get_or_create(
        location: impl Into<Location>,
        batch_interval_ms: u64,
        create: impl FnOnce() -> G,
    ) -> Result<StreamingContext<G>> {
        StreamingContext::builder(location)
            .batch_interval_ms(batch_interval_ms)
            .get_or_create(create)
    }

    /// A builder for the context at `location`: a directory (a path, or a
    /// [`Location`] on another storage), or a parsed object-storage
    /// location. Below it: the checkpoints, the journal in `journal/`, and,
    /// unless [`ContextBuilder::receiver_log`] says otherwise, the receiver
    /// log in `receiver/`.
    pub fn builder(location: impl Into<Location>) -> ContextBuilder<G> {
        ContextBuilder {
            location: location.into(),
            receiver_log: None,
            opts: ContextOptions::new(0),
            now_ms: None,
            graph: GraphPolicy {
                version: None,
                migrate: None,
                on_error: OnCheckpointError::Fail,
            },
            _g: PhantomData,
        }
    }
}

/// How to open a [`StreamingContext`]; made by [`StreamingContext::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until get_or_create"]
pub struct ContextBuilder<G> {
    location: Location,
    receiver_log: Option<Location>,
    opts: ContextOptions,
    now_ms: Option<u64>,
    /// Graph version, migration, what to do with an unusable checkpoint
    /// (set by the methods in `crate::upgrade`).
    pub(crate) graph: GraphPolicy<G>,
    _g: PhantomData<fn() -> G>,
}

impl<G: DeserializeOwned> ContextBuilder<G> {
    /// The batch interval (ms) of a fresh context; a recovered one uses the
    /// interval in its checkpoint. Required for a fresh context.
    pub fn batch_interval_ms(mut self, ms: u64) -> Self {
        self.opts.batch_interval_ms = ms;
        self
    }

    /// Keep the receiver log at `location` instead of `receiver/` below
    /// the context.
    pub fn receiver_log(mut self, location: impl Into<Location>) -> Self {
        self.receiver_log = Some(location.into());
        self
    }

    /// Every option at once (batch interval, receiver log, journal,
    /// checkpoints), replacing what was set before.
    pub fn options(mut self, opts: ContextOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Options of the receiver log.
    pub fn receiver_log_options(mut self, opts: WalOptions) -> Self {
        self.opts.receiver_log = opts;
        self
    }

    /// What recovery does with the intervals missed while the driver was
    /// down (see [`DowntimePolicy`]). Default: [`DowntimePolicy::Coalesce`].
    pub fn downtime_policy(mut self, policy: DowntimePolicy) -> Self {
        self.opts.downtime = policy;
        self
    }

    /// The clock: the time (ms) recovery counts missed intervals up to.
    /// Default: the system clock, read when the context opens.
    pub fn now_ms(mut self, now_ms: u64) -> Self {
        self.now_ms = Some(now_ms);
        self
    }

    /// Open or recover the context.
    ///
    /// In a directory, the context's lock (`LOCK` in it, holding the pid
    /// and host name of the holder) is taken first, before any file is
    /// read, created or removed; it covers the checkpoints, the journal,
    /// the state and a receiver log below the context, and is held until
    /// the context is dropped. On object storage the checkpoint store's
    /// new epoch plays that part and is taken first, before the journal,
    /// the state and the receiver log are opened.
    ///
    /// With no checkpoint and an empty journal, the context is fresh: the
    /// graph comes from `create` and `recovered` is `None`. Otherwise the
    /// newest checkpoint in write order supplies the graph (if it cannot be
    /// used, see [`ContextBuilder::on_checkpoint_error`]) and the tracker's state, the journal events after
    /// it are replayed, and `recovered` lists every batch to run, in time
    /// order: batches pending at the checkpoint, batches allocated after it
    /// and never committed, and the batches for the intervals from the newest
    /// batch time up to the clock (the downtime; one batch for all of them,
    /// or one each, as [`ContextBuilder::downtime_policy`] says), plus the
    /// acknowledged blocks never allocated. With no valid checkpoint but a
    /// journal, the graph comes from `create` and the journal alone gives
    /// the batches.
    ///
    /// Recovery changes no record. It does write: missing directories and
    /// lock files are created, an empty segment for a fresh or re-configured
    /// log, leftover temporary files are removed, torn tails are zeroed and
    /// each log's unproven last write is rewritten with its own bytes (see
    /// [`Wal::open`]).
    ///
    /// On object storage, opening takes the location over, part by part:
    /// the checkpoint store takes a new epoch, then the journal and the
    /// receiver log are claimed. A driver that opened it before is fenced
    /// as each part is taken (its checkpoints stop counting, its appends
    /// fail with [`Error::LogTakenOver`]); until then it can still write
    /// that part, and what it wrote is what the new driver recovers. A
    /// driver that gets [`Error::Fenced`] or [`Error::LogTakenOver`] from
    /// any part must stop: two drivers opening at the same moment can each
    /// win a different part, and both then fail at their first write to a
    /// part the other holds.
    ///
    /// # Errors
    /// [`Error::Locked`] if another context (or log) holds the directory,
    /// naming it and the holder's pid and host; nothing was touched.
    /// [`Error::CheckpointUnusable`] if the newest checkpoint is damaged,
    /// its graph does not decode (nor migrate), or newer code wrote it,
    /// unless [`ContextBuilder::on_checkpoint_error`] says otherwise; also
    /// with [`OnCheckpointError::UseOlder`] when no checkpoint is usable and
    /// the journal no longer starts at its beginning.
    /// [`Error::InvalidOptions`] if the batch interval is zero;
    /// [`Error::DowntimeTooLong`] if under [`DowntimePolicy::RunEach`] the
    /// downtime spans more than [`crate::limits::DOWNTIME_BATCHES_MAX`] batches; the errors
    /// of [`Wal::open`], [`CheckpointStore::open`] and [`BlockTracker::open`]
    /// ([`Error::Remote`] for failed requests to object storage, and
    /// [`Error::TakeoverInProgress`] if another driver is half-way through
    /// taking the checkpoints over).
    pub fn get_or_create(self, create: impl FnOnce() -> G) -> Result<StreamingContext<G>> {
        let started = Instant::now();
        let now_ms = self.now_ms.unwrap_or_else(crate::wal::now_millis);
        let journal = self.location.child(JOURNAL_DIR_NAME)?;
        let receiver = match self.receiver_log {
            Some(at) => at,
            None => self.location.child(RECEIVER_LOG_NAME)?,
        };
        let state = self.location.child(STATE_DIR_NAME)?;
        // One owner: the lock before anything in the directory is touched.
        let lock = match (self.location.storage(), self.location.path()) {
            (Some(storage), Some(dir)) => Some(crate::context_lock::lock_context(&**storage, dir)?),
            _ => None,
        };
        let parts = Parts {
            store: CheckpointStore::open(&self.location, self.opts.checkpoints.clone())?,
            journal,
            state,
            receiver,
        };
        let mut ctx = assemble(parts, &self.opts, &self.graph, now_ms, create, started)?;
        ctx._lock = lock;
        Ok(ctx)
    }
}

/// Where a context's parts are: the checkpoint store (opened first: the
/// tracker needs its snapshot) and the locations of the others.
struct Parts {
    store: CheckpointStore,
    journal: Location,
    state: Location,
    receiver: Location,
}

/// The recovery itself.
#[allow(clippy::too_many_arguments)]
fn assemble<G, F>(
    parts: Parts,
    opts: &ContextOptions,
    policy: &GraphPolicy<G>,
    now_ms: u64,
    create: F,
    started: Instant,
) -> Result<StreamingContext<G>>
where
    G: DeserializeOwned,
    F: FnOnce() -> G,
{
    let Parts {
        store,
        journal,
        state,
        receiver,
    } = parts;
    // With CreateFresh a graph that does not decode is not a reason to
    // pass the checkpoint over: its tracker state is still good.
    let fresh_graph = policy.on_error == OnCheckpointError::CreateFresh;
    let mut graph_not_restored = None;
    let mut latest =
        store.latest_by(|file, header, raw| match policy.decode(file, header, raw) {
            Ok(g) => Ok(Some(g)),
            Err(e) if fresh_graph => {
                graph_not_restored = Some(e);
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
    if policy.on_error == OnCheckpointError::Fail && !latest.skipped.is_empty() {
        let newest = latest.skipped.swap_remove(0);
        return Err(unusable(&newest.file, newest.reason));
    }
    if fresh_graph && graph_not_restored.is_none() {
        // The newest was damaged and an older one used: still a fresh graph.
        if let Some(first) = latest.skipped.first() {
            graph_not_restored = Some(unusable(
                &first.file,
                Error::InvalidOptions("an older checkpoint was used for the blocks and batches"),
            ));
        }
    }
    let (checkpoint_used, checkpoint) = match latest.checkpoint {
        Some((path, c)) => (Some(path), Some(c)),
        None => (None, None),
    };
    let snapshot = checkpoint
        .as_ref()
        .map(|c| (c.tracker.clone(), c.journal_lsn));
    let tracker = match BlockTracker::open(journal, snapshot, opts.journal.clone()) {
        Ok(t) => t,
        // No checkpoint was usable and the journal was retired past its
        // start: the cause is the checkpoint, not the journal.
        Err(Error::Corruption {
            kind: CorruptionKind::LogStartsTooLate { .. },
            ..
        }) if checkpoint.is_none() && !latest.skipped.is_empty() => {
            let newest = latest.skipped.swap_remove(0);
            return Err(unusable(&newest.file, newest.reason));
        }
        Err(e) => return Err(e),
    };
    let keyed = StateStore::open(state, opts.state.clone())?;
    let commits_completed = complete_commits(&tracker, &keyed)?;
    let receiver_log = Wal::open(receiver, opts.receiver_log.clone())?;
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
        None if fresh => (
            create(),
            policy.version.unwrap_or(0),
            opts.batch_interval_ms,
            None,
        ),
        checkpoint => {
            let committed_then = checkpoint.as_ref().map(|c| c.tracker.committed.clone());
            let (graph, version, interval, ckpt_time, pending, offsets) = match checkpoint {
                Some(c) => (
                    match c.graph {
                        Some(g) if graph_not_restored.is_none() => g,
                        _ => create(),
                    },
                    // A graph from `create` is not the checkpoint's version.
                    policy.version.unwrap_or(if graph_not_restored.is_none() {
                        c.graph_version
                    } else {
                        0
                    }),
                    c.batch_interval_ms,
                    Some(c.batch_time),
                    c.pending_batches,
                    c.source_offsets,
                ),
                None => (
                    create(),
                    policy.version.unwrap_or(0),
                    opts.batch_interval_ms,
                    None,
                    Vec::new(),
                    BTreeMap::new(),
                ),
            };
            let batches =
                batches_to_run(&state, ckpt_time, &pending, interval, now_ms, opts.downtime)?;
            let recovered = Recovered {
                checkpoint_time: ckpt_time,
                batches,
                unallocated: state.unallocated.clone(),
                committed: state.committed.clone(),
                committed_after_checkpoint: committed_then
                    .map(|then| committed_since(&state, &then))
                    .unwrap_or_default(),
                state_version: keyed.version(),
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
        graph_not_restored,
        journal_events_replayed: tracker.replay_report().events_replayed,
        journal: tracker.replay_report().journal.clone(),
        receiver_log: receiver_log.recovery_report().clone(),
        batches_to_run: recovered.as_ref().map_or(0, |r| r.batches.len()),
        commits_completed,
        duration: started.elapsed(),
    };
    Ok(StreamingContext {
        graph,
        graph_version,
        batch_interval_ms: interval,
        receiver_log: Arc::new(receiver_log),
        tracker: Arc::new(tracker),
        checkpoints: Arc::new(store),
        state: Arc::new(keyed),
        recovered,
        report,
        _lock: None,
    })
}

/// Commit in the tracker every batch whose state delta is durable but whose
/// tracker commit is not (a crash between the two steps of
/// `commit_batch`); the batches it committed. A batch already cleaned up is
/// left alone.
fn complete_commits(tracker: &BlockTracker, keyed: &StateStore) -> Result<Vec<u64>> {
    let report = keyed.report();
    let candidates = report
        .snapshot_used
        .as_ref()
        .map(|(_, t)| *t)
        .into_iter()
        .chain(report.deltas_replayed.iter().copied());
    let (state, _) = tracker.snapshot()?;
    let mut done = Vec::new();
    for t in candidates {
        if t >= state.cleaned_before && !state.committed.contains(&t) {
            tracker.commit_batch(t)?;
            done.push(t);
        }
    }
    Ok(done)
}

/// The batches committed now and not in `then`, in time order, with their
/// blocks.
fn committed_since(
    state: &crate::tracker::TrackerState,
    then: &BTreeSet<u64>,
) -> Vec<CommittedBatch> {
    state
        .committed
        .iter()
        .filter(|t| !then.contains(t))
        .map(|&batch_time| CommittedBatch {
            batch_time,
            blocks: state
                .allocated
                .get(&batch_time)
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// The batches to run after a crash, in time order (see
/// [`ContextBuilder::get_or_create`]).
fn batches_to_run(
    state: &crate::tracker::TrackerState,
    checkpoint_time: Option<u64>,
    pending: &[u64],
    interval: u64,
    now_ms: u64,
    downtime: DowntimePolicy,
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
    if has_history {
        for t in crate::downtime::missed_batches(downtime, last, interval, now_ms)? {
            add(t, RunReason::Downtime);
        }
    }
    Ok(out.into_values().collect())
}

impl<G> StreamingContext<G> {
    /// The keyed state of operator `name` (see [`StateStore::operator`]).
    ///
    /// # Errors
    /// As [`StateStore::operator`].
    pub fn state<K: StateKey, V: StateValue>(&self, name: &str) -> Result<KeyedState<K, V>> {
        self.state.operator(name)
    }

    /// Open batch `batch_time` for state changes; keys whose timeout falls
    /// due are removed now (see [`StateStore::begin_batch`]).
    ///
    /// # Errors
    /// As [`StateStore::begin_batch`].
    pub fn begin_batch(&self, batch_time: u64) -> Result<()> {
        self.state.begin_batch(batch_time)
    }

    /// Commit batch `batch_time`: first its state delta, durably (the
    /// state's commit), then the output commit in the tracker's journal.
    /// Call it after the batch's output is written. A crash between the two
    /// steps is finished by recovery, which commits the batch in the
    /// tracker ([`ContextReport::commits_completed`]); a crash before the
    /// first leaves neither, and the batch runs again on the state as it
    /// was before it. Without [`StreamingContext::begin_batch`] (an engine
    /// that keeps no keyed state) only the tracker commits.
    ///
    /// # Errors
    /// [`StateStore::commit_batch`] and [`BlockTracker::commit_batch`]
    /// errors; [`Error::StateMisuse`] if another batch is open for state
    /// changes. After an I/O error the batch is not known to be committed:
    /// stop and recover.
    pub fn commit_batch(&self, batch_time: u64) -> Result<()> {
        match self.state.open_batch() {
            Some(open) if open == batch_time => self.state.commit_batch(batch_time)?,
            // Committing another batch would leave the open one's state
            // changes to be committed under a batch they do not belong to.
            Some(_) => {
                return Err(Error::StateMisuse(
                    "commit_batch of a batch other than the one open for state changes",
                ));
            }
            None => {}
        }
        self.tracker.commit_batch(batch_time)
    }

    /// Drop the open batch's state changes (see [`StateStore::abort_batch`]).
    pub fn abort_batch(&self) {
        self.state.abort_batch()
    }

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

/// What [`StreamingContext::checkpoint`] records beside the graph and the
/// tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointAt {
    /// The batch time the checkpoint is taken at (ms).
    pub batch_time: u64,
    /// Batch times generated but not completed yet: recovery runs them again.
    pub pending_batches: Vec<u64>,
    /// Free-form source positions (e.g. Kafka partition -> offset).
    pub source_offsets: BTreeMap<String, String>,
}

impl CheckpointAt {
    /// A checkpoint at `batch_time` with no pending batches and no offsets.
    pub fn batch(batch_time: u64) -> CheckpointAt {
        CheckpointAt {
            batch_time,
            ..CheckpointAt::default()
        }
    }
}

impl<G: Serialize> StreamingContext<G> {
    /// Write a checkpoint of the graph and the tracker now, synchronously
    /// (durable when it returns), then [retire the
    /// journal](StreamingContext::retire_journal).
    ///
    /// # Errors
    /// [`CheckpointStore::write`] and [`BlockTracker::retire_journal`] errors.
    pub fn checkpoint(&self, at: CheckpointAt) -> Result<()> {
        let (tracker, journal_lsn) = self.tracker.snapshot()?;
        let ckpt = Checkpoint {
            batch_time: at.batch_time,
            batch_interval_ms: self.batch_interval_ms,
            graph: &self.graph,
            graph_version: self.graph_version,
            pending_batches: at.pending_batches,
            journal_lsn,
            tracker,
            source_offsets: at.source_offsets,
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
