//! The state store: operators in memory, a delta per committed batch in the
//! state log, snapshots in the background, and recovery from the newest
//! valid snapshot plus the deltas after it.

use super::operator::{Frozen, Operator, Raw, StateKey, StateValue, Typed};
use super::record::{DeltaOut, EncodeEach, STATE_FORMAT_VERSION, SnapshotOut};
use super::{KeyedState, StateOptions, recover};
use crate::checkpoint::{
    Checkpoint, CheckpointOptions, CheckpointStore, GraphEncoding, SkippedCheckpoint,
};
use crate::error::{Error, Result};
use crate::tracker::TrackerState;
use crate::{Location, RecoveryReport, SyncPolicy, Wal, codec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Name of the state log's location below the state's location.
pub const STATE_LOG_NAME: &str = "log";
/// Name of the snapshot store's location below the state's location.
pub const STATE_SNAPSHOTS_NAME: &str = "snapshots";

/// What opening the state store found and did.
#[derive(Debug, Default)]
pub struct StateReport {
    /// The snapshot used, and the batch it is as of.
    pub snapshot_used: Option<(PathBuf, u64)>,
    /// Newer snapshots that were skipped (damaged, or undecodable), each
    /// with the reason; recovery then used an older one and more deltas.
    pub snapshots_skipped: Vec<SkippedCheckpoint>,
    /// The batches whose deltas were replayed on top of the snapshot, in
    /// order.
    pub deltas_replayed: Vec<u64>,
    /// The last committed batch that changed the state (a batch that
    /// changed nothing writes no delta); `None` if none ever did.
    pub version: Option<u64>,
    /// The state log's own recovery.
    pub log: RecoveryReport,
    /// Time the whole recovery took.
    pub duration: Duration,
}

/// Counters of the background snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Snapshots written since open.
    pub snapshots_written: u64,
    /// Snapshots that failed (the deltas stay; a later one retries).
    pub snapshot_failures: u64,
    /// The last failure's message, with its causes.
    pub last_snapshot_error: Option<String>,
    /// Batches committed since the last snapshot began.
    pub batches_since_snapshot: u64,
    /// Delta bytes committed since the last snapshot began.
    pub bytes_since_snapshot: u64,
}

/// Keyed operator state versioned by batch time. See [`crate::state`].
pub struct StateStore {
    log: Arc<Wal>,
    snapshots: Arc<CheckpointStore>,
    opts: StateOptions,
    inner: Mutex<Inner>,
    snapshot: Arc<SnapshotSlot>,
    /// Whether snapshots may run on a thread of their own: not on a storage
    /// that needs every I/O in call order (the simulator, the fault
    /// injector), where they run inside the commit that starts them.
    background: bool,
    report: StateReport,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("log", &self.log.location())
            .field("snapshots", &self.snapshots.location())
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

struct Inner {
    state_id: u64,
    version: Option<u64>,
    open: Option<u64>,
    operators: BTreeMap<String, Box<dyn Operator>>,
    /// LSN of the newest delta.
    last_lsn: u64,
    poisoned: bool,
    stats: StateStats,
}

/// The background snapshot: at most one at a time.
#[derive(Default)]
struct SnapshotSlot {
    running: Mutex<bool>,
    done: Condvar,
    outcome: Mutex<(u64, u64, Option<String>)>,
}

impl StateStore {
    /// Open (or create) the state at `location`: the state log in `log/`
    /// and the snapshots in `snapshots/` below it, on a directory or on
    /// object storage. Recovers the state as of the last committed batch:
    /// the newest snapshot that passes its checks (damaged ones are skipped
    /// and reported), then every delta after it, in order. Operators come
    /// back as bytes and are decoded when the engine registers them
    /// ([`StateStore::operator`]).
    ///
    /// # Errors
    /// - [`Error::InvalidOptions`] if the log's policy is not
    ///   [`SyncPolicy::Always`] or an interval is 0.
    /// - [`Error::Corruption`] if a delta a snapshot needs is gone (the log
    ///   was cut, or starts after it), if a delta belongs to another
    ///   context or comes out of batch order, or if the log is damaged (the
    ///   error names the file and the offset); never a smaller state.
    /// - [`Error::Decode`] if a delta that passed its checksum does not
    ///   decode; and the errors of [`Wal::open`] and
    ///   [`CheckpointStore::open`].
    pub fn open(location: impl Into<Location>, opts: StateOptions) -> Result<StateStore> {
        let started = Instant::now();
        if opts.log.sync_policy != SyncPolicy::Always {
            return Err(Error::InvalidOptions(
                "the state log must use SyncPolicy::Always",
            ));
        }
        if opts.snapshot_every_batches == 0 || opts.snapshot_every_bytes == 0 {
            return Err(Error::InvalidOptions(
                "state snapshot intervals must be at least 1",
            ));
        }
        let location = location.into();
        let background = location
            .storage()
            .is_none_or(|storage| storage.allows_background_io());
        let snapshots = CheckpointStore::open(
            location.child(STATE_SNAPSHOTS_NAME)?,
            CheckpointOptions {
                keep: opts.snapshots_kept,
            },
        )?;
        let log = Wal::open(location.child(STATE_LOG_NAME)?, opts.log.clone())?;
        let mut report = StateReport {
            log: log.recovery_report().clone(),
            ..StateReport::default()
        };
        let recovered = recover::recover(&log, &snapshots, &mut report)?;
        let recover::Recovered {
            operators,
            state_id,
            version,
            last_lsn,
        } = recovered;
        report.version = version;
        report.duration = started.elapsed();
        let operators = operators
            .into_iter()
            .map(|(name, op)| (name, Box::new(op) as Box<dyn Operator>))
            .collect();
        Ok(StateStore {
            log: Arc::new(log),
            snapshots: Arc::new(snapshots),
            opts,
            inner: Mutex::new(Inner {
                state_id: state_id.unwrap_or_else(crate::wal::random_id),
                version,
                open: None,
                operators,
                last_lsn,
                poisoned: false,
                stats: StateStats::default(),
            }),
            snapshot: Arc::new(SnapshotSlot::default()),
            background,
            report,
        })
    }

