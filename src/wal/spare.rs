//! Preparing the next segment ahead of need, on a background thread.
//!
//! Zero-filling (or allocating) and syncing a new segment costs a whole
//! segment's worth of writes. Done at rollover it stalls every appender of
//! that batch; done here, while the current segment fills, the leader at
//! rollover only writes the header, syncs it and renames the file (see
//! [`super::segment::install_spare`]).
//!
//! The thread prepares one spare at a time, for the sequence number the
//! leader asked for; the leader asks once the current segment is half full,
//! so a log opened only to be recovered and read prepares nothing, and the
//! thread is started by the first request. A spare exists only as
//! `NAME.wal.tmp`: a crash leaves a temporary file that the next open
//! removes, never a segment. If preparing fails (or the thread panics), the
//! leader prepares the segment itself at rollover and reports that error,
//! so a background failure is never lost and never poisons the log by
//! itself.
//!
//! On storage that does not allow background I/O (the simulator, the fault
//! injector) the maker is *inline*: a request prepares the spare at once on
//! the leader's thread. The same files are written in the same order of
//! steps relative to each other, deterministically, so crash tests cover
//! the spare path too.

use super::segment::{Fill, prepare_spare};
use crate::storage::{Storage, StorageFile};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

#[derive(Debug)]
enum Slot {
    Idle,
    /// The leader wants segment `seq` prepared so; not started yet.
    Requested(u64, Fill),
    /// Segment `seq`'s spare is being prepared.
    Preparing(u64),
    /// Segment `seq`'s spare is ready to install.
    Ready(u64, Arc<dyn StorageFile>),
    /// Preparing segment `seq` failed; the leader will try itself.
    Failed(u64),
    /// Closed, or the thread died: no more spares.
    Stopped,
}

#[derive(Debug)]
struct Inner {
    slot: Mutex<Slot>,
    cond: Condvar,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    bytes: u64,
}

/// A preparer of spare segment files.
#[derive(Debug)]
pub(super) struct SpareMaker {
    inner: Arc<Inner>,
    /// Prepare on the requesting thread instead of a background one.
    inline: bool,
    /// The background thread, once the first request started it.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SpareMaker {
    /// A preparer for segments of `bytes` in `dir`; `inline` prepares on the
    /// requesting thread. Starts no thread yet.
    pub(super) fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        bytes: u64,
        inline: bool,
    ) -> SpareMaker {
        SpareMaker {
            inner: Arc::new(Inner {
                slot: Mutex::new(Slot::Idle),
                cond: Condvar::new(),
                storage,
                dir,
                bytes,
            }),
            inline,
            thread: Mutex::new(None),
        }
    }

    /// Ask for segment `seq` to be prepared as `fill` says. Replaces an
    /// earlier request that has not started; a spare being prepared or
    /// ready for `seq` is kept.
    pub(super) fn request(&self, seq: u64, fill: Fill) {
        {
            let mut slot = lock(&self.inner.slot);
            match &*slot {
                Slot::Ready(s, _) if *s != seq => {
                    // A spare nobody will install: its segment exists already.
                    let _ = self.inner.storage.remove(&self.inner.tmp_path(*s));
                    *slot = Slot::Requested(seq, fill);
                }
                Slot::Idle | Slot::Requested(..) | Slot::Failed(_) => {
                    *slot = Slot::Requested(seq, fill);
                }
                Slot::Preparing(_) | Slot::Ready(..) | Slot::Stopped => return,
            }
            self.inner.cond.notify_all();
        }
        if self.inline {
            if let Some((seq, fill, slot)) = self.inner.next_request(false) {
                self.inner.prepare(seq, fill, slot);
            }
            return;
        }
        let mut thread = lock(&self.thread);
        if thread.is_none() {
            let worker = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("streamwal-spare".into())
                .spawn(move || worker.run());
            match spawned {
                Ok(t) => *thread = Some(t),
                // No thread: the leader prepares segments itself.
                Err(_) => *lock(&self.inner.slot) = Slot::Stopped,
            }
        }
    }

    /// Take the spare for segment `seq`, waiting if it is asked for or being
    /// prepared. `None` if there is none (not asked for, failed, for another
    /// segment, or no thread): the caller prepares it itself. Never returns
    /// while the thread works on `seq`, so the caller cannot race it for the
    /// file.
    pub(super) fn take(&self, seq: u64) -> Option<Arc<dyn StorageFile>> {
        let mut slot = lock(&self.inner.slot);
        loop {
            match &*slot {
                // The thread is idle but for this: waiting costs no more
                // than preparing here, and makes the outcome not depend on
                // scheduling.
                Slot::Requested(s, _) | Slot::Preparing(s) if *s == seq => {
                    slot = self
                        .inner
                        .cond
                        .wait(slot)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Slot::Ready(s, _) if *s == seq => {
                    let Slot::Ready(_, file) = std::mem::replace(&mut *slot, Slot::Idle) else {
                        return None;
                    };
                    return Some(file);
                }
                Slot::Failed(s) if *s == seq => {
                    *slot = Slot::Idle;
                    return None;
                }
                _ => return None,
            }
        }
    }

    /// Stop the thread (waiting for a spare being prepared) and remove an
    /// unused spare (best effort: the next open removes leftover temporary
    /// files anyway).
    pub(super) fn stop(&self) {
        let old = std::mem::replace(&mut *lock(&self.inner.slot), Slot::Stopped);
        self.inner.cond.notify_all();
        if let Slot::Ready(seq, _) = old {
            let _ = self.inner.storage.remove(&self.inner.tmp_path(seq));
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for SpareMaker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lock, ignoring poisoning: the slot is only ever replaced whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the slot stopped if the preparing thread unwinds, so that the
/// leader never waits for a spare that will not come.
struct StopOnUnwind<'a>(&'a Inner);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            *lock(&self.0.slot) = Slot::Stopped;
            self.0.cond.notify_all();
        }
    }
}

impl Inner {
    fn tmp_path(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!("{}.tmp", super::segment::segment_file_name(seq)))
    }

    /// The pending request, if any; with `wait`, block until there is one
    /// or the maker stops.
    fn next_request(&self, wait: bool) -> Option<(u64, Fill, MutexGuard<'_, Slot>)> {
        let mut slot = lock(&self.slot);
        loop {
            match *slot {
                Slot::Stopped => return None,
                Slot::Requested(seq, fill) => return Some((seq, fill, slot)),
                _ if !wait => return None,
                _ => slot = self.cond.wait(slot).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Prepare the requested spare and publish the outcome.
    fn prepare(&self, seq: u64, fill: Fill, mut slot: MutexGuard<'_, Slot>) {
        *slot = Slot::Preparing(seq);
        drop(slot);
        let result = prepare_spare(&*self.storage, &self.dir, seq, self.bytes, fill);
        let mut slot = lock(&self.slot);
        match (&*slot, result) {
            (Slot::Stopped, Ok(_)) => {
                drop(slot);
                let _ = self.storage.remove(&self.tmp_path(seq));
                return;
            }
            (Slot::Stopped, Err(_)) => return,
            (_, Ok(file)) => *slot = Slot::Ready(seq, file),
            // The leader prepares it itself and reports the error.
            (_, Err(_)) => *slot = Slot::Failed(seq),
        }
        self.cond.notify_all();
    }

    fn run(&self) {
        let _guard = StopOnUnwind(self);
        while let Some((seq, fill, slot)) = self.next_request(true) {
            self.prepare(seq, fill, slot);
        }
    }
}
