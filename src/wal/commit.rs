//! Group commit: reserving LSNs and places, leading batches, publishing
//! the written and synced watermarks.
//!
//! Appenders encode their frames into a shared pending batch under the state
//! lock and wait. Whoever finds no leader at work becomes the leader: it takes
//! the whole pending batch, releases the lock, writes it (one `write` per
//! chunk) and syncs per the policy, then publishes the new watermarks and
//! wakes everyone. Appenders that arrive during the leader's sync gather in
//! the next batch and share the next sync.

use super::files::{FileCache, SegmentFile};
use super::format::{FrameHeader, SegmentHeader, encode_frame};
use super::options::{RecordHandle, RecoveryReport, SyncPolicy, WalOptions};
use super::segment::{Fill, SegmentInfo, create_segment, install_spare};
use super::spare::SpareMaker;
use crate::error::{Error, Result};
use crate::limits::{ALLOCATE_FRAME_BYTES_MIN, FRAME_HEADER_BYTES, LSN_MAX, SEGMENT_HEADER_BYTES};
use crate::storage::{DirLock, Storage, StorageFile};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What the log handle, the flusher thread and the group-commit leader
/// share: the options, the state under its lock, the leader's file, the
/// condition variables appenders and `sync` callers wait on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) opts: WalOptions,
    pub(super) log_id: u64,
    pub(super) read_only: bool,
    pub(super) state: Mutex<State>,
    /// `sync` callers wait here; woken after every batch.
    pub(super) cond: Condvar,
    /// Appenders wait on the one of these their batch's number picks.
    pub(super) batch_done: [Condvar; 2],
    pub(super) io: Mutex<Option<Io>>,
    pub(super) retention: Mutex<()>,
    pub(super) counters: Counters,
    pub(super) report: RecoveryReport,
    pub(super) stop: Mutex<bool>,
    pub(super) stop_cond: Condvar,
    /// Prepares the next segment ahead of need (see [`WalOptions::prepare_ahead`]).
    pub(super) spares: Option<SpareMaker>,
    /// The sealed segments open now, a bounded number.
    pub(super) files: Arc<FileCache>,
    pub(super) _lock: Option<Box<dyn DirLock>>,
}

/// What the log has done since it was opened (see `WalStats`).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) data_syncs: AtomicU64,
    pub(super) segments_created: AtomicU64,
    pub(super) segments_prepared_ahead: AtomicU64,
    pub(super) segments_removed: AtomicU64,
}

/// How far a new segment is preallocated (0: not at all).
pub(super) fn preallocate_bytes(opts: &WalOptions) -> u64 {
    if opts.preallocate {
        opts.segment_bytes
    } else {
        0
    }
}

#[derive(Debug)]
pub(crate) struct State {
    /// LSN the next reserved record gets.
    pub(super) next_lsn: u64,
    /// Segment and offset where the next reserved frame goes.
    pub(super) tail_seq: u64,
    pub(super) tail_off: u64,
    /// Every LSN <= this is written to its segment file.
    pub(super) written_lsn: u64,
    /// Every LSN <= this is durable.
    pub(super) synced_lsn: u64,
    /// A `sync()` caller wants every LSN <= this durable.
    pub(super) want_sync_lsn: u64,
    /// Bytes written since the last sync.
    pub(super) unsynced_bytes: u64,
    pub(super) pending: Batch,
    /// Number of the pending batch; batches are numbered in the order they
    /// are written. Its appenders wait on `batch_done[pending_id % 2]`.
    pub(super) pending_id: u64,
    /// Threads waiting on `batch_done[i]` and on `cond`: a condition
    /// variable is signalled only when someone waits on it (each signal is a
    /// system call, which a lone appender would otherwise pay twice per
    /// append).
    pub(super) batch_waiters: [u32; 2],
    pub(super) sync_waiters: u32,
    pub(super) spare: Batch,
    pub(super) leader: bool,
    pub(super) poisoned: bool,
    /// Segments whose records are written, in order. The last is the tail.
    pub(crate) segments: BTreeMap<u64, SegmentInfo>,
}

/// Frames waiting to be written, grouped in chunks: contiguous bytes of one
/// segment, each at most `max_batch_bytes` (or one frame).
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    pub(super) chunks: Vec<Chunk>,
}

