//! The log handle: open, append, sync, read, retention. The group-commit
//! machinery behind append and sync, and the state it shares with this
//! handle (`Shared`), live in `commit`.

use super::commit::{Batch, Counters, Io, Shared, State, preallocate_bytes};
use super::files::{FileCache, SegmentFile};
use super::format::SegmentHeader;
use super::iter::WalIter;
use super::options::{
    RecordHandle, RecoveryMode, RecoveryReport, SyncPolicy, WalOptions, WalStats,
};
use super::recover::recover;
use super::segment::{SegmentInfo, create_segment};
use super::spare::SpareMaker;
use crate::error::{Error, Result};
use crate::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::Storage;
use crate::wal::backend::Payloads;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The log over a directory of segment files: the backend of [`Wal`]
/// for local storage.
#[derive(Debug)]
pub(crate) struct FileWal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh 64-bit id, different per call, process and time (not
/// cryptographic): log ids, and the object store's fence nonces.
pub(crate) fn new_log_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

impl FileWal {
    pub(crate) fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<FileWal> {
        opts.validate()?;
        let started = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        let read_only = opts.recovery_mode == RecoveryMode::Salvage;
        if !read_only {
            crate::storage::create_dir_durably(&*storage, &dir)?;
        }
        let lock = match storage.try_lock_dir(&dir) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                return Err(Error::Locked {
                    path: dir,
                    holder: None,
                });
            }
            // A read-only salvage open may not be able to create the lock file.
            Err(_) if read_only => None,
            Err(e) => return Err(Error::io("lock", &dir, e)),
        };
        let files = FileCache::new(storage.clone());
        let rec = recover(&*storage, &dir, &opts, &files)?;
        if rec.next_lsn > crate::limits::LSN_MAX && !read_only {
            return Err(Error::LsnExhausted);
        }
        let log_id = rec.log_id.unwrap_or_else(new_log_id);
        let mut segments = rec.segments;
        let next_lsn = rec.next_lsn;
        let counters = Counters::default();

        if !read_only {
            let need_new = match segments.last_key_value() {
                None => Some(1),
                Some((&seq, tail)) => {
                    let h = &tail.header;
                    (h.unsynced_window_bytes < opts.unsynced_window_bytes()
                        || h.max_record_bytes < opts.max_record_bytes)
                        .then_some(seq + 1)
                }
            };
            if let Some(seq) = need_new {
                // The writer's bounds differ from what the tail segment's
                // header promises its readers: start a segment that says so.
                let header = SegmentHeader {
                    log_id,
                    segment_seq: seq,
                    first_lsn: next_lsn,
                    unsynced_window_bytes: opts.unsynced_window_bytes(),
                    max_record_bytes: opts.max_record_bytes,
                };
                let (path, file) =
                    create_segment(&*storage, &dir, &header, preallocate_bytes(&opts))?;
                counters.segments_created.fetch_add(1, Ordering::Relaxed);
                if let Some((_, old_tail)) = segments.last_key_value() {
                    old_tail.file.unpin(&files);
                }
                segments.insert(
                    seq,
                    SegmentInfo {
                        file: SegmentFile::pinned(&path, file),
                        path,
                        header,
                        end: SEGMENT_HEADER_BYTES,
                        records: 0,
                        max_time: 0,
                    },
                );
            }
        }

        let (tail_seq, tail_off, io) = match segments.last_key_value() {
            Some((&seq, tail)) => (
                seq,
                tail.end,
                Some(Io {
                    file: tail
                        .file
                        .get()
                        .map_err(|e| Error::io("open", &tail.path, e))?,
                    path: tail.path.clone(),
                    spare_requested: false,
                    bytes: 0,
                    records: 0,
                }),
            ),
            None => (0, SEGMENT_HEADER_BYTES, None),
        };
        let mut report = rec.report;
        report.duration = started.elapsed();
        let state = State {
            next_lsn,
            tail_seq,
            tail_off,
            written_lsn: next_lsn - 1,
            synced_lsn: next_lsn - 1,
            want_sync_lsn: 0,
            unsynced_bytes: 0,
            pending: Batch::default(),
            pending_id: 0,
            batch_waiters: [0; 2],
            sync_waiters: 0,
            spare: Batch::default(),
            leader: false,
            poisoned: false,
            segments,
        };
        let spares = (!read_only && prepares_ahead(&opts)).then(|| {
            SpareMaker::new(
                storage.clone(),
                dir.clone(),
                preallocate_bytes(&opts),
                !storage.allows_background_io(),
            )
        });
        let shared = Arc::new(Shared {
            dir,
            storage,
            log_id,
            read_only,
            state: Mutex::new(state),
            cond: Condvar::new(),
            batch_done: [Condvar::new(), Condvar::new()],
            io: Mutex::new(if read_only { None } else { io }),
            retention: Mutex::new(()),
            counters,
            report,
            stop: Mutex::new(false),
            stop_cond: Condvar::new(),
            spares,
            files,
            _lock: lock,
            opts,
        });
        let flusher = match shared.opts.sync_policy {
            SyncPolicy::Periodic { interval, .. } if !read_only => {
                let weak = Arc::downgrade(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("streamwal-flusher".into())
                        .spawn(move || flusher_loop(weak, interval))
                        .map_err(|e| Error::io("spawn flusher", "", e))?,
                )
            }
            _ => None,
        };
        Ok(FileWal { shared, flusher })
    }

    pub(crate) fn append_at(&self, payload: &[u8], time: u64) -> Result<RecordHandle> {
        let s = &*self.shared;
        s.check_len(payload.len())?;
        let mut st = s.lock_writable()?;
        let handle = s.reserve(&mut st, payload, time)?;
        s.complete(st, handle.lsn)?;
        Ok(handle)
    }

    pub(crate) fn append_batch_at(
        &self,
        payloads: Payloads<'_>,
        time: u64,
    ) -> Result<Vec<RecordHandle>> {
        let s = &*self.shared;
        for p in payloads {
            s.check_len(p.len())?;
        }
        let mut handles = Vec::with_capacity(payloads.len());
        if payloads.is_empty() {
            return Ok(handles);
        }
        let mut st = s.lock_writable()?;
        if st.next_lsn.saturating_add(payloads.len() as u64 - 1) > crate::limits::LSN_MAX {
            return Err(Error::LsnExhausted);
        }
        for p in payloads {
            handles.push(s.reserve(&mut st, p, time)?);
        }
        let last = handles.last().map_or(0, |h| h.lsn);
        s.complete(st, last)?;
        Ok(handles)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.shared.sync()
    }

    pub(crate) fn close(self) -> Result<()> {
        if self.shared.read_only {
            return Ok(());
        }
        self.shared.sync()
    }

    pub(crate) fn read(&self, handle: &RecordHandle) -> Result<Vec<u8>> {
        self.shared.read(handle)
    }

    pub(crate) fn iter(&self) -> WalIter {
        let first = {
            match self.shared.state.lock() {
                Ok(st) => st
                    .segments
                    .first_key_value()
                    .map_or(st.next_lsn, |(_, s)| s.header.first_lsn),
                Err(_) => 1,
            }
        };
        self.iter_from(first)
    }

    pub(crate) fn iter_from(&self, lsn: u64) -> WalIter {
        let s = &*self.shared;
        let st = match s.state.lock() {
            Ok(st) => st,
            Err(_) => return WalIter::failed(Error::Poisoned),
        };
        let segs: Vec<SegmentInfo> = st.segments.values().cloned().collect();
        WalIter::new(segs, lsn, st.written_lsn, s.read_only)
    }

    pub(crate) fn purge_before_lsn(&self, lsn: u64) -> Result<usize> {
        self.shared.purge(|seg| seg.next_lsn() <= lsn)
    }

    pub(crate) fn purge_before_time(&self, time: u64) -> Result<usize> {
        self.shared.purge(|seg| seg.max_time < time)
    }

    pub(crate) fn first_lsn(&self) -> Option<u64> {
        let st = self.shared.state.lock().ok()?;
        let first = st.segments.first_key_value()?.1.header.first_lsn;
        (first <= st.written_lsn).then_some(first)
    }

    pub(crate) fn last_lsn(&self) -> Option<u64> {
        let st = self.shared.state.lock().ok()?;
        let first = st.segments.first_key_value()?.1.header.first_lsn;
        (first <= st.written_lsn).then_some(st.written_lsn)
    }

    pub(crate) fn next_lsn(&self) -> u64 {
        self.shared.state.lock().map_or(0, |st| st.written_lsn + 1)
    }

    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    pub(crate) fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        WalStats {
            records_appended: c.records.load(Ordering::Relaxed),
            bytes_written: c.bytes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            data_syncs: c.data_syncs.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_prepared_ahead: c.segments_prepared_ahead.load(Ordering::Relaxed),
            segments_removed: c.segments_removed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn sync_policy(&self) -> SyncPolicy {
        self.shared.opts.sync_policy
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.shared.state.lock().map_or(true, |st| st.poisoned)
    }
}

