//! The write-ahead log on object storage: one immutable object per
//! group-commit batch.
//!
//! Objects under the log's location are named `NNNNNNNNNNNNNNNNNNNN.wal`,
//! the object's sequence number in 20 digits, consecutive from the newest
//! floor. Each holds the 64-byte segment header of docs/FORMAT.md
//! (sequence number, first LSN, log id; an unsynced window of 0, since an
//! object is whole or absent) followed by the batch's frames, nothing after
//! them. An object with no frames is a *claim* (the header, an 8-byte
//! random nonce and a CRC32 of both): the writer that opens the log stores
//! one at the next sequence number. `floor-NNNN` objects record retention:
//! readers ignore every object below the newest floor.
//!
//! Every object is written with a conditional PUT (`If-None-Match: *`), one
//! at a time and in order, so a name is written once, by one writer. That
//! is the fencing: a writer that opens the log later claims the next
//! sequence number, and the earlier writer's next PUT finds the name taken
//! and poisons that log ([`Error::LogTakenOver`]). A PUT whose outcome is
//! unknown (an error, a response lost and the request retried) is settled by
//! reading the object back: our exact bytes mean it landed; anything else,
//! or nothing, fails the append and poisons the log. A record is therefore
//! never stored twice, and never acknowledged unless its object is stored.

mod iter;
mod scan;

use super::location::{Created, ObjectLocation};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::{FRAME_HEADER_BYTES, LSN_MAX, SEGMENT_HEADER_BYTES};
use crate::wal::backend::Payloads;
use crate::wal::format::{FrameHeader, SegmentHeader, check_frame, encode_frame};
use crate::wal::{
    RecordHandle, RecoveryMode, RecoveryReport, SyncPolicy, WalIter, WalOptions, WalStats,
};
use iter::ObjectIter;
use scan::{
    CLAIM_TAIL_BYTES, DIGITS, FLOOR_PREFIX, ObjInfo, Scan, object_bytes_max, parse_floor,
    parse_name, parse_object, scan,
};
pub use scan::{LOG_OBJECT_SUFFIX, log_object_name};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Attempts at claiming the next sequence number while other writers keep
/// storing objects there first.
const CLAIM_ATTEMPTS: usize = 32;

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    puts: AtomicU64,
    created: AtomicU64,
    removed: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The stored objects this log knows, by sequence number.
    objects: BTreeMap<u64, ObjInfo>,
    /// The sequence number the batch being filled will be stored as.
    pending_seq: u64,
    /// The batch being filled: room for the header, then frames; empty
    /// when no record waits.
    pending: Vec<u8>,
    pending_first_lsn: u64,
    pending_records: u64,
    pending_max_time: u64,
    /// The number of the batch being filled (from 1).
    pending_id: u64,
    /// Every batch numbered up to this one is finished (stored or failed).
    done_id: u64,
    /// The LSN the next record gets.
    next_lsn: u64,
    /// Every record up to this LSN is stored.
    written_lsn: u64,
    /// The first batch that failed; every later one fails with it.
    first_failed: Option<u64>,
    /// A batch is being stored.
    leader: bool,
    poisoned: bool,
}

/// The backend of [`crate::Wal`] on object storage (see the module's
/// documentation). Opened by [`crate::Wal::open`].
#[derive(Debug)]
pub(crate) struct ObjectLog {
    loc: Arc<ObjectLocation>,
    display: PathBuf,
    opts: WalOptions,
    log_id: u64,
    read_only: bool,
    state: Mutex<State>,
    /// Woken when a batch finishes or the batch being filled is taken.
    cond: Condvar,
    retention: Mutex<()>,
    report: RecoveryReport,
    counters: Counters,
}

/// Clears the leader's mark if storing a batch unwinds (a panicking
/// `ObjectStore`), so that the other appenders fail instead of waiting
/// forever: the batch's fate is unknown, and the log is poisoned.
struct LeaderGuard<'a> {
    log: &'a ObjectLog,
    batch_id: u64,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.log.state.lock().unwrap_or_else(|e| e.into_inner());
        st.leader = false;
        st.poisoned = true;
        st.first_failed.get_or_insert(self.batch_id);
        st.done_id = st.done_id.max(self.batch_id);
        drop(st);
        self.log.cond.notify_all();
    }
}

