//! Exactly-once output: a batch's effect on an outside system (a database,
//! a message broker) happens once, whatever crashes.
//!
//! Two recipes, both keyed by the batch time:
//!
//! - **Transactional sinks** ([`TransactionalSink`], driven by
//!   [`ExactlyOnce`]): the batch's output goes into a sink transaction that
//!   is *pre-committed* (durable at the sink, not visible: PostgreSQL's
//!   `PREPARE TRANSACTION`), the pre-commit is journaled in the context's
//!   sink log, the batch commits in the context
//!   ([`StreamingContext::commit_batch`]: keyed state, then the tracker),
//!   and only then is the sink transaction committed. The batch's commit in
//!   the context is the decision: after a crash, [`ExactlyOnce::open`]
//!   commits the journaled pre-committed transaction of a committed batch
//!   and aborts every other one, including any transaction the sink holds
//!   that the log never journaled (a stray attempt: only the journaled one
//!   can have been decided). The batches not committed are in
//!   [`crate::recovery::Recovered::batches`] and run again. This is the
//!   two-phase commit Flink ties to its checkpoints.
//! - **Idempotent sinks** ([`IdempotentSink`], [`write_idempotent`]): the
//!   sink writes a batch's output and a `(query, batch)` marker atomically
//!   and refuses a second write under the same marker, so a batch run again
//!   after a crash writes nothing new (Structured Streaming's sinks
//!   idempotent by batch id).
//!
//! `docs/DESIGN.md` ("Exactly-once output") walks through every crash point.

use crate::codec;
use crate::error::{Error, Result};
use crate::recovery::StreamingContext;
use crate::wal::{Wal, WalOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Name of the sink logs' directory below a context's location: one log per
/// query, in `sink/<query>/`.
pub const SINK_DIR_NAME: &str = "sink";

pub use crate::limits::{QUERY_NAME_BYTES_MAX, TXN_HANDLE_BYTES_MAX};

/// The version of the sink log's event encoding (the first byte of every
/// record).
const EVENT_FORMAT_VERSION: u8 = 1;

/// An error from a sink's own client (a lost connection, a refused
/// statement), kept as the cause of [`Error::Sink`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// One query's output as one `(query, batch)` pair: the key a sink
/// deduplicates by, and what names its transactions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchKey {
    /// The query (validated as for [`ExactlyOnce::open`]).
    pub query: String,
    /// The batch's time (ms).
    pub batch_time: u64,
}

impl fmt::Display for BatchKey {
    /// `<query>-<batch_time>`, e.g. `counts-1700000001000`: usable as a
    /// PostgreSQL prepared-transaction name after a prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.query, self.batch_time)
    }
}

/// A sink that can hold a batch's output in a transaction, make it durable
/// without making it visible (pre-commit), and later commit or abort it,
/// even from another process after a crash.
///
/// Each method is called for one batch of one query; an implementation
/// serves one query (the `query` given to [`ExactlyOnce::open`]).
pub trait TransactionalSink {
    /// Make everything written for `batch_time` durable at the sink without
    /// making it visible, and return a handle that [`commit`] and [`abort`]
    /// can act on from a new process (e.g. the prepared transaction's
    /// name), at most [`TXN_HANDLE_BYTES_MAX`] bytes. It should also write
    /// a marker of the batch inside the transaction, so that [`commit`] can
    /// tell "committed already" from "lost".
    ///
    /// [`commit`]: TransactionalSink::commit
    /// [`abort`]: TransactionalSink::abort
    ///
    /// # Errors
    /// Any error of the sink: the batch is then aborted and not committed.
    fn pre_commit(&mut self, batch_time: u64) -> Result<Vec<u8>, SinkError>;

    /// Make the pre-committed transaction `txn` of `batch_time` visible.
    /// Must be idempotent: `Ok` if it is committed already (a crash after
    /// the sink committed and before the driver heard of it).
    ///
    /// # Errors
    /// The sink's error; also an error if the transaction is neither
    /// pending nor committed (the sink lost it).
    fn commit(&mut self, batch_time: u64, txn: &[u8]) -> Result<(), SinkError>;