impl Drop for FileWal {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.stop_cond.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
        if let Some(s) = &self.shared.spares {
            s.stop();
        }
        // A periodic log promises bounded staleness: honour it at close.
        if matches!(self.shared.opts.sync_policy, SyncPolicy::Periodic { .. })
            && !self.shared.read_only
        {
            let _ = self.shared.sync();
        }
    }
}

fn flusher_loop(weak: Weak<Shared>, interval: std::time::Duration) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let Ok(stop) = shared.stop.lock() else { return };
            if *stop {
                return;
            }
            let Ok((stop, _)) = shared.stop_cond.wait_timeout(stop, interval) else {
                return;
            };
            if *stop {
                return;
            }
        }
        // Errors poison the log; appenders and sync() report them.
        let _ = shared.sync();
    }
}

fn prepares_ahead(opts: &WalOptions) -> bool {
    opts.prepare_ahead && opts.preallocate
}

impl Shared {
    fn read(&self, h: &RecordHandle) -> Result<Vec<u8>> {
        let not_found = Error::NotFound {
            lsn: h.lsn,
            segment: h.segment,
        };
        let (file, path, header, end) = {
            let st = self.lock()?;
            let Some(seg) = st.segments.get(&h.segment) else {
                return Err(not_found);
            };
            (seg.file.clone(), seg.path.clone(), seg.header, seg.end)
        };
        let frame_end = h
            .offset
            .saturating_add(FRAME_HEADER_BYTES + u64::from(h.len));
        if h.offset < SEGMENT_HEADER_BYTES || h.len > header.max_record_bytes || frame_end > end {
            return Err(not_found);
        }
        let mut buf = vec![0u8; (frame_end - h.offset) as usize];
        let file = file.get().map_err(|e| Error::io("open", &path, e))?;
        let whole = crate::storage::read_exact_at(&*file, &mut buf, h.offset)
            .map_err(|e| Error::io("read", &path, e))?;
        let corrupt = |kind| Error::corruption(&path, h.offset, kind);
        if !whole {
            return Err(corrupt(crate::error::CorruptionKind::Truncated));
        }
        let fh = super::format::check_frame(&header.identity(), &buf, header.max_record_bytes)
            .map_err(corrupt)?;
        if fh.lsn != h.lsn || fh.payload_len != h.len {
            return Err(corrupt(crate::error::CorruptionKind::HandleMismatch));
        }
        buf.drain(..FRAME_HEADER_BYTES as usize);
        Ok(buf)
    }

    fn purge(&self, qualifies: impl Fn(&SegmentInfo) -> bool) -> Result<usize> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _one_at_a_time = self.retention.lock().map_err(|_| Error::Poisoned)?;
        let victims: Vec<(u64, PathBuf)> = {
            let st = self.lock()?;
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            // Only segments with a successor in the map are sealed and fully
            // accounted for (the leader publishes both together).
            let Some((&tail, _)) = st.segments.last_key_value() else {
                return Ok(0);
            };
            st.segments
                .iter()
                .take_while(|(seq, seg)| **seq < tail && qualifies(seg))
                .map(|(seq, seg)| (*seq, seg.path.clone()))
                .collect()
        };
        // Oldest first, each delete durable before the next, so a crash
        // leaves a suffix of the log, never a gap. A segment leaves the index
        // only once its delete is durable: after an error, a retry finishes
        // the job. Readers holding the file open keep reading it meanwhile.
        let mut removed = 0;
        for (seq, path) in victims {
            match self.storage.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
            self.lock()?.segments.remove(&seq);
            self.counters
                .segments_removed
                .fetch_add(1, Ordering::Relaxed);
            removed += 1;
        }
        Ok(removed)
    }
}

crate::wal::backend::forward_log_backend!(FileWal);
