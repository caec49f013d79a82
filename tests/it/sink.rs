//! The exactly-once sink protocol against an in-memory sink whose
//! "server" outlives the driver: a driver dropped at each step of a batch's
//! commit (a crash, as far as the context's files are concerned) and
//! reopened resolves the batch's transaction the right way; a sink that
//! fails to pre-commit leaves the batch uncommitted; a sink that fails to
//! commit keeps the batch pending until a retry or the next open commits
//! it; the idempotent helper writes a batch run twice once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use streamwal::sink::{
    BatchKey, ExactlyOnce, IdempotentSink, SinkError, TransactionalSink, write_idempotent,
};
use streamwal::{Error, StreamingContext};

/// What the outside system holds; shared by every driver of a test.
#[derive(Default, Debug)]
struct Server {
    /// Rows written by the open transaction, per batch.
    open: BTreeMap<u64, Vec<u64>>,
    /// Pre-committed transactions by handle, with their batch and rows.
    prepared: BTreeMap<Vec<u8>, (u64, Vec<u64>)>,
    /// Committed rows, per batch (a batch committed twice shows its rows
    /// twice).
    visible: BTreeMap<u64, Vec<u64>>,
    /// Pre-commits so far: each attempt's handle is new.
    attempts: u64,
    /// Fail the next pre-commit; with `lose_reply`, after preparing (the
    /// reply is lost).
    fail_pre_commit: bool,
    lose_reply: bool,
    /// Fail the next commit of each of these batches.
    fail_commit: BTreeSet<u64>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Server>>);

impl Fake {
    fn write(&self, batch: u64, row: u64) {
        self.0
            .lock()
            .unwrap()
            .open
            .entry(batch)
            .or_default()
            .push(row);
    }
    fn with<T>(&self, f: impl FnOnce(&mut Server) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

impl TransactionalSink for Fake {
    fn pre_commit(&mut self, batch_time: u64) -> Result<Vec<u8>, SinkError> {
        self.with(|s| {
            if s.fail_pre_commit && !s.lose_reply {
                s.fail_pre_commit = false;
                return Err("connection reset".into());
            }
            let rows = s.open.remove(&batch_time).unwrap_or_default();
            let txn = format!("txn-{batch_time}-{}", s.attempts).into_bytes();
            s.attempts += 1;
            s.prepared.insert(txn.clone(), (batch_time, rows));
            if std::mem::take(&mut s.fail_pre_commit) {
                return Err("reply lost".into());
            }
            Ok(txn)
        })
    }
    fn commit(&mut self, batch_time: u64, txn: &[u8]) -> Result<(), SinkError> {
        self.with(|s| {
            // Like PostgreSQL: no COMMIT PREPARED inside a transaction block.
            if !s.open.is_empty() {
                return Err("commit of a prepared transaction while one is open".into());
            }
            if s.fail_commit.remove(&batch_time) {
                return Err("connection reset".into());
            }
            match s.prepared.remove(txn) {
                Some((b, rows)) => {
                    assert_eq!(b, batch_time);
                    s.visible.entry(batch_time).or_default().extend(rows);
                    Ok(())
                }
                None if s.visible.contains_key(&batch_time) => Ok(()),
                None => Err("transaction lost".into()),
            }
        })
    }
    fn abort(&mut self, batch_time: u64, txn: Option<&[u8]>) -> Result<(), SinkError> {
        self.with(|s| match txn {
            None => {
                s.open.remove(&batch_time);
            }
            Some(txn) => {
                s.prepared.remove(txn);
            }
        });
        Ok(())
    }
    fn in_doubt(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SinkError> {
        Ok(self.with(|s| {
            s.prepared
                .iter()
                .map(|(txn, (b, _))| (*b, txn.clone()))
                .collect()
        }))
    }
}

fn open(dir: &Path) -> StreamingContext<()> {
    StreamingContext::builder(dir)
        .batch_interval_ms(1_000)
        .now_ms(1)
        .get_or_create(|| ())
        .unwrap()
}

/// Begin batch `t` and write rows `t + 1` and `t + 2` into the sink.
fn write_batch(ctx: &StreamingContext<()>, fake: &Fake, t: u64) {
    ctx.begin_batch(t).unwrap();
    ctx.tracker.allocate_blocks_to_batch(t).unwrap();
    let seen = ctx.state::<u64, u64>("seen").unwrap();
    for row in [t + 1, t + 2] {
        seen.put(row, 1).unwrap();
        fake.write(t, row);
    }
}

fn owed(ctx: &StreamingContext<()>) -> Vec<u64> {
    ctx.recovered
        .as_ref()
        .map(|r| r.batches.iter().map(|b| b.batch_time).collect())
        .unwrap_or_default()
}

#[test]
fn sink_a_driver_dropped_at_each_step_resolves_on_open() {
    // Step 0: after writing; 1: after pre-commit (journaled); 2: after the
    // context's commit with the sink's commit failing.
    for step in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let fake = Fake::default();
        {
            let ctx = open(tmp.path());
            let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
            write_batch(&ctx, &fake, 1_000);
            if step >= 1 {
                eo.pre_commit(&ctx, 1_000).unwrap();
            }
            if step == 2 {
                fake.with(|s| s.fail_commit.insert(1_000));
                let e = eo.commit(&ctx, 1_000).unwrap_err();
                assert!(matches!(e, Error::Sink { op: "commit", .. }), "{e:?}");
                assert_eq!(eo.pending(), vec![1_000]);
            }
        } // the driver is gone; the fake server keeps what it holds
        let ctx = open(tmp.path());
        let eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
        let r = eo.recovery().clone();
        let committed = ctx.tracker.is_committed(1_000).unwrap();
        assert_eq!(committed, step == 2, "step {step}");
        if step == 2 {
            assert_eq!(r.committed, vec![1_000]);
            assert!(owed(&ctx).is_empty());
            fake.with(|s| assert_eq!(s.visible[&1_000], vec![1_001, 1_002]));
        } else {
            assert_eq!(owed(&ctx), vec![1_000], "step {step}: runs again");
            assert_eq!(r.aborted, if step == 1 { vec![1_000] } else { vec![] });
            fake.with(|s| assert!(s.visible.is_empty() && s.prepared.is_empty()));
        }
    }
}

#[test]
fn sink_a_transaction_the_log_never_heard_of_is_found_and_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let ctx = open(tmp.path());
        let _eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
        write_batch(&ctx, &fake, 1_000);
        // The sink pre-committed; the driver died before journaling it.
        fake.clone().pre_commit(1_000).unwrap();
    }
    let ctx = open(tmp.path());
    let eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    assert_eq!(eo.recovery().found_at_sink, vec![1_000]);
    assert_eq!(eo.recovery().aborted, vec![1_000]);
    fake.with(|s| assert!(s.prepared.is_empty() && s.visible.is_empty()));
}