#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) first_lsn: u64,
    pub(super) last_lsn: u64,
    pub(super) records: u64,
    pub(super) max_time: u64,
    /// This chunk starts a new segment: seal the current one and create it.
    pub(super) new_segment: bool,
}

/// The segment the leader writes to. Only the leader touches it.
#[derive(Debug)]
pub(super) struct Io {
    pub(super) file: Arc<dyn StorageFile>,
    pub(super) path: PathBuf,
    /// The next segment's spare has been asked for (once this segment is
    /// half full, so that a log opened only to be read costs no spare).
    pub(super) spare_requested: bool,
    /// Frame bytes and records this writer put in the segment: their ratio
    /// picks how the next segment is preallocated.
    pub(super) bytes: u64,
    pub(super) records: u64,
}

impl Shared {
    pub(super) fn check_len(&self, len: usize) -> Result<()> {
        if len as u64 > u64::from(self.opts.max_record_bytes) {
            return Err(Error::TooLarge {
                size: len as u64,
                max: u64::from(self.opts.max_record_bytes),
            });
        }
        Ok(())
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Poisoned)
    }

    pub(super) fn lock_writable(&self) -> Result<MutexGuard<'_, State>> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.lock()?;
        if st.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(st)
    }

    fn wait<'a>(&self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        st.sync_waiters += 1;
        let mut st = self.cond.wait(st).map_err(|_| Error::Poisoned)?;
        st.sync_waiters -= 1;
        Ok(st)
    }

    /// Wait for batch `id` to be written (or for this thread's turn to lead
    /// it). Appenders of one batch share a condition variable, so finishing a
    /// batch wakes its own appenders, not those gathered in the next one.
    fn wait_batch<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        id: u64,
    ) -> Result<MutexGuard<'a, State>> {
        let i = (id % 2) as usize;
        st.batch_waiters[i] += 1;
        let mut st = self.batch_done[i].wait(st).map_err(|_| Error::Poisoned)?;
        st.batch_waiters[i] -= 1;
        Ok(st)
    }

    /// Give `payload` its LSN and place, and encode its frame into the
    /// pending batch. Called with the state lock held.
    pub(super) fn reserve(
        &self,
        st: &mut State,
        payload: &[u8],
        time: u64,
    ) -> Result<RecordHandle> {
        let frame_bytes = FRAME_HEADER_BYTES + payload.len() as u64;
        let lsn = st.next_lsn;
        if lsn > LSN_MAX {
            return Err(Error::LsnExhausted);
        }
        let mut new_segment = false;
        if st.tail_off > SEGMENT_HEADER_BYTES && st.tail_off + frame_bytes > self.opts.segment_bytes
        {
            st.tail_seq += 1;
            st.tail_off = SEGMENT_HEADER_BYTES;
            new_segment = true;
        }
        let (seq, offset) = (st.tail_seq, st.tail_off);
        let batch = &mut st.pending;
        let start = batch.buf.len();
        let extend = match batch.chunks.last() {
            Some(c) => {
                !new_segment
                    && c.seq == seq
                    && (c.end - c.start) as u64 + frame_bytes <= self.opts.max_batch_bytes
            }
            None => false,
        };
        if !extend {
            batch.chunks.push(Chunk {
                seq,
                offset,
                start,
                end: start,
                first_lsn: lsn,
                last_lsn: lsn,
                records: 0,
                max_time: 0,
                new_segment,
            });
        }
        // Every LSN before this chunk's first is durable by the time the
        // chunk is written: under `Always` each earlier chunk and batch was
        // synced first (a failed sync poisons the log, and nothing more is
        // written), and a chunk that starts a segment follows the sync that
        // sealed the previous one. Otherwise only what is synced now counts.
        let (chunk_first, starts_segment) = batch
            .chunks
            .last()
            .map_or((lsn, new_segment), |c| (c.first_lsn, c.new_segment));
        let durable_lsn = if self.opts.sync_policy == SyncPolicy::Always || starts_segment {
            (chunk_first - 1).max(st.synced_lsn)
        } else {
            st.synced_lsn
        };
        debug_assert!(durable_lsn < lsn);
        let header = FrameHeader {
            payload_len: payload.len() as u32,
            lsn,
            time,
            durable_lsn,
            crc: 0,
        };
        let mut identity = [0u8; 16];
        identity[0..8].copy_from_slice(&self.log_id.to_le_bytes());
        identity[8..16].copy_from_slice(&seq.to_le_bytes());
        encode_frame(&identity, &header, payload, &mut batch.buf);
        if let Some(c) = batch.chunks.last_mut() {
            c.end = batch.buf.len();
            c.last_lsn = lsn;
            c.records += 1;
            c.max_time = c.max_time.max(time);
        }
        st.tail_off += frame_bytes;
        st.next_lsn += 1;
        debug_assert_eq!(st.pending.buf.len() - start, frame_bytes as usize);
        Ok(RecordHandle {
            lsn,
            segment: seq,
            offset,
            len: payload.len() as u32,
        })
    }

    /// Wait until `lsn` is written (and durable, under `Always`), leading
    /// batches when no one else is.
    pub(super) fn complete<'a>(&'a self, mut st: MutexGuard<'a, State>, lsn: u64) -> Result<()> {
        let durable = self.opts.sync_policy == SyncPolicy::Always;
        // `reserve` just put the record in the pending batch, under this lock.
        let batch = st.pending_id;
        loop {
            let done = if durable {
                st.synced_lsn >= lsn
            } else {
                st.written_lsn >= lsn
            };
            if done {
                return Ok(());
            }
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            st = if st.leader {
                self.wait_batch(st, batch)?
            } else {
                self.lead(st)?
            };
        }
    }

    pub(super) fn sync(&self) -> Result<()> {
        let mut st = self.lock_writable()?;
        let target = st.next_lsn - 1;
        st.want_sync_lsn = st.want_sync_lsn.max(target);
        loop {
            if st.synced_lsn >= target {
                return Ok(());
            }
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            st = if st.leader {
                self.wait(st)?
            } else {
                self.lead(st)?
            };
        }
    }

    /// Become the leader: write (and sync) the pending batch outside the
    /// lock, publish the watermarks, wake the waiters.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        debug_assert!(!st.leader);
        st.leader = true;
        let spare = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.pending, spare);
        let id = st.pending_id;
        st.pending_id += 1;
        let want_sync = st.want_sync_lsn > st.synced_lsn;
        let unsynced_before = st.unsynced_bytes;
        let written_before = st.written_lsn;
        drop(st);

        let mut guard = LeaderGuard {
            shared: self,
            armed: true,
        };
        let result = self.write_batch(&batch, want_sync, unsynced_before, written_before);
        guard.armed = false;

        let mut st = self.lock()?;
        st.leader = false;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                st.poisoned = true;
                drop(st);
                self.cond.notify_all();
                for c in &self.batch_done {
                    c.notify_all();
                }
                return Err(e);
            }
        };
        for seg in outcome.new_segments {
            // The segment before it is sealed now: its file may be closed.
            if let Some((_, sealed)) = st.segments.last_key_value() {
                sealed.file.unpin(&self.files);
            }
            st.segments.insert(seg.header.segment_seq, seg);
        }
        let mut records = 0;
        for c in &batch.chunks {
            if let Some(seg) = st.segments.get_mut(&c.seq) {
                seg.end = c.offset + (c.end - c.start) as u64;
                seg.records += c.records;
                seg.max_time = seg.max_time.max(c.max_time);
            }
            records += c.records;
        }
        let last = batch.chunks.last().map_or(written_before, |c| c.last_lsn);
        debug_assert!(last >= st.written_lsn);
        st.written_lsn = last;
        if let Some(t) = outcome.synced_through {
            debug_assert!(t >= st.synced_lsn);
            st.synced_lsn = t;
        }
        st.unsynced_bytes = outcome.unsynced_bytes;
        self.counters.records.fetch_add(records, Ordering::Relaxed);
        batch.buf.clear();
        batch.chunks.clear();
        st.spare = batch;
        // Wake this batch's appenders, hand the lead to one appender of the
        // next batch if it has any, and wake `sync` callers.
        let (this, next) = ((id % 2) as usize, ((id + 1) % 2) as usize);
        if st.batch_waiters[this] > 0 {
            self.batch_done[this].notify_all();
        }
        if !st.pending.chunks.is_empty() && st.batch_waiters[next] > 0 {
            self.batch_done[next].notify_one();
        }
        if st.sync_waiters > 0 {
            self.cond.notify_all();
        }
        Ok(st)
    }

    fn write_batch(
        &self,
        batch: &Batch,
        want_sync: bool,
        mut unsynced: u64,
        written_before: u64,
    ) -> Result<WriteOutcome> {
        let mut guard = self.io.lock().map_err(|_| Error::Poisoned)?;
        let Some(io) = guard.as_mut() else {
            return Err(Error::ReadOnly);
        };
        let mut out = WriteOutcome::default();
        let c = &self.counters;
        let sync = |io: &Io| -> Result<()> {
            c.data_syncs.fetch_add(1, Ordering::Relaxed);
            io.file
                .sync_data()
                .map_err(|e| Error::io("sync_data", &io.path, e))
        };
        for chunk in &batch.chunks {
            if chunk.new_segment {
                // The old segment is durable whole before the new one exists.
                sync(io)?;
                out.synced_through = Some(chunk.first_lsn - 1);
                unsynced = 0;
                let header = SegmentHeader {
                    log_id: self.log_id,
                    segment_seq: chunk.seq,
                    first_lsn: chunk.first_lsn,
                    unsynced_window_bytes: self.opts.unsynced_window_bytes(),
                    max_record_bytes: self.opts.max_record_bytes,
                };
                let spare = self.spares.as_ref().and_then(|s| s.take(chunk.seq));
                let (path, file) = match spare {
                    Some(spare) => {
                        let installed = install_spare(&*self.storage, &self.dir, &header, spare)?;
                        c.segments_prepared_ahead.fetch_add(1, Ordering::Relaxed);
                        installed
                    }
                    None => create_segment(
                        &*self.storage,
                        &self.dir,
                        &header,
                        preallocate_bytes(&self.opts),
                    )?,
                };
                c.segments_created.fetch_add(1, Ordering::Relaxed);
                *io = Io {
                    file: file.clone(),
                    path: path.clone(),
                    spare_requested: false,
                    bytes: 0,
                    records: 0,
                };
                out.new_segments.push(SegmentInfo {
                    file: SegmentFile::pinned(&path, file),
                    path,
                    header,
                    end: SEGMENT_HEADER_BYTES,
                    records: 0,
                    max_time: 0,
                });
            }
            let bytes = &batch.buf[chunk.start..chunk.end];
            io.file
                .write_at(bytes, chunk.offset)
                .map_err(|e| Error::io("write", &io.path, e))?;
            io.bytes += bytes.len() as u64;
            io.records += chunk.records;
            if let Some(s) = &self.spares
                && !io.spare_requested
                && chunk.offset + bytes.len() as u64 >= self.opts.segment_bytes / 2
            {
                let fill = if io.bytes / io.records.max(1) >= ALLOCATE_FRAME_BYTES_MIN {
                    Fill::Allocate
                } else {
                    Fill::Zeros
                };
                s.request(chunk.seq + 1, fill);
                io.spare_requested = true;
            }
            c.batches.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            unsynced += bytes.len() as u64;
            let due = match self.opts.sync_policy {
                SyncPolicy::Always => true,
                SyncPolicy::Periodic {
                    max_unsynced_bytes, ..
                } => unsynced >= max_unsynced_bytes,
                SyncPolicy::Never => false,
            };
            if due {
                sync(io)?;
                out.synced_through = Some(chunk.last_lsn);
                unsynced = 0;
            }
        }
        if want_sync && unsynced > 0 {
            sync(io)?;
            out.synced_through = Some(batch.chunks.last().map_or(written_before, |c| c.last_lsn));
            unsynced = 0;
        }
        out.unsynced_bytes = unsynced;
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct WriteOutcome {
    new_segments: Vec<SegmentInfo>,
    synced_through: Option<u64>,
    unsynced_bytes: u64,
}

/// Poisons the log and wakes every waiter if the leader's I/O unwinds (a
/// `Storage` that panics): the batch's fate is unknown, and without this
/// the other appenders would wait for a leader that is gone.
struct LeaderGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.leader = false;
        st.poisoned = true;
        drop(st);
        self.shared.cond.notify_all();
        for c in &self.shared.batch_done {
            c.notify_all();
        }
    }
}
