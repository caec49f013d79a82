//! One reference model of a log, for the tests that check a `Wal` against
//! what they did to it: the records it acknowledged (handle, payload,
//! time), where retention has cut it, what it must still hold after a
//! crash, and comparisons against a `Wal` that say what differs.
//!
//! LSNs are dense from 1, so record `i` of the model has LSN `i + 1`.
//! Retention removes only whole sealed segments (objects on object
//! storage): the model groups records by the segment their handle names and
//! predicts what a purge removes.
//!
//! The checks return `Err(message)` rather than panic, so that a proptest
//! can shrink on them (`.map_err(TestCaseError::fail)`); other tests pass
//! them to [`agrees`].

use streamwal::{Error, RecordHandle, RecoveryReport, Wal};

/// A check's outcome: `Err` says what the log got wrong.
pub type Checked<T = ()> = Result<T, String>;

/// Panic with the message of a failed check, at the caller's line.
#[track_caller]
pub fn agrees<T>(checked: Checked<T>) -> T {
    checked.unwrap_or_else(|why| panic!("the log disagrees with its model: {why}"))
}

/// What the model knows of one acknowledged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub handle: RecordHandle,
    pub payload: Vec<u8>,
    /// The time it was appended at; `None`: stamped with the wall clock,
    /// so newer than any time the tests purge before.
    pub time: Option<u64>,
}

/// The log as its acknowledged records, and where its retained part starts.
#[derive(Debug, Clone)]
pub struct LogModel {
    /// Every acknowledged record, purged or not, in LSN order.
    records: Vec<ModelRecord>,
    /// Records at or above this LSN are retained; below it, purged.
    retained_first: u64,
    /// The newest segment holds no record (a fresh log, or an open that
    /// started a segment or a claim object), so every segment that holds
    /// records is sealed and may be purged.
    tail_empty: bool,
}

impl Default for LogModel {
    fn default() -> Self {
        LogModel::new()
    }
}

impl LogModel {
    /// A fresh, empty log.
    pub fn new() -> LogModel {
        LogModel {
            records: Vec::new(),
            retained_first: 1,
            tail_empty: true,
        }
    }

    /// A fresh log to which `records` were appended and acknowledged, in
    /// this order, stamped with the clock.
    pub fn of(records: &[(RecordHandle, Vec<u8>)]) -> Checked<LogModel> {
        let mut model = LogModel::new();
        for (h, p) in records {
            model.acknowledge(*h, p, None)?;
        }
        Ok(model)
    }

    /// Record that the log acknowledged `payload` under `handle` (appended
    /// at `time`), after checking that the handle takes the next LSN and
    /// has the payload's length.
    pub fn acknowledge(
        &mut self,
        handle: RecordHandle,
        payload: &[u8],
        time: Option<u64>,
    ) -> Checked {
        if handle.lsn() != self.next_lsn() {
            return Err(format!(
                "LSNs are dense: {handle:?} was acknowledged where LSN {} was next",
                self.next_lsn()
            ));
        }
        if handle.len() as usize != payload.len() {
            return Err(format!(
                "{handle:?} was acknowledged for a payload of {} bytes",
                payload.len()
            ));
        }
        self.records.push(ModelRecord {
            handle,
            payload: payload.to_vec(),
            time,
        });
        self.tail_empty = false;
        Ok(())
    }

    /// Every acknowledged record, purged or not.
    pub fn records(&self) -> &[ModelRecord] {
        &self.records
    }

    /// The record at `lsn`, purged or not.
    pub fn record(&self, lsn: u64) -> Option<&ModelRecord> {
        let index = usize::try_from(lsn.checked_sub(1)?).ok()?;
        self.records.get(index)
    }

    /// The newest acknowledged record.
    pub fn last(&self) -> Option<&ModelRecord> {
        self.records.last()
    }

