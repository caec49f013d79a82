//! The background checkpoint writer: the engine hands a checkpoint over and
//! goes on with the next batch while a thread writes it durably.

use super::Checkpoint;
use super::store::{CheckpointStore, EncodedCheckpoint};
use crate::error::{Error, Result};
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Counters of a [`CheckpointWriter`], for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Checkpoints queued by [`CheckpointWriter::submit`].
    pub submitted: u64,
    /// Checkpoints written durably.
    pub written: u64,
    /// Checkpoints never written because a newer one replaced them in the
    /// queue.
    pub superseded: u64,
    /// Checkpoints whose write failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The one checkpoint waiting to be written, with its ticket (1, 2, ...
    /// in submission order). A newer submission replaces it.
    queued: Option<(u64, EncodedCheckpoint)>,
    /// Ticket of the newest submission.
    submitted: u64,
    /// Every ticket up to this one was written, superseded, or failed.
    processed: u64,
    /// The first write error not yet reported to the engine.
    error: Option<Error>,
    /// Set by drop: write what is queued, then exit.
    shutdown: bool,
    /// The thread exited (by panic) without being asked to.
    dead: bool,
    stats: WriterStats,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a checkpoint is queued or shutdown is asked.
    work: Condvar,
    /// Signalled when `processed` advances or the thread dies.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes checkpoints on a background thread, through
/// [`CheckpointStore::write_encoded`] (the same durable temp + fsync +
/// rename + directory fsync path as [`CheckpointStore::write`]).
///
/// **Skipping.** The queue holds one checkpoint. If the thread is still
/// writing when the engine submits again, and again, only the newest
/// submission waits: each older queued checkpoint is dropped and never
/// written, because the newer one supersedes it. Checkpoints that are written
/// are written in submission order, so the newest file on disk is always the
/// newest checkpoint written.
///
/// **Errors** go back to the engine: a failed write is returned by the next
/// [`CheckpointWriter::submit`] or [`CheckpointWriter::flush`], never only
/// logged.
///
/// **Drop** writes what is queued and joins the thread, but cannot report an
/// error: call [`CheckpointWriter::close`] (or `flush`) to see it.
#[derive(Debug)]
pub struct CheckpointWriter {
    store: Arc<CheckpointStore>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// Start the writer thread for `store`.
    ///
    /// # Errors
    /// [`Error::Io`] (op `"spawn"`) if the thread cannot be started.
    pub fn new(store: Arc<CheckpointStore>) -> Result<CheckpointWriter> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let thread = {
            let (store, shared) = (store.clone(), shared.clone());
            std::thread::Builder::new()
                .name("streamwal-checkpoint".into())
                .spawn(move || run(&store, &shared))
        }
        .map_err(|e| Error::io("spawn", store.location().display_path(), e))?;
        Ok(CheckpointWriter {
            store,
            shared,
            thread: Some(thread),
        })
    }

    /// The store this writer writes to.
    pub fn store(&self) -> &Arc<CheckpointStore> {
        &self.store
    }

    /// Encode `ckpt` on the calling thread (so the graph is captured as it is
    /// now, and `G` need not be `Send`), queue the bytes and return without
    /// waiting for the write. Replaces a queued checkpoint not yet being
    /// written (see the type's docs: that one is never written).
    ///
    /// # Errors
    /// - An earlier background write failed and no call reported it yet:
    ///   that error ([`Error::Io`] usually) is returned and `ckpt` is **not**
    ///   queued; submit it again.
    /// - [`Error::Encode`] / [`Error::TooLarge`] if `ckpt` cannot be encoded
    ///   (nothing is queued).
    /// - [`Error::Poisoned`] if the writer thread died.
    pub fn submit<G: Serialize>(&self, ckpt: &Checkpoint<G>) -> Result<()> {
        let encoded = CheckpointStore::encode(ckpt)?;
        let mut st = self.shared.lock();
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if st.dead {
            return Err(Error::Poisoned);
        }
        st.submitted += 1;
        st.stats.submitted += 1;
        let ticket = st.submitted;
        if st.queued.replace((ticket, encoded)).is_some() {
            st.stats.superseded += 1;
        }
        drop(st);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Block until every checkpoint submitted before this call is durable
    /// (written, or superseded by a newer one that was written).
    ///
    /// # Errors
    /// The first background write error not yet reported by `submit` or
    /// `flush` (later ones are counted in [`WriterStats::failed`]); after
    /// returning it, the next `flush` starts clean. [`Error::Poisoned`] if
    /// the writer thread died.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.shared.lock();
        let target = st.submitted;
        while st.processed < target && !st.dead {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if st.processed < target {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Counters so far. Does not block on the writer thread's I/O.
    pub fn stats(&self) -> WriterStats {
        self.shared.lock().stats
    }

    /// Flush, stop the thread and join it. Blocks until pending writes end.
    ///
    /// # Errors
    /// As [`CheckpointWriter::flush`].
    pub fn close(mut self) -> Result<()> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was already recorded as `dead`.
            let _ = thread.join();
        }
    }
}

impl Drop for CheckpointWriter {
    /// Writes the queued checkpoint, if any, and joins the thread. Errors
    /// are lost: use [`CheckpointWriter::close`] to see them.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the writer dead if the thread unwinds, so waiters do not hang.
struct DeathGuard<'a>(&'a Shared);

impl Drop for DeathGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().dead = true;
            self.0.done.notify_all();
        }
    }
}

fn run(store: &CheckpointStore, shared: &Shared) {
    let _guard = DeathGuard(shared);
    loop {
        let (ticket, encoded) = {
            let mut st = shared.lock();
            loop {
                if let Some(job) = st.queued.take() {
                    break job;
                }
                if st.shutdown {
                    return;
                }
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = store.write_encoded(&encoded);
        let mut st = shared.lock();
        debug_assert!(ticket > st.processed, "tickets are written in order");
        st.processed = ticket;
        match result {
            Ok(_) => st.stats.written += 1,
            Err(e) => {
                st.stats.failed += 1;
                if st.error.is_none() {
                    st.error = Some(e);
                }
            }
        }
        drop(st);
        shared.done.notify_all();
    }
}