    /// Discard batch `batch_time`'s transaction: the pre-committed one
    /// named by `txn`, or with `None` the open one not pre-committed yet.
    /// Must be idempotent: `Ok` if there is no such transaction.
    ///
    /// # Errors
    /// The sink's error.
    fn abort(&mut self, batch_time: u64, txn: Option<&[u8]>) -> Result<(), SinkError>;

    /// Every pre-committed transaction of this query pending at the sink,
    /// with its batch time and handle: those of a driver that crashed
    /// before it could journal them, found on recovery (PostgreSQL:
    /// `pg_prepared_xacts`).
    ///
    /// # Errors
    /// The sink's error.
    fn in_doubt(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SinkError>;
}

/// One event of a sink log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum SinkEvent {
    /// The batch's transaction is durable at the sink, not yet visible.
    PreCommitted { batch_time: u64, txn: Vec<u8> },
    /// The batch's transaction is committed at the sink.
    Committed { batch_time: u64 },
    /// The batch's transaction is aborted at the sink.
    Aborted { batch_time: u64 },
}

fn encode_event(event: &SinkEvent) -> Result<Vec<u8>> {
    let mut out = vec![EVENT_FORMAT_VERSION];
    out.extend(codec::encode(event, "sink event")?);
    Ok(out)
}

fn decode_event(bytes: &[u8]) -> Result<SinkEvent> {
    match bytes.split_first() {
        Some((&EVENT_FORMAT_VERSION, rest)) => {
            let event: SinkEvent = codec::decode(rest, "sink event")?;
            if let SinkEvent::PreCommitted { txn, .. } = &event
                && txn.len() > TXN_HANDLE_BYTES_MAX
            {
                return Err(Error::TooLarge {
                    size: txn.len() as u64,
                    max: TXN_HANDLE_BYTES_MAX as u64,
                });
            }
            Ok(event)
        }
        Some((v, _)) => Err(Error::Decode {
            what: "sink event",
            source: format!("unknown sink event version {v}").into(),
        }),
        None => Err(Error::Decode {
            what: "sink event",
            source: "empty sink event".into(),
        }),
    }
}

/// What [`ExactlyOnce::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkRecovery {
    /// Batches whose pre-committed transaction it committed (their batch
    /// was committed in the context; the sink had not heard of it).
    pub committed: Vec<u64>,
    /// Batches whose pre-committed transaction it aborted: a journaled one
    /// of a batch not committed (it runs again), or one in
    /// [`SinkRecovery::found_at_sink`].
    pub aborted: Vec<u64>,
    /// Of those, the transactions the sink reported that the sink log did
    /// not hold as the batch's pending pre-commit (a crash between the
    /// pre-commit and its journaling, or a stray attempt whose reply was
    /// lost): always aborted, even for a committed batch, whose output is
    /// the journaled attempt's.
    pub found_at_sink: Vec<u64>,
    /// Sink log events replayed.
    pub events_replayed: u64,
}

/// A [`TransactionalSink`] bound to a context: runs the two-phase commit of
/// every batch and resolves a crashed driver's transactions on open.
///
/// The sink log (`sink/<query>/` below the context, a [`Wal`] under
/// [`crate::SyncPolicy::Always`]) records each pre-commit before the batch
/// commits in the context, and each outcome after it.
#[derive(Debug)]
pub struct ExactlyOnce<S> {
    query: String,
    sink: S,
    log: Wal,
    /// Pre-committed transactions not yet committed or aborted at the sink.
    pending: BTreeMap<u64, Vec<u8>>,
    /// The batch pre-committed and not yet decided, with its handle.
    prepared: Option<(u64, Vec<u8>)>,
    /// Journaled pre-commits whose decision is unknown (the context's
    /// `commit_batch` failed): the log keeps them for the next open.
    undecided: BTreeMap<u64, Vec<u8>>,
    recovery: SinkRecovery,
}