    /// The LSN the next acknowledged record takes.
    pub fn next_lsn(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    /// The first LSN retention has kept.
    pub fn retained_first(&self) -> u64 {
        self.retained_first
    }

    /// The records retention has kept, in LSN order.
    pub fn retained(&self) -> &[ModelRecord] {
        let purged = (self.retained_first - 1) as usize;
        &self.records[purged.min(self.records.len())..]
    }

    pub fn retained_count(&self) -> u64 {
        self.retained().len() as u64
    }

    /// `(first_lsn, last_lsn)` as the log must report them.
    pub fn bounds(&self) -> (Option<u64>, Option<u64>) {
        if self.retained_count() > 0 {
            (Some(self.retained_first), Some(self.next_lsn() - 1))
        } else {
            (None, None)
        }
    }

    pub fn tail_empty(&self) -> bool {
        self.tail_empty
    }

    /// Say whether the newest segment holds no record: after an open, true
    /// if it started one.
    pub fn set_tail_empty(&mut self, empty: bool) {
        self.tail_empty = empty;
    }

    /// Predict a purge: the oldest sealed segments whose records all
    /// satisfy `qualifies` go, stopping at the first that does not, never
    /// the segment being written. Returns the new first retained LSN and
    /// the number of record-holding segments removed.
    pub fn predict_purge(&self, qualifies: impl Fn(&ModelRecord) -> bool) -> (u64, usize) {
        let groups: Vec<&[ModelRecord]> = self
            .retained()
            .chunk_by(|a, b| a.handle.segment() == b.handle.segment())
            .collect();
        let sealed = if self.tail_empty {
            groups.len()
        } else {
            groups.len().saturating_sub(1)
        };
        let removed = groups[..sealed]
            .iter()
            .take_while(|g| g.iter().all(&qualifies))
            .count();
        let first = groups
            .get(removed)
            .map_or(self.next_lsn(), |g| g[0].handle.lsn());
        (first, removed)
    }

    /// Record that retention kept the records from `first` on.
    pub fn purged_before(&mut self, first: u64) {
        assert!(
            (self.retained_first..=self.next_lsn()).contains(&first),
            "the model's log cannot be purged to LSN {first} (retained from {}, next {})",
            self.retained_first,
            self.next_lsn()
        );
        self.retained_first = first;
    }

    /// `first_lsn`, `last_lsn` and `next_lsn` as the model says.
    pub fn check_bounds(&self, wal: &Wal) -> Checked {
        let (first, last) = self.bounds();
        let got = (wal.first_lsn(), wal.last_lsn(), wal.next_lsn());
        if got != (first, last, self.next_lsn()) {
            return Err(format!(
                "(first_lsn, last_lsn, next_lsn) is {got:?}, the model says {:?}",
                (first, last, self.next_lsn())
            ));
        }
        Ok(())
    }

    /// A retained record reads back by handle byte for byte; a purged one
    /// is `NotFound` naming its LSN and segment.
    pub fn check_read(&self, wal: &Wal, rec: &ModelRecord) -> Checked {
        let h = rec.handle;
        let got = wal.read(&h);
        if h.lsn() >= self.retained_first {
            match got {
                Ok(p) if p == rec.payload => Ok(()),
                Ok(p) => Err(format!(
                    "read of retained {h:?}: {} bytes that differ from the {} acknowledged",
                    p.len(),
                    rec.payload.len()
                )),
                Err(e) => Err(format!("read of retained {h:?} failed: {e:?}")),
            }
        } else {
            match got {
                Err(Error::NotFound { lsn, segment })
                    if (lsn, segment) == (h.lsn(), h.segment()) =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "read of purged {h:?} (retained from {}): {:?}",
                    self.retained_first,
                    other.map(|p| p.len())
                )),
            }
        }
    }

    /// `iter` (an `iter()` or `iter_from(from)`) yields exactly the
    /// retained records from `from` on: same handles, same payloads, in
    /// order, nothing extra. `what` names the iterator in the message.
    pub fn check_iter(
        &self,
        iter: impl Iterator<Item = streamwal::Result<(RecordHandle, Vec<u8>)>>,
        from: u64,
        what: &str,
    ) -> Checked {
        let start = from.max(self.retained_first);
        let mut expected = self.retained().iter().filter(|r| r.handle.lsn() >= start);
        for item in iter {
            let (h, p) = item.map_err(|e| format!("{what} failed: {e:?}"))?;
            let Some(rec) = expected.next() else {
                return Err(format!(
                    "{what}: extra record {h:?} (the model ends at LSN {})",
                    self.next_lsn() - 1
                ));
            };
            if h != rec.handle {
                return Err(format!(
                    "{what}: {h:?} where the model has {:?}",
                    rec.handle
                ));
            }
            if p != rec.payload {
                return Err(format!("{what}: payload of {h:?} differs"));
            }
        }
        if let Some(rec) = expected.next() {
            return Err(format!("{what}: ended before record {}", rec.handle.lsn()));
        }
        Ok(())
    }

    /// `iter_from(from)`: from a purged LSN, one `NotFound` naming it and
    /// nothing after; otherwise exactly the retained records from `from`.
    pub fn check_iter_from(&self, wal: &Wal, from: u64) -> Checked {
        let what = format!("iter_from({from})");
        let mut iter = wal.iter_from(from);
        if from >= self.retained_first {
            return self.check_iter(iter, from, &what);
        }
        match iter.next() {
            Some(Err(Error::NotFound { lsn, .. })) if lsn == from => {}
            other => {
                return Err(format!(
                    "{what}: a purged start gave {:?} (retained from {})",
                    other.map(|r| r.map(|(h, _)| h)),
                    self.retained_first
                ));
            }
        }
        match iter.next() {
            None => Ok(()),
            Some(item) => Err(format!(
                "{what}: {:?} after the NotFound",
                item.map(|(h, _)| h)
            )),
        }
    }

    /// Everything the log shows agrees with the model: its bounds, a read
    /// of every record ever acknowledged, `iter()` and
    /// `iter_from(first_lsn)`.
    pub fn check(&self, wal: &Wal) -> Checked {
        self.check_bounds(wal)?;
        for rec in &self.records {
            self.check_read(wal, rec)?;
        }
        self.check_iter(wal.iter(), self.retained_first, "iter()")?;
        if let (Some(first), _) = self.bounds() {
            self.check_iter(wal.iter_from(first), first, "iter_from(first_lsn)")?;
        }
        Ok(())
    }

    /// An open's report counts the retained records and names their first
    /// and last LSNs.
    pub fn check_report(&self, report: &RecoveryReport) -> Checked {
        let (first, last) = self.bounds();
        let got = (report.records, report.first_lsn, report.last_lsn);
        if got != (self.retained_count(), first, last) {
            return Err(format!(
                "the recovery report's (records, first_lsn, last_lsn) is {got:?}, the model says {:?}: {report:?}",
                (self.retained_count(), first, last)
            ));
        }
        Ok(())
    }

    /// What a log reopened after a crash or a failed append must hold:
    /// every retained acknowledged record, unchanged, at its handle (by
    /// iteration and by read), then at most the records whose append was
    /// in doubt (`in_doubt`, in the order they were tried), each byte for
    /// byte at the next LSN, and nothing else. Returns the in-doubt records
    /// found, for the caller to acknowledge.
    pub fn check_recovered(
        &self,
        wal: &Wal,
        in_doubt: &[Vec<u8>],
    ) -> Checked<Vec<(RecordHandle, Vec<u8>)>> {
        let mut got = wal
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("iterating the recovered log failed: {e:?}"))?;
        let kept = self.retained();
        if got.len() < kept.len() {
            return Err(format!(
                "acknowledged records lost: {} recovered, {} acknowledged",
                got.len(),
                kept.len()
            ));
        }
        let extra = got.split_off(kept.len());
        for ((h, p), rec) in got.iter().zip(kept) {
            if (h, p) != (&rec.handle, &rec.payload) {
                return Err(format!(
                    "acknowledged record {:?} changed: recovered as {h:?} with {} bytes",
                    rec.handle,
                    p.len()
                ));
            }
            self.check_read(wal, rec)?;
        }
        if extra.len() > in_doubt.len() {
            return Err(format!(
                "records that were never appended: {:?}",
                extra[in_doubt.len()..]
                    .iter()
                    .map(|(h, _)| h)
                    .collect::<Vec<_>>()
            ));
        }
        for ((lsn, (h, p)), tried) in (self.next_lsn()..).zip(&extra).zip(in_doubt) {
            if h.lsn() != lsn {
                return Err(format!(
                    "the in-doubt record {h:?} is not at the next LSN {lsn}"
                ));
            }
            if p != tried {
                return Err(format!("the in-doubt record {h:?} came back different"));
            }
        }
        Ok(extra)
    }
}