/// True if `found` holds exactly the bytes of `payload`.
fn same_bytes(found: &[u8], payload: &object_store::PutPayload) -> bool {
    let mut rest = found;
    for chunk in payload.iter() {
        match rest.split_at_checked(chunk.len()) {
            Some((head, tail)) if head == chunk.as_ref() => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// How storing an object went.
enum Stored {
    /// Our bytes are there (now, or from an earlier attempt).
    Ours,
    /// Another writer's object holds the name; its bytes.
    Theirs(Vec<u8>),
}

impl ObjectLog {
    /// Open (or create) the log at `loc`: list it, read and check every
    /// object, and unless read-only claim the next sequence number.
    pub(crate) fn open(loc: ObjectLocation, opts: WalOptions) -> Result<ObjectLog> {
        opts.validate()?;
        if opts.sync_policy != SyncPolicy::Always {
            return Err(Error::InvalidOptions(
                "a log on object storage stores every batch before append returns: \
                 use SyncPolicy::Always",
            ));
        }
        let started = Instant::now();
        let loc = Arc::new(loc);
        let display = PathBuf::from(loc.url());
        let read_only = opts.recovery_mode == RecoveryMode::Salvage;
        let max = object_bytes_max(&opts);
        let Scan {
            mut report,
            mut objects,
            log_id,
            mut next_seq,
            mut next_lsn,
        } = scan(&loc, max, read_only)?;
        if next_lsn > LSN_MAX && !read_only {
            return Err(Error::LsnExhausted);
        }
        let mut log = ObjectLog {
            loc,
            display,
            log_id: log_id.unwrap_or_else(crate::wal::random_id),
            read_only,
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                pending_seq: 0,
                pending: Vec::new(),
                pending_first_lsn: 0,
                pending_records: 0,
                pending_max_time: 0,
                pending_id: 1,
                done_id: 0,
                first_failed: None,
                next_lsn,
                written_lsn: next_lsn - 1,
                leader: false,
                poisoned: false,
            }),
            cond: Condvar::new(),
            retention: Mutex::new(()),
            report: RecoveryReport::default(),
            counters: Counters::default(),
            opts,
        };
        if !read_only {
            let mut claimed = false;
            for _ in 0..CLAIM_ATTEMPTS {
                let mut claim = log.header(next_seq, next_lsn).encode().to_vec();
                claim.extend_from_slice(&crate::wal::random_id().to_le_bytes());
                let crc = crc32fast::hash(&claim);
                claim.extend_from_slice(&crc.to_le_bytes());
                match log.store(next_seq, claim)? {
                    Stored::Ours => {
                        log.counters.created.fetch_add(1, Ordering::Relaxed);
                        objects.insert(
                            next_seq,
                            ObjInfo {
                                first_lsn: next_lsn,
                                records: 0,
                                len: SEGMENT_HEADER_BYTES + CLAIM_TAIL_BYTES as u64,
                                max_time: 0,
                                max_record_bytes: log.opts.max_record_bytes,
                            },
                        );
                        next_seq += 1;
                        claimed = true;
                        break;
                    }
                    Stored::Theirs(bytes) => {
                        // A writer got there first (a predecessor's batch
                        // landing late, or another opener's claim): it is
                        // part of the log; claim the number after it.
                        let known = (!objects.is_empty()).then_some(log.log_id);
                        let p = parse_object(&bytes, next_seq, known, Some(next_lsn)).map_err(
                            |(offset, kind)| {
                                Error::corruption(
                                    log.loc.display(&log_object_name(next_seq)),
                                    offset,
                                    kind,
                                )
                            },
                        )?;
                        log.log_id = p.log_id;
                        report.records += p.info.records;
                        report.segments += 1;
                        next_lsn = p.info.next_lsn();
                        objects.insert(next_seq, p.info);
                        next_seq += 1;
                    }
                }
            }
            if !claimed {
                return Err(Error::LogTakenOver {
                    location: log.display.display().to_string(),
                });
            }
        }
        {
            let st = log.state.get_mut().map_err(|_| Error::Poisoned)?;
            st.objects = objects;
            st.pending_seq = next_seq;
            st.next_lsn = next_lsn;
            st.written_lsn = next_lsn - 1;
            let first = st.objects.values().find(|o| o.records > 0);
            report.first_lsn = first.map(|o| o.first_lsn);
            report.last_lsn = first.map(|_| next_lsn - 1);
        }
        report.duration = started.elapsed();
        log.report = report;
        Ok(log)
    }

    fn header(&self, seq: u64, first_lsn: u64) -> SegmentHeader {
        SegmentHeader {
            log_id: self.log_id,
            segment_seq: seq,
            first_lsn,
            unsynced_window_bytes: 0,
            max_record_bytes: self.opts.max_record_bytes,
        }
    }

    /// Store `bytes` as object `seq` if no object has that name. An unknown
    /// outcome is settled by reading the object back.
    fn store(&self, seq: u64, bytes: Vec<u8>) -> Result<Stored> {
        let name = log_object_name(seq);
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        // Shared, not copied: the PUT and the read-back compare see one buffer.
        let bytes = object_store::PutPayload::from(bytes);
        let failure = match self.loc.put_new(&name, bytes.clone()) {
            Ok(Created::Yes) => return Ok(Stored::Ours),
            Ok(Created::AlreadyExists) => None,
            Err(e) => Some(e),
        };
        match self.loc.get(&name, object_bytes_max(&self.opts)) {
            Ok(Some(found)) if same_bytes(&found, &bytes) => Ok(Stored::Ours),
            Ok(Some(found)) => Ok(Stored::Theirs(found)),
            // Refused as existing, yet gone (deleted meanwhile), or the PUT
            // failed and nothing is there (it may still land: the log is
            // poisoned, and the claim of the next writer to open fences it).
            Ok(None) => Err(failure.unwrap_or_else(|| {
                Error::corruption(self.loc.display(&name), 0, CorruptionKind::ObjectVanished)
            })),
            Err(e) => Err(failure.unwrap_or(e)),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Poisoned)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len as u64 > u64::from(self.opts.max_record_bytes) {
            return Err(Error::TooLarge {
                size: len as u64,
                max: u64::from(self.opts.max_record_bytes),
            });
        }
        Ok(())
    }

    pub(crate) fn append_at(&self, payload: &[u8], time: u64) -> Result<RecordHandle> {
        let one = |_: usize| payload;
        let mut handles = self.append_batch_at(Payloads::new(1, &one), time)?;
        handles.pop().ok_or(Error::Poisoned)
    }

    pub(crate) fn append_batch_at(
        &self,
        payloads: Payloads<'_>,
        time: u64,
    ) -> Result<Vec<RecordHandle>> {
        for p in payloads {
            self.check_len(p.len())?;
        }
        let mut handles = Vec::with_capacity(payloads.len());
        if payloads.is_empty() {
            return Ok(handles);
        }
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let cap = SEGMENT_HEADER_BYTES + self.opts.max_batch_bytes;
        let mut st = self.lock()?;
        if st.poisoned {
            return Err(Error::Poisoned);
        }
        if st.next_lsn.saturating_add(payloads.len() as u64 - 1) > LSN_MAX {
            return Err(Error::LsnExhausted);
        }
        for p in payloads {
            let frame = FRAME_HEADER_BYTES + p.len() as u64;
            // A full batch goes first (a single large record goes alone).
            while !st.pending.is_empty() && st.pending.len() as u64 + frame > cap {
                let id = st.pending_id;
                let (guard, outcome) = self.finish(st, id)?;
                // Records of this call in the batch that failed are not
                // stored, so the whole call fails.
                outcome?;
                st = guard;
            }
            if st.pending.is_empty() {
                st.pending.resize(SEGMENT_HEADER_BYTES as usize, 0);
                st.pending_first_lsn = st.next_lsn;
                st.pending_records = 0;
                st.pending_max_time = 0;
            }
            let handle = RecordHandle {
                lsn: st.next_lsn,
                segment: st.pending_seq,
                offset: st.pending.len() as u64,
                len: p.len() as u32,
            };
            let header = FrameHeader {
                payload_len: handle.len,
                lsn: handle.lsn,
                time,
                durable_lsn: st.written_lsn,
                crc: 0,
            };
            let identity = self.header(st.pending_seq, st.pending_first_lsn).identity();
            encode_frame(&identity, &header, p, &mut st.pending);
            st.pending_records += 1;
            st.pending_max_time = st.pending_max_time.max(time);
            st.next_lsn += 1;
            handles.push(handle);
        }
        let id = st.pending_id;
        let (st, result) = self.finish(st, id)?;
        drop(st);
        result.map(|()| handles)
    }

    /// Wait until batch `id` is finished, storing batches as the leader
    /// when no one else is. Returns the batch's outcome.
    fn finish<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        id: u64,
    ) -> Result<(MutexGuard<'a, State>, Result<()>)> {
        let mut own_error = None;
        loop {
            if st.done_id >= id {
                let outcome = if st.first_failed.is_some_and(|f| f <= id) {
                    Err(own_error.take().unwrap_or(Error::Poisoned))
                } else {
                    Ok(())
                };
                return Ok((st, outcome));
            }
            if st.poisoned {
                // The batch was never sent: its records are not stored.
                return Ok((st, Err(own_error.take().unwrap_or(Error::Poisoned))));
            }
            if st.leader {
                st = self.cond.wait(st).map_err(|_| Error::Poisoned)?;
                continue;
            }
            // Lead: take the batch being filled (ours, or one before it).
            let batch_id = st.pending_id;
            let seq = st.pending_seq;
            let first_lsn = st.pending_first_lsn;
            let records = st.pending_records;
            let max_time = st.pending_max_time;
            let mut bytes = std::mem::take(&mut st.pending);
            st.pending_id += 1;
            st.pending_seq += 1;
            st.leader = true;
            drop(st);
            self.cond.notify_all();
            let mut guard = LeaderGuard {
                log: self,
                batch_id,
                armed: true,
            };
            bytes[..SEGMENT_HEADER_BYTES as usize]
                .copy_from_slice(&self.header(seq, first_lsn).encode());
            let len = bytes.len() as u64;
            let outcome = match self.store(seq, bytes) {
                Ok(Stored::Ours) => Ok(()),
                Ok(Stored::Theirs(_)) => Err(Error::LogTakenOver {
                    location: self
                        .loc
                        .display(&log_object_name(seq))
                        .display()
                        .to_string(),
                }),
                Err(e) => Err(e),
            };
            guard.armed = false;
            st = self.lock()?;
            st.leader = false;
            st.done_id = batch_id;
            match outcome {
                Ok(()) => {
                    st.objects.insert(
                        seq,
                        ObjInfo {
                            first_lsn,
                            records,
                            len,
                            max_time,
                            max_record_bytes: self.opts.max_record_bytes,
                        },
                    );
                    st.written_lsn = first_lsn + records - 1;
                    let c = &self.counters;
                    c.records.fetch_add(records, Ordering::Relaxed);
                    c.bytes.fetch_add(len, Ordering::Relaxed);
                    c.created.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    st.poisoned = true;
                    st.first_failed.get_or_insert(batch_id);
                    if batch_id == id {
                        own_error = Some(e);
                    }
                }
            }
            self.cond.notify_all();
        }
    }

    pub(crate) fn sync(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.lock()?.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    pub(crate) fn close(self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.sync()
    }

    pub(crate) fn read(&self, h: &RecordHandle) -> Result<Vec<u8>> {
        let not_found = Error::NotFound {
            lsn: h.lsn,
            segment: h.segment,
        };
        let info = {
            let st = self.lock()?;
            match st.objects.get(&h.segment) {
                Some(&info) => info,
                None => return Err(not_found),
            }
        };
        let frame = FRAME_HEADER_BYTES + u64::from(h.len);
        if h.offset < SEGMENT_HEADER_BYTES
            || h.offset.saturating_add(frame) > info.len
            || !(info.first_lsn..info.next_lsn()).contains(&h.lsn)
        {
            return Err(not_found);
        }
        let name = log_object_name(h.segment);
        let corrupt = |kind| Error::corruption(self.loc.display(&name), h.offset, kind);
        let Some(mut bytes) = self.loc.get_range(&name, h.offset, frame)? else {
            return Err(not_found);
        };
        let identity = self.header(h.segment, info.first_lsn).identity();
        let fh = check_frame(&identity, &bytes, info.max_record_bytes).map_err(corrupt)?;
        if fh.lsn != h.lsn || fh.payload_len != h.len || bytes.len() as u64 != frame {
            return Err(corrupt(CorruptionKind::HandleMismatch));
        }
        bytes.drain(..FRAME_HEADER_BYTES as usize);
        Ok(bytes)
    }

    pub(crate) fn iter(&self) -> WalIter {
        let first = match self.lock() {
            Ok(st) => st
                .objects
                .first_key_value()
                .map_or(st.next_lsn, |(_, o)| o.first_lsn),
            Err(e) => return WalIter::failed(e),
        };
        self.iter_from(first)
    }

    pub(crate) fn iter_from(&self, lsn: u64) -> WalIter {
        let st = match self.lock() {
            Ok(st) => st,
            Err(e) => return WalIter::failed(e),
        };
        if let Some((&seq, first)) = st.objects.first_key_value()
            && lsn < first.first_lsn
            && !self.read_only
        {
            return WalIter::failed(Error::NotFound { lsn, segment: seq });
        }
        let objects: Vec<(u64, ObjInfo)> = st
            .objects
            .iter()
            .filter(|(_, o)| o.records > 0 && o.next_lsn() > lsn)
            .map(|(&s, &o)| (s, o))
            .collect();
        WalIter::remote(crate::wal::RemoteIter(Box::new(ObjectIter {
            loc: self.loc.clone(),
            log_id: self.log_id,
            max: object_bytes_max(&self.opts),
            objects: objects.into_iter(),
            current: None,
            from: lsn,
            done: false,
        })))
    }

    fn purge(&self, qualifies: impl Fn(&ObjInfo) -> bool) -> Result<usize> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _one_at_a_time = self.retention.lock().map_err(|_| Error::Poisoned)?;
        let victims: Vec<u64> = {
            let st = self.lock()?;
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            // Never the newest object: it tells where the log goes on. Never
            // a claim: a fenced writer's next PUT targets a claim's name,
            // and must keep colliding with it.
            let newest = st.objects.last_key_value().map_or(0, |(&s, _)| s);
            st.objects
                .iter()
                .filter(|&(&s, _)| s < newest)
                .take_while(|(_, o)| o.records == 0 || qualifies(o))
                .filter(|(_, o)| o.records > 0)
                .map(|(&s, _)| s)
                .collect()
        };
        let Some(&last) = victims.last() else {
            return Ok(0);
        };
        // A writer that was taken over must not delete what its successor
        // recovered: look for an object past every name this log has taken
        // (read after the listing, so that our own batches stored meanwhile
        // are below it).
        let listed = self.loc.list("")?;
        {
            let mut st = self.lock()?;
            let ours_below = st.pending_seq;
            if listed
                .iter()
                .filter_map(|n| parse_name(n))
                .any(|s| s >= ours_below)
            {
                st.poisoned = true;
                return Err(Error::LogTakenOver {
                    location: self.display.display().to_string(),
                });
            }
        }
        // The floor first: once it is there, readers ignore what is below
        // it, so a crash part-way through the deletes leaves a valid log.
        let floor = last + 1;
        let floor_name = format!("{FLOOR_PREFIX}{floor:0DIGITS$}");
        if let Created::AlreadyExists = self.loc.put_new(&floor_name, Vec::new())? {
            // Written by an earlier purge that failed later: fine.
        }
        {
            // From now on the log starts at the floor, for this writer as
            // for every reader. Claims below it stay in the store only.
            let mut st = self.lock()?;
            st.objects = st.objects.split_off(&floor);
        }
        let mut removed = 0;
        for seq in victims {
            // A failure leaves the rest below the floor, where readers
            // ignore it and the next purge's floor does not reach again:
            // left over (see docs/DESIGN.md).
            self.loc.delete(&log_object_name(seq))?;
            self.counters.removed.fetch_add(1, Ordering::Relaxed);
            removed += 1;
        }
        for old in listed
            .iter()
            .filter_map(|n| parse_floor(n))
            .filter(|&f| f < floor)
        {
            // Best effort: the newest floor is the one that counts.
            let _ = self.loc.delete(&format!("{FLOOR_PREFIX}{old:0DIGITS$}"));
        }
        Ok(removed)
    }

    pub(crate) fn purge_before_lsn(&self, lsn: u64) -> Result<usize> {
        self.purge(|o| o.next_lsn() <= lsn)
    }

    pub(crate) fn purge_before_time(&self, time: u64) -> Result<usize> {
        self.purge(|o| o.max_time < time)
    }

    pub(crate) fn first_lsn(&self) -> Option<u64> {
        let st = self.state.lock().ok()?;
        let first = st.objects.first_key_value()?.1.first_lsn;
        (first <= st.written_lsn).then_some(first)
    }

    pub(crate) fn last_lsn(&self) -> Option<u64> {
        let st = self.state.lock().ok()?;
        let first = st.objects.first_key_value()?.1.first_lsn;
        (first <= st.written_lsn).then_some(st.written_lsn)
    }

    pub(crate) fn next_lsn(&self) -> u64 {
        self.state.lock().map_or(0, |st| st.written_lsn + 1)
    }

    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub(crate) fn stats(&self) -> WalStats {
        let c = &self.counters;
        let puts = c.puts.load(Ordering::Relaxed);
        WalStats {
            records_appended: c.records.load(Ordering::Relaxed),
            bytes_written: c.bytes.load(Ordering::Relaxed),
            batches: puts,
            data_syncs: puts,
            segments_created: c.created.load(Ordering::Relaxed),
            segments_prepared_ahead: 0,
            segments_removed: c.removed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn sync_policy(&self) -> SyncPolicy {
        self.opts.sync_policy
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.state.lock().map_or(true, |st| st.poisoned)
    }
}

crate::wal::backend::forward_log_backend!(ObjectLog);