#[test]
fn sink_a_failed_pre_commit_leaves_the_batch_to_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let ctx = open(tmp.path());
    let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    write_batch(&ctx, &fake, 1_000);
    fake.with(|s| s.fail_pre_commit = true);
    let e = eo.commit_batch(&ctx, 1_000).unwrap_err();
    assert!(matches!(
        e,
        Error::Sink {
            op: "pre-commit",
            batch_time: 1_000,
            ..
        }
    ));
    assert_eq!(
        std::error::Error::source(&e).map(|s| s.to_string()),
        Some("connection reset".into()),
        "the cause is kept"
    );
    assert!(!ctx.tracker.is_committed(1_000).unwrap());
    // The state changes were dropped, the open transaction aborted: run it again.
    assert_eq!(ctx.state::<u64, u64>("seen").unwrap().len().unwrap(), 0);
    write_batch(&ctx, &fake, 1_000);
    eo.commit_batch(&ctx, 1_000).unwrap();
    fake.with(|s| assert_eq!(s.visible[&1_000], vec![1_001, 1_002]));
}

#[test]
fn sink_a_failed_commit_is_retried_and_never_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let ctx = open(tmp.path());
    let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    write_batch(&ctx, &fake, 1_000);
    fake.with(|s| s.fail_commit.insert(1_000));
    assert!(eo.commit_batch(&ctx, 1_000).is_err());
    assert!(ctx.tracker.is_committed(1_000).unwrap(), "decided");
    assert_eq!(eo.pending(), vec![1_000]);
    // The next batch's commit finishes the pending one after its own (the
    // fake refuses a commit while 2_000's transaction is open, as
    // PostgreSQL does).
    write_batch(&ctx, &fake, 2_000);
    eo.commit_batch(&ctx, 2_000).unwrap();
    assert!(eo.pending().is_empty());
    let batches: BTreeSet<u64> = fake.with(|s| s.visible.keys().copied().collect());
    assert_eq!(batches, BTreeSet::from([1_000, 2_000]));
    // A later open finds nothing to resolve.
    drop((eo, ctx));
    let ctx = open(tmp.path());
    let eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    assert_eq!(eo.recovery().committed, Vec::<u64>::new());
    assert_eq!(eo.recovery().aborted, Vec::<u64>::new());
}

#[test]
fn sink_a_bad_query_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = open(tmp.path());
    for bad in ["", "../x", "a b"] {
        assert!(matches!(
            ExactlyOnce::open(&ctx, bad, Fake::default()),
            Err(Error::InvalidOptions(_))
        ));
    }
}

/// Deduplicates by key; counts what it holds.
#[derive(Default)]
struct Dedup {
    written: BTreeMap<BatchKey, Vec<u64>>,
}

impl IdempotentSink for Dedup {
    type Output = Vec<u64>;
    fn write_once(&mut self, key: &BatchKey, output: Vec<u64>) -> Result<bool, SinkError> {
        if self.written.contains_key(key) {
            return Ok(false);
        }
        self.written.insert(key.clone(), output);
        Ok(true)
    }
}