    /// What opening found and did.
    pub fn report(&self) -> &StateReport {
        &self.report
    }

    /// The last committed batch that changed the state (the state is as of
    /// every later committed batch too: they changed nothing); `None` if
    /// no batch ever changed it.
    pub fn version(&self) -> Option<u64> {
        self.lock().version
    }

    /// The batch open for changes, if any.
    pub fn open_batch(&self) -> Option<u64> {
        self.lock().open
    }

    /// Every operator (registered or only recovered), with its key count.
    pub fn operators(&self) -> Vec<(String, usize)> {
        let inner = self.lock();
        inner
            .operators
            .iter()
            .map(|(n, op)| (n.clone(), op.len()))
            .collect()
    }

    /// Counters of the background snapshots.
    pub fn stats(&self) -> StateStats {
        let mut stats = self.lock().stats.clone();
        let outcome = lock(&self.snapshot.outcome);
        stats.snapshots_written = outcome.0;
        stats.snapshot_failures = outcome.1;
        stats.last_snapshot_error = outcome.2.clone();
        stats
    }

    /// The handle of operator `name` with keys `K` and values `V`,
    /// registering it on first use (a recovered operator is decoded now).
    /// Handles are cheap to clone; every handle of a name shares one map.
    ///
    /// # Errors
    /// [`Error::StateDecode`] if the recovered keys or values do not decode
    /// as `K` and `V`; [`Error::StateMisuse`] if `name` is registered with
    /// other types in this process. Nothing changes on error.
    pub fn operator<K: StateKey, V: StateValue>(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<KeyedState<K, V>> {
        let mut inner = self.lock();
        let typed = match inner.operators.get(name) {
            None => Some(Typed::<K, V>::from_raw(name, &Raw::default())?),
            Some(op) if op.as_any().is::<Typed<K, V>>() => None,
            Some(op) => match op.as_any().downcast_ref::<Raw>() {
                Some(raw) => Some(Typed::<K, V>::from_raw(name, raw)?),
                None => {
                    return Err(Error::StateMisuse(
                        "the operator is already registered with other key or value types",
                    ));
                }
            },
        };
        if let Some(typed) = typed {
            inner.operators.insert(name.to_string(), Box::new(typed));
        }
        Ok(KeyedState::new(self.clone(), name))
    }

    /// Open batch `batch_time` for changes and time out every key whose
    /// expiry is at or before it, in every operator (registered or not), as
    /// changes of this batch: a replay of the batch times out the same keys.
    ///
    /// # Errors
    /// [`Error::StateMisuse`] if a batch is open or `batch_time` is not
    /// after the last committed one; [`Error::Poisoned`] after a failed
    /// commit.
    pub fn begin_batch(&self, batch_time: u64) -> Result<()> {
        let mut inner = self.lock_usable()?;
        if inner.open.is_some() {
            return Err(Error::StateMisuse(
                "a batch is already open; commit or abort it first",
            ));
        }
        if inner.version.is_some_and(|v| batch_time <= v) {
            return Err(Error::StateMisuse(
                "the batch is not after the last committed one",
            ));
        }
        inner.open = Some(batch_time);
        let mut failed = None;
        for op in inner.operators.values_mut() {
            if let Err(e) = op.expire(batch_time) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            undo_all(&mut inner);
            return Err(e);
        }
        Ok(())
    }

    /// Make the open batch's changes durable as one delta in the state log:
    /// when this returns `Ok`, recovery restores the state as of this
    /// batch. A batch that changed nothing writes nothing. May start a
    /// background snapshot (every [`StateOptions::snapshot_every_batches`]
    /// batches or [`StateOptions::snapshot_every_bytes`] bytes of deltas).
    ///
    /// [`crate::StreamingContext::commit_batch`] calls this, then commits the
    /// batch in the tracker; recovery finishes that second step if a crash
    /// came between the two.
    ///
    /// # Errors
    /// [`Error::StateMisuse`] if `batch_time` is not the open batch;
    /// [`Error::Encode`] if a changed key or value refuses to serialize, or
    /// [`Error::TooLarge`] if the delta exceeds the log's record limit
    /// (nothing was written; the batch stays open: abort it); the log's
    /// other append errors, after which the store is poisoned (every call
    /// fails with [`Error::Poisoned`]; reopen to recover): whether the
    /// delta is durable is unknown.
    pub fn commit_batch(&self, batch_time: u64) -> Result<()> {
        let mut inner = self.lock_usable()?;
        if inner.open != Some(batch_time) {
            return Err(Error::StateMisuse("commit of a batch that is not open"));
        }
        let encoded = {
            let changes: Vec<(&str, Box<dyn EncodeEach + '_>)> = inner
                .operators
                .iter()
                .filter(|(_, op)| op.has_changes())
                .map(|(name, op)| (name.as_str(), op.changes()))
                .collect();
            if changes.is_empty() {
                None
            } else {
                let delta = DeltaOut {
                    state_id: inner.state_id,
                    batch_time,
                    operators: changes.iter().map(|(n, c)| (*n, &**c)).collect(),
                };
                Some(codec::encode(&delta, "state delta"))
            }
        };
        if let Some(encoded) = encoded {
            let appended = encoded.and_then(|b| self.log.append(&b).map(|h| (h, b.len())));
            let (handle, len) = match appended {
                Ok(done) => done,
                // Refused before anything was written (a key or value does
                // not encode, or the delta exceeds the log's record limit):
                // the batch stays open, unchanged, to be aborted.
                Err(e @ (Error::Encode { .. } | Error::TooLarge { .. })) => return Err(e),
                Err(e) => {
                    inner.poisoned = true;
                    return Err(e);
                }
            };
            inner.last_lsn = handle.lsn();
            inner.version = Some(batch_time);
            inner.stats.batches_since_snapshot += 1;
            inner.stats.bytes_since_snapshot += len as u64;
        }
        for op in inner.operators.values_mut() {
            op.commit();
        }
        inner.open = None;
        let due = inner.stats.batches_since_snapshot >= self.opts.snapshot_every_batches
            || inner.stats.bytes_since_snapshot >= self.opts.snapshot_every_bytes;
        let job = if due { self.freeze(&mut inner) } else { None };
        drop(inner);
        if let Some(job) = job {
            // In call order (no background I/O), a failed snapshot is
            // reported in the stats, as a background one is: the batch is
            // committed either way.
            let _ = self.launch(job, !self.background);
        }
        Ok(())
    }

    /// Drop the open batch's changes: every operator is as of the last
    /// committed batch again. No effect with no batch open.
    pub fn abort_batch(&self) {
        let mut inner = self.lock();
        undo_all(&mut inner);
    }

    /// Write a snapshot of the committed state now and wait for it (and for
    /// one already running), then retire the deltas no kept snapshot needs.
    /// The store stays usable from other threads while it is written.
    /// The batch loop does not need this (snapshots run in the background);
    /// tests and tools do.
    ///
    /// # Errors
    /// [`Error::StateMisuse`] with a batch open; the snapshot's write errors
    /// (the deltas stay: nothing is lost).
    pub fn snapshot_now(&self) -> Result<()> {
        loop {
            self.wait_for_snapshot();
            let mut inner = self.lock_usable()?;
            if inner.open.is_some() {
                return Err(Error::StateMisuse(
                    "a batch is open; snapshots are of committed state",
                ));
            }
            if inner.version.is_none() {
                return Ok(()); // nothing was ever committed
            }
            // `None`: a commit on another thread started one meanwhile;
            // wait for it and write this one after.
            if let Some(job) = self.freeze(&mut inner) {
                // The store is not locked while the snapshot is written: a
                // batch loop on another thread goes on.
                drop(inner);
                return self.launch(job, true);
            }
        }
    }

    /// Wait until no snapshot is being written.
    pub fn wait_for_snapshot(&self) {
        let mut running = lock(&self.snapshot.running);
        while *running {
            running = self
                .snapshot
                .done
                .wait(running)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Freeze the committed state (no batch is open) for a snapshot: O(1)
    /// per operator. `None` if nothing was ever committed or a snapshot is
    /// already being written (the next due commit starts another).
    fn freeze(&self, inner: &mut Inner) -> Option<SnapshotJob> {
        let version = inner.version?;
        {
            let mut running = lock(&self.snapshot.running);
            if *running {
                return None;
            }
            *running = true;
        }
        inner.stats.batches_since_snapshot = 0;
        inner.stats.bytes_since_snapshot = 0;
        Some(SnapshotJob {
            frozen: inner
                .operators
                .iter()
                .map(|(n, op)| (n.clone(), op.frozen()))
                .collect(),
            state_id: inner.state_id,
            version,
            last_lsn: inner.last_lsn,
            log: self.log.clone(),
            snapshots: self.snapshots.clone(),
        })
    }

    /// Encode and write a frozen snapshot: here if `wait`, else on a thread.
    fn launch(&self, job: SnapshotJob, wait: bool) -> Result<()> {
        let slot = self.snapshot.clone();
        if wait {
            let got = job.run();
            slot.finish(&got);
            return got;
        }
        let spawned = std::thread::Builder::new()
            .name("streamwal-state-snapshot".into())
            .spawn(move || {
                let got = job.run();
                slot.finish(&got);
            });
        if let Err(e) = spawned {
            let err = Error::io("spawn", self.snapshots.location().display_path(), e);
            self.snapshot.finish(&Err(err));
        }
        Ok(())
    }

    pub(crate) fn with_operator<K: StateKey, V: StateValue, R>(
        &self,
        name: &str,
        write: bool,
        f: impl FnOnce(&mut Typed<K, V>, Option<u64>) -> Result<R>,
    ) -> Result<R> {
        let mut inner = self.lock_usable()?;
        let open = inner.open;
        if write && open.is_none() {
            return Err(Error::StateMisuse(
                "no batch is open; call begin_batch first",
            ));
        }
        let typed = inner
            .operators
            .get_mut(name)
            .and_then(|op| op.as_any_mut().downcast_mut::<Typed<K, V>>())
            .ok_or(Error::StateMisuse(
                "the operator is registered with other key or value types",
            ))?;
        f(typed, open)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn lock_usable(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.lock();
        if inner.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(inner)
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        // A snapshot thread holds only Arcs; waiting keeps a reopen in this
        // process from racing its last write.
        self.wait_for_snapshot();
    }
}

fn undo_all(inner: &mut Inner) {
    for op in inner.operators.values_mut() {
        op.undo();
    }
    inner.open = None;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct SnapshotJob {
    frozen: Vec<(String, Box<dyn Frozen>)>,
    state_id: u64,
    version: u64,
    last_lsn: u64,
    log: Arc<Wal>,
    snapshots: Arc<CheckpointStore>,
}

impl SnapshotJob {
    fn run(self) -> Result<()> {
        let body = SnapshotOut {
            state_id: self.state_id,
            batch_time: self.version,
            log_lsn: self.last_lsn,
            operators: self
                .frozen
                .iter()
                .map(|(name, frozen)| (name.as_str(), &**frozen as &dyn EncodeEach))
                .collect(),
        };
        // Bincode, not the graphs' CBOR: a snapshot body is large, and its
        // own format version (`STATE_FORMAT_VERSION`) governs its layout.
        self.snapshots.write_with(
            &Checkpoint {
                batch_time: self.version,
                batch_interval_ms: 0,
                graph: body,
                graph_version: STATE_FORMAT_VERSION,
                pending_batches: Vec::new(),
                journal_lsn: self.last_lsn,
                tracker: TrackerState::default(),
                source_offsets: BTreeMap::new(),
            },
            GraphEncoding::Bincode,
        )?;
        // Every kept snapshot's deltas stay, so a damaged newest snapshot
        // falls back to an older one plus more deltas.
        if let Some(floor) = self.snapshots.journal_floor()? {
            self.log.purge_before_lsn(floor + 1)?;
        }
        Ok(())
    }
}

impl SnapshotSlot {
    fn finish(&self, got: &Result<()>) {
        {
            let mut outcome = lock(&self.outcome);
            match got {
                Ok(()) => outcome.0 += 1,
                Err(e) => {
                    outcome.1 += 1;
                    outcome.2 = Some(e.with_causes());
                }
            }
        }
        *lock(&self.running) = false;
        self.done.notify_all();
    }
}