/// Check that `query` is a usable query name.
///
/// # Errors
/// [`Error::InvalidOptions`] if it is empty, longer than
/// [`QUERY_NAME_BYTES_MAX`], or holds a character outside `[A-Za-z0-9_-]`.
pub fn check_query_name(query: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if query.is_empty() || query.len() > QUERY_NAME_BYTES_MAX || !query.chars().all(ok_char) {
        return Err(Error::InvalidOptions(
            "a query name is 1 to QUERY_NAME_BYTES_MAX characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(())
}

impl<S: TransactionalSink> ExactlyOnce<S> {
    /// Open the sink log of `query` below `ctx`'s location and resolve
    /// every pre-committed transaction left by an earlier driver: the
    /// transactions the log holds without an outcome, and those
    /// [`TransactionalSink::in_doubt`] reports. A journaled transaction
    /// whose batch is committed in the context (or cleaned up, which only
    /// committed batches are) is committed at the sink; any other is
    /// aborted, and its batch is among those recovery hands back to run. A
    /// transaction the sink reports that the log does not hold as the
    /// batch's pending pre-commit is always aborted: the committed attempt
    /// of a batch is journaled before the decision, so such a transaction
    /// is a stray attempt, and committing it would write the batch twice.
    /// Call it after
    /// [`crate::recovery::ContextBuilder::get_or_create`] and before running
    /// any batch; [`ExactlyOnce::recovery`] says what it did.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a bad query name; the sink log's
    /// [`Wal::open`] and append errors; [`Error::Decode`] for a log record
    /// that passes its checksum but is not a sink event; [`Error::Sink`]
    /// if the sink fails to list, commit or abort (nothing is marked
    /// resolved that was not; opening again retries).
    pub fn open<G>(ctx: &StreamingContext<G>, query: &str, mut sink: S) -> Result<ExactlyOnce<S>> {
        check_query_name(query)?;
        let at = ctx
            .checkpoints
            .location()
            .child(SINK_DIR_NAME)?
            .child(query)?;
        let log = Wal::open(
            at,
            // A few small records per batch: like the state log, no
            // preallocation (zero-filling would cost more than it saves).
            WalOptions {
                segment_bytes: 1 << 20,
                max_record_bytes: crate::limits::SINK_RECORD_BYTES_MAX,
                preallocate: false,
                prepare_ahead: false,
                ..WalOptions::default()
            },
        )?;
        let mut pending = BTreeMap::new();
        let mut recovery = SinkRecovery::default();
        for item in log.iter() {
            let (_, bytes) = item?;
            match decode_event(&bytes)? {
                SinkEvent::PreCommitted { batch_time, txn } => {
                    pending.insert(batch_time, txn);
                }
                SinkEvent::Committed { batch_time } | SinkEvent::Aborted { batch_time } => {
                    pending.remove(&batch_time);
                }
            }
            recovery.events_replayed += 1;
        }
        let err = |op, batch_time| {
            let query = query.to_string();
            move |source| Error::Sink {
                query,
                batch_time,
                op,
                source,
            }
        };
        for (batch_time, txn) in sink.in_doubt().map_err(err("list in-doubt", 0))? {
            if pending.get(&batch_time) != Some(&txn) {
                // Not the journaled attempt: never decided, abort it.
                sink.abort(batch_time, Some(&txn))
                    .map_err(err("abort", batch_time))?;
                recovery.found_at_sink.push(batch_time);
                recovery.aborted.push(batch_time);
            }
        }
        let (tracker, _) = ctx.tracker.snapshot()?;
        let mut me = ExactlyOnce {
            query: query.to_string(),
            sink,
            log,
            pending,
            prepared: None,
            undecided: BTreeMap::new(),
            recovery,
        };
        for (batch_time, txn) in me.pending.clone() {
            let decided =
                tracker.committed.contains(&batch_time) || batch_time < tracker.cleaned_before;
            if decided {
                me.finish(batch_time, &txn, "commit")?;
                me.recovery.committed.push(batch_time);
            } else {
                me.sink
                    .abort(batch_time, Some(&txn))
                    .map_err(err("abort", batch_time))?;
                me.record(&SinkEvent::Aborted { batch_time })?;
                me.pending.remove(&batch_time);
                me.recovery.aborted.push(batch_time);
            }
        }
        me.retire()?;
        Ok(me)
    }

    /// The sink, to write the open batch's output into its transaction.
    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The query this sink writes for.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// What opening resolved.
    pub fn recovery(&self) -> &SinkRecovery {
        &self.recovery
    }

    /// Batches committed in the context whose sink transaction is not
    /// committed yet (an earlier [`ExactlyOnce::commit_batch`] failed at its
    /// last step); [`ExactlyOnce::retry_pending`], the next successful
    /// [`ExactlyOnce::commit`] or the next open finishes them.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Commit batch `batch_time` everywhere, after its output was written
    /// into the sink's open transaction: [`ExactlyOnce::pre_commit`], then
    /// [`ExactlyOnce::commit`].
    ///
    /// # Errors
    /// As the two steps.
    pub fn commit_batch<G>(&mut self, ctx: &StreamingContext<G>, batch_time: u64) -> Result<()> {
        self.pre_commit(ctx, batch_time)?;
        self.commit(ctx, batch_time)
    }

    /// The first phase: pre-commit batch `batch_time` at the sink and
    /// journal the pre-commit (durably). It touches no other batch's
    /// transaction (pending commits are retried by
    /// [`ExactlyOnce::commit`], [`ExactlyOnce::retry_pending`] and open,
    /// never while this batch's transaction is open). Nothing is decided
    /// yet: a crash from here until [`ExactlyOnce::commit`] has committed
    /// the batch in the context aborts the transaction on open, and the
    /// batch runs again.
    ///
    /// # Errors
    /// - [`Error::StateMisuse`] if a batch is pre-committed already and not
    ///   committed or aborted yet, or an earlier commit's decision is
    ///   unknown (stop and recover): nothing done, the sink's open
    ///   transaction is left as it is.
    /// - [`Error::Sink`] with `op` `"pre-commit"`, [`Error::TooLarge`] for a
    ///   handle over [`TXN_HANDLE_BYTES_MAX`], or a sink log error: the batch
    ///   is not committed anywhere; its transaction and its state changes are
    ///   aborted (best effort at the sink; a transaction left behind is
    ///   aborted on the next open). Run it again, or stop and recover.
    pub fn pre_commit<G>(&mut self, ctx: &StreamingContext<G>, batch_time: u64) -> Result<()> {
        if self.prepared.is_some() {
            return Err(Error::StateMisuse(
                "sink pre-commit while another batch is pre-committed and not committed or aborted",
            ));
        }
        if !self.undecided.is_empty() {
            return Err(Error::StateMisuse(
                "sink pre-commit after a batch's commit failed with its outcome unknown: reopen",
            ));
        }
        let txn = match self.sink.pre_commit(batch_time) {
            Ok(txn) if txn.len() <= TXN_HANDLE_BYTES_MAX => txn,
            Ok(txn) => {
                self.abort_quietly(ctx, batch_time, Some(&txn));
                return Err(Error::TooLarge {
                    size: txn.len() as u64,
                    max: TXN_HANDLE_BYTES_MAX as u64,
                });
            }
            Err(source) => {
                self.abort_quietly(ctx, batch_time, None);
                return Err(self.error("pre-commit", batch_time, source));
            }
        };
        let event = SinkEvent::PreCommitted {
            batch_time,
            txn: txn.clone(),
        };
        if let Err(e) = self.record(&event) {
            self.abort_quietly(ctx, batch_time, Some(&txn));
            return Err(e);
        }
        self.prepared = Some((batch_time, txn));
        Ok(())
    }

    /// The second phase: [`StreamingContext::commit_batch`] (the decision:
    /// from here on the batch is committed and never runs again), then
    /// commit at the sink and journal that.
    ///
    /// # Errors
    /// Then every transaction still pending from an earlier failed commit
    /// is committed ([`ExactlyOnce::retry_pending`]).
    ///
    /// # Errors
    /// Check `batch_time` of an [`Error::Sink`]: it may name another batch.
    /// - [`Error::StateMisuse`] if `batch_time` is not the batch
    ///   [`ExactlyOnce::pre_commit`] last pre-committed, or the context
    ///   refuses the commit as misuse (nothing done; the batch stays
    ///   pre-committed).
    /// - Another error of [`StreamingContext::commit_batch`]: whether the
    ///   batch is committed is unknown; stop and recover (open resolves
    ///   it; until then the sink log keeps its pre-commit and
    ///   [`ExactlyOnce::pre_commit`] refuses).
    /// - [`Error::Sink`] with `op` `"commit"` and this `batch_time` (or a
    ///   sink log error after the decision): the batch **is** committed
    ///   and its output is durable at the sink but not visible yet; it is
    ///   kept in [`ExactlyOnce::pending`] and committed by
    ///   [`ExactlyOnce::retry_pending`], the next commit, or the next
    ///   open. Never run the batch again.
    /// - [`Error::Sink`] with `op` `"commit-pending"`: this batch is
    ///   committed everywhere; the retry of the earlier batch it names
    ///   failed, which stays pending.
    pub fn commit<G>(&mut self, ctx: &StreamingContext<G>, batch_time: u64) -> Result<()> {
        let txn = match self.prepared.take() {
            Some((t, txn)) if t == batch_time => txn,
            other => {
                self.prepared = other;
                return Err(Error::StateMisuse(
                    "sink commit of a batch that is not the one pre-committed",
                ));
            }
        };
        match ctx.commit_batch(batch_time) {
            Ok(()) => {}
            Err(e @ Error::StateMisuse(_)) => {
                // Refused before anything was done: still pre-committed.
                self.prepared = Some((batch_time, txn));
                return Err(e);
            }
            Err(e) => {
                self.undecided.insert(batch_time, txn);
                return Err(e);
            }
        }
        self.pending.insert(batch_time, txn.clone());
        self.finish(batch_time, &txn, "commit")?;
        self.retry_pending()?;
        self.retire()
    }

    /// Commit at the sink every transaction of a committed batch still
    /// pending (see [`ExactlyOnce::commit`]). Call it only while the sink
    /// has no batch's transaction open (a PostgreSQL session cannot run
    /// `COMMIT PREPARED` inside a transaction block).
    ///
    /// # Errors
    /// [`Error::Sink`] with `op` `"commit-pending"` and the batch that
    /// failed, or a sink log error; what is not committed stays pending.
    pub fn retry_pending(&mut self) -> Result<()> {
        for (batch_time, txn) in self.pending.clone() {
            self.finish(batch_time, &txn, "commit-pending")?;
        }
        Ok(())
    }

    /// Give up on batch `batch_time` (before [`ExactlyOnce::commit`]):
    /// abort its sink transaction, open or pre-committed, and its state
    /// changes ([`StreamingContext::abort_batch`]).
    ///
    /// # Errors
    /// [`Error::Sink`] if the sink fails to abort (the state changes are
    /// dropped anyway; an open transaction dies with its connection).
    pub fn abort_batch<G>(&mut self, ctx: &StreamingContext<G>, batch_time: u64) -> Result<()> {
        ctx.abort_batch();
        let txn = match self.prepared.take() {
            Some((t, txn)) if t == batch_time => Some(txn),
            other => {
                self.prepared = other;
                None
            }
        };
        self.sink
            .abort(batch_time, txn.as_deref())
            .map_err(|e| self.error("abort", batch_time, e))?;
        if txn.is_some() {
            self.record(&SinkEvent::Aborted { batch_time })?;
        }
        Ok(())
    }

    fn abort_quietly<G>(&mut self, ctx: &StreamingContext<G>, batch_time: u64, txn: Option<&[u8]>) {
        ctx.abort_batch();
        // Best effort: a transaction left pending is aborted on open.
        let _ = self.sink.abort(batch_time, txn);
    }

    /// Commit `txn` at the sink and journal that; keeps it pending on error.
    fn finish(&mut self, batch_time: u64, txn: &[u8], op: &'static str) -> Result<()> {
        self.sink
            .commit(batch_time, txn)
            .map_err(|e| self.error(op, batch_time, e))?;
        self.record(&SinkEvent::Committed { batch_time })?;
        self.pending.remove(&batch_time);
        Ok(())
    }

    fn record(&self, event: &SinkEvent) -> Result<()> {
        self.log.append(&encode_event(event)?).map(|_| ())
    }

    /// Delete the sink log's sealed segments once nothing in them is
    /// pending or undecided: every event before the last one is then about
    /// a resolved batch. A journaled pre-commit whose decision is unknown
    /// is never purged: if its batch is committed, the next open must find
    /// it to commit it.
    fn retire(&self) -> Result<()> {
        if self.pending.is_empty()
            && self.undecided.is_empty()
            && self.prepared.is_none()
            && let Some(last) = self.log.last_lsn()
        {
            self.log.purge_before_lsn(last)?;
        }
        Ok(())
    }

    fn error(&self, op: &'static str, batch_time: u64, source: SinkError) -> Error {
        Error::Sink {
            query: self.query.clone(),
            batch_time,
            op,
            source,
        }
    }
}

/// A sink that deduplicates by [`BatchKey`]: it writes a batch's output and
/// the key's marker in one atomic step, and a second write under a key
/// already there writes nothing (a unique key on the marker makes that
/// hold even against a concurrent writer).
pub trait IdempotentSink {
    /// What one batch writes.
    type Output;

    /// Write `output` and the marker of `key` atomically, unless the marker
    /// is there already; `Ok(true)` if written now, `Ok(false)` if the key
    /// was written before (nothing changed).
    ///
    /// # Errors
    /// The sink's error: nothing of the batch is written.
    fn write_once(&mut self, key: &BatchKey, output: Self::Output) -> Result<bool, SinkError>;
}

/// Write batch `batch_time`'s output for `query` through an idempotent sink,
/// then commit the batch in the context. A batch run again after a crash
/// between the two finds its key written and writes nothing. Returns
/// whether the output was written now.
///
/// # Errors
/// [`Error::InvalidOptions`] for a bad query name; [`Error::Sink`] if the
/// write fails (the batch's state changes are aborted and it is not
/// committed: run it again); [`StreamingContext::commit_batch`] errors.
pub fn write_idempotent<G, S: IdempotentSink>(
    ctx: &StreamingContext<G>,
    sink: &mut S,
    query: &str,
    batch_time: u64,
    output: S::Output,
) -> Result<bool> {
    check_query_name(query)?;
    let key = BatchKey {
        query: query.to_string(),
        batch_time,
    };
    let written = match sink.write_once(&key, output) {
        Ok(w) => w,
        Err(source) => {
            ctx.abort_batch();
            return Err(Error::Sink {
                query: key.query,
                batch_time,
                op: "write",
                source,
            });
        }
    };
    ctx.commit_batch(batch_time)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_a_typed_error() {
        for e in [
            SinkEvent::PreCommitted {
                batch_time: 7,
                txn: b"streamwal-q-7".to_vec(),
            },
            SinkEvent::Committed { batch_time: 7 },
            SinkEvent::Aborted {
                batch_time: u64::MAX,
            },
        ] {
            assert_eq!(decode_event(&encode_event(&e).unwrap()).unwrap(), e);
        }
        assert!(matches!(decode_event(&[]), Err(Error::Decode { .. })));
        assert!(matches!(decode_event(&[9, 0]), Err(Error::Decode { .. })));
        assert!(matches!(decode_event(&[1, 200]), Err(Error::Decode { .. })));
        let big = SinkEvent::PreCommitted {
            batch_time: 1,
            txn: vec![0; TXN_HANDLE_BYTES_MAX + 1],
        };
        assert!(matches!(
            decode_event(&encode_event(&big).unwrap()),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn query_names_are_checked() {
        assert!(check_query_name("counts_v2-a").is_ok());
        for bad in [
            "",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(QUERY_NAME_BYTES_MAX + 1),
        ] {
            assert!(check_query_name(bad).is_err(), "{bad:?}");
        }
    }
}