#[test]
fn sink_idempotent_a_batch_run_again_writes_nothing_new() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = Dedup::default();
    let key = BatchKey {
        query: "q".into(),
        batch_time: 1_000,
    };
    {
        let ctx = open(tmp.path());
        ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
        // Written, then the driver died before commit_batch.
        assert!(sink.write_once(&key, vec![1]).unwrap());
    }
    let ctx = open(tmp.path());
    assert_eq!(owed(&ctx), vec![1_000]);
    assert!(!write_idempotent(&ctx, &mut sink, "q", 1_000, vec![1]).unwrap());
    assert!(ctx.tracker.is_committed(1_000).unwrap());
    assert!(write_idempotent(&ctx, &mut sink, "q", 2_000, vec![2]).unwrap());
    assert_eq!(sink.written.len(), 2);
    assert_eq!(key.to_string(), "q-1000");
}

/// The same protocol with the context (and so the sink log) on object
/// storage: in memory, and on S3 when `.ci/run` provides it.
#[cfg(feature = "object-store")]
#[test]
fn object_sink_a_crashed_driver_is_resolved_by_the_next_on_object_storage() {
    use crate::common::objects::backends;
    for b in backends("sink_object") {
        let open = || {
            StreamingContext::builder(b.location("ctx"))
                .batch_interval_ms(1_000)
                .now_ms(1)
                .get_or_create(|| ())
                .unwrap()
        };
        let fake = Fake::default();
        {
            let ctx = open();
            let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
            write_batch(&ctx, &fake, 1_000);
            eo.commit_batch(&ctx, 1_000).unwrap();
            write_batch(&ctx, &fake, 2_000);
            eo.pre_commit(&ctx, 2_000).unwrap();
        } // dies before the decision
        let ctx = open();
        let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
        assert_eq!(eo.recovery().aborted, vec![2_000], "{}", b.name());
        assert_eq!(owed(&ctx), vec![2_000], "{}", b.name());
        write_batch(&ctx, &fake, 2_000);
        eo.commit_batch(&ctx, 2_000).unwrap();
        let visible: BTreeSet<u64> = fake.with(|s| s.visible.keys().copied().collect());
        assert_eq!(visible, BTreeSet::from([1_000, 2_000]), "{}", b.name());
    }
}

#[test]
fn sink_a_failed_retry_names_the_pending_batch_not_the_committed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let ctx = open(tmp.path());
    let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    write_batch(&ctx, &fake, 1_000);
    fake.with(|s| s.fail_commit.insert(1_000));
    assert!(eo.commit_batch(&ctx, 1_000).is_err());
    write_batch(&ctx, &fake, 2_000);
    fake.with(|s| s.fail_commit.insert(1_000));
    let e = eo.commit_batch(&ctx, 2_000).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Sink {
                op: "commit-pending",
                batch_time: 1_000,
                ..
            }
        ),
        "{e:?}"
    );
    // 2_000 is committed everywhere; 1_000 still pending, retried by hand.
    assert!(ctx.tracker.is_committed(2_000).unwrap());
    fake.with(|s| assert_eq!(s.visible[&2_000], vec![2_001, 2_002]));
    assert_eq!(eo.pending(), vec![1_000]);
    eo.retry_pending().unwrap();
    fake.with(|s| assert_eq!(s.visible[&1_000], vec![1_001, 1_002]));
}

#[test]
fn sink_a_stray_attempt_of_a_committed_batch_is_aborted_not_committed_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let ctx = open(tmp.path());
        let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
        write_batch(&ctx, &fake, 1_000);
        // The prepare reaches the server; its reply is lost.
        fake.with(|s| {
            s.fail_pre_commit = true;
            s.lose_reply = true;
        });
        assert!(eo.commit_batch(&ctx, 1_000).is_err());
        fake.with(|s| assert_eq!(s.prepared.len(), 1, "the stray is left"));
        // Run again and committed under another handle.
        write_batch(&ctx, &fake, 1_000);
        eo.commit_batch(&ctx, 1_000).unwrap();
    }
    let ctx = open(tmp.path());
    let eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    assert_eq!(eo.recovery().found_at_sink, vec![1_000]);
    assert!(eo.recovery().committed.is_empty());
    fake.with(|s| {
        assert_eq!(s.visible[&1_000], vec![1_001, 1_002], "written once");
        assert!(s.prepared.is_empty());
    });
}

#[test]
fn sink_a_second_pre_commit_before_the_commit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let ctx = open(tmp.path());
    let mut eo = ExactlyOnce::open(&ctx, "q", fake.clone()).unwrap();
    write_batch(&ctx, &fake, 1_000);
    eo.pre_commit(&ctx, 1_000).unwrap();
    let e = eo.pre_commit(&ctx, 1_000).unwrap_err();
    assert!(matches!(e, Error::StateMisuse(_)), "{e:?}");
    // A commit of the wrong batch is refused and keeps the pre-commit.
    let e = eo.commit(&ctx, 2_000).unwrap_err();
    assert!(matches!(e, Error::StateMisuse(_)), "{e:?}");
    eo.commit(&ctx, 1_000).unwrap();
    fake.with(|s| {
        assert_eq!(s.visible[&1_000], vec![1_001, 1_002]);
        assert!(s.prepared.is_empty(), "{:?}", s.prepared);
    });
}
