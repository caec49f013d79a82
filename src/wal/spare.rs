//! Preparing the next segment ahead of need, on a background thread.
//!
//! Zero-filling and syncing a new segment costs a whole segment's worth of
//! writes. Done at rollover it stalls every appender of that batch; done here,
//! while the current segment fills, the leader at rollover only writes the
//! header, syncs it and renames the file (see
//! [`super::segment::install_spare`]).
//!
//! The thread prepares one spare at a time, for the sequence number the
//! leader asked for; the leader asks once the current segment is half full,
//! so a log opened only to be recovered and read prepares nothing. A spare exists only as `NAME.wal.tmp`: a crash leaves a
//! temporary file that the next open removes, never a segment. If preparing
//! fails, the leader prepares the segment itself at rollover and reports that
//! error, so a background failure is never lost and never poisons the log by
//! itself.

use super::segment::{Fill, prepare_spare};
use crate::storage::{Storage, StorageFile};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

#[derive(Debug)]
enum Slot {
    Idle,
    /// The leader wants segment `seq` prepared so; the thread has not started.
    Requested(u64, Fill),
    /// The thread is preparing segment `seq`.
    Preparing(u64),
    /// Segment `seq`'s spare is ready to install.
    Ready(u64, Arc<dyn StorageFile>),
    /// Preparing segment `seq` failed; the leader will try itself.
    Failed(u64),
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

/// A background preparer of spare segment files.
#[derive(Debug)]
pub(super) struct SpareMaker {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SpareMaker {
    /// Start the preparer thread for segments of `bytes` in `dir`.
    pub(super) fn start(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        bytes: u64,
    ) -> std::io::Result<SpareMaker> {
        let inner = Arc::new(Inner {
            slot: Mutex::new(Slot::Idle),
            cond: Condvar::new(),
            storage,
            dir,
            bytes,
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("streamwal-spare".into())
            .spawn(move || worker.run())?;
        Ok(SpareMaker {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Ask for segment `seq` to be prepared as `fill` says. Replaces an
    /// earlier request that has not started; a spare being prepared or
    /// ready is kept.
    pub(super) fn request(&self, seq: u64, fill: Fill) {
        let Ok(mut slot) = self.inner.slot.lock() else {
            return;
        };
        match &*slot {
            Slot::Ready(s, _) if *s != seq => {
                // A spare nobody will install: its segment exists already.
                let _ = self.inner.storage.remove(&self.inner.tmp_path(*s));
                *slot = Slot::Requested(seq, fill);
                self.inner.cond.notify_all();
            }
            Slot::Idle | Slot::Requested(..) | Slot::Failed(_) => {
                *slot = Slot::Requested(seq, fill);
                self.inner.cond.notify_all();
            }
            Slot::Preparing(_) | Slot::Ready(..) | Slot::Stopped => {}
        }
    }

    /// Take the spare for segment `seq`, waiting if it is asked for or being
    /// prepared. `None` if there is none (not asked for, failed, or for
    /// another segment): the caller prepares it itself. Never returns while
    /// the thread works on `seq`, so the caller cannot race it for the file.
    pub(super) fn take(&self, seq: u64) -> Option<Arc<dyn StorageFile>> {
        let mut slot = self.inner.slot.lock().ok()?;
        loop {
            match &*slot {
                // The thread is idle but for this: waiting costs no more
                // than preparing here, and makes the outcome not depend on
                // scheduling.
                Slot::Requested(s, _) | Slot::Preparing(s) if *s == seq => {
                    slot = self.inner.cond.wait(slot).ok()?;
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

    /// Stop the thread and remove an unused spare (best effort: the next
    /// open removes leftover temporary files anyway).
    pub(super) fn stop(&self) {
        if let Ok(mut slot) = self.inner.slot.lock() {
            let old = std::mem::replace(&mut *slot, Slot::Stopped);
            self.inner.cond.notify_all();
            drop(slot);
            if let Slot::Ready(seq, _) = old {
                let _ = self.inner.storage.remove(&self.inner.tmp_path(seq));
            }
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for SpareMaker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn tmp_path(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!("{}.tmp", super::segment::segment_file_name(seq)))
    }

    fn wait_for_request(&self) -> Option<(u64, Fill, MutexGuard<'_, Slot>)> {
        let mut slot = self.slot.lock().ok()?;
        loop {
            match *slot {
                Slot::Stopped => return None,
                Slot::Requested(seq, fill) => return Some((seq, fill, slot)),
                _ => slot = self.cond.wait(slot).ok()?,
            }
        }
    }

    fn run(&self) {
        while let Some((seq, fill, mut slot)) = self.wait_for_request() {
            *slot = Slot::Preparing(seq);
            drop(slot);
            let result = prepare_spare(&*self.storage, &self.dir, seq, self.bytes, fill);
            let Ok(mut slot) = self.slot.lock() else {
                return;
            };
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
    }
}
