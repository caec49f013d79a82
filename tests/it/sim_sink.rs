//! The exactly-once sink protocol on the crash simulator: a stateful driver
//! reading a replayable source (its ranges planned in the offsets log)
//! commits 6 batches through [`ExactlyOnce`] into a model of an outside
//! transactional system (its actions recorded as events, so the model's
//! state at any crash point is the events before it: the outside system
//! keeps what it did, the context's files lose what power loss allows).
//! Crashed after every I/O step, the context is recovered, the sink
//! resolved, the owed batches run again; then every batch committed in the
//! context is visible at the sink exactly once (from one transaction), no
//! other batch is, no transaction is left pending, every batch whose
//! commit returned is visible, the visible batches' source ranges tile the
//! source from 0 (a rerun reads its planned range though the source has
//! grown), and the keyed state holds each of their records once.
//!
//! Crashes during recovery are left to the real kill test
//! (`tests/it/pg_sink.rs`, whose pauses count recovery's own commits): the
//! model rebuilt from the events would forget what a crashed recovery did
//! at the sink.
#![cfg(feature = "sim")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use streamwal::recovery::ContextOptions;
use streamwal::sim::{CrashHarness, Recorder};
use streamwal::sink::{ExactlyOnce, SinkError, TransactionalSink};
use streamwal::sources::{OffsetLog, batches_to_run};
use streamwal::storage::Storage;
use streamwal::{Location, StreamingContext, WalOptions};

const DIR: &str = "/sim/ctx";
const BATCHES: u64 = 6;

/// What happened at the outside system, or (`Done`) returned to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Prepared { batch: u64, txn: u64 },
    Committed { txn: u64 },
    Aborted { txn: u64 },
    Done(u64),
}

/// The outside system: prepared transactions, and per batch the
/// transactions made visible.
#[derive(Debug, Default)]
struct Outside {
    prepared: BTreeMap<u64, u64>, // txn -> batch
    visible: BTreeMap<u64, Vec<u64>>,
    next_txn: u64,
}

impl Outside {
    fn apply(&mut self, ev: &Ev) {
        match ev {
            Ev::Prepared { batch, txn } => {
                self.prepared.insert(*txn, *batch);
                self.next_txn = self.next_txn.max(txn + 1);
            }
            Ev::Committed { txn } => {
                if let Some(batch) = self.prepared.remove(txn) {
                    self.visible.entry(batch).or_default().push(*txn);
                }
            }
            Ev::Aborted { txn } => {
                self.prepared.remove(txn);
            }
            Ev::Done(_) => {}
        }
    }
}

/// The sink over the model; `log` also records each action (in the
/// workload, so that the harness sees them).
struct Model<'a> {
    outside: Arc<Mutex<Outside>>,
    log: Option<&'a Recorder<Ev>>,
}

impl Model<'_> {
    fn act(&self, ev: Ev) {
        self.outside.lock().unwrap().apply(&ev);
        if let Some(r) = self.log {
            r.record(ev);
        }
    }
    fn txn_of(txn: &[u8]) -> u64 {
        u64::from_le_bytes(txn.try_into().unwrap())
    }
}

impl TransactionalSink for Model<'_> {
    fn pre_commit(&mut self, batch: u64) -> Result<Vec<u8>, SinkError> {
        let txn = self.outside.lock().unwrap().next_txn;
        self.act(Ev::Prepared { batch, txn });
        Ok(txn.to_le_bytes().to_vec())
    }
    fn commit(&mut self, batch: u64, txn: &[u8]) -> Result<(), SinkError> {
        let txn = Model::txn_of(txn);
        let o = self.outside.lock().unwrap();
        let pending = o.prepared.contains_key(&txn);
        let done = o.visible.get(&batch).is_some_and(|v| v.contains(&txn));
        drop(o);
        match (pending, done) {
            (true, _) => {
                self.act(Ev::Committed { txn });
                Ok(())
            }
            (false, true) => Ok(()),
            (false, false) => Err(format!("txn {txn} of batch {batch} lost").into()),
        }
    }
    fn abort(&mut self, _batch: u64, txn: Option<&[u8]>) -> Result<(), SinkError> {
        if let Some(txn) = txn.map(Model::txn_of)
            && self.outside.lock().unwrap().prepared.contains_key(&txn)
        {
            self.act(Ev::Aborted { txn });
        }
        Ok(())
    }
    fn in_doubt(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SinkError> {
        let o = self.outside.lock().unwrap();
        Ok(o.prepared
            .iter()
            .map(|(&txn, &batch)| (batch, txn.to_le_bytes().to_vec()))
            .collect())
    }
}

fn open(storage: Arc<dyn Storage>) -> streamwal::Result<StreamingContext<()>> {
    let small = WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        max_batch_bytes: 4096,
        ..WalOptions::default()
    };
    let mut o = ContextOptions::new(1_000);
    o.receiver_log = small.clone();
    o.journal = small.clone();
    o.state.log = WalOptions {
        preallocate: false,
        ..small
    };
    StreamingContext::builder(Location::dir_on(storage, DIR))
        .options(o)
        .now_ms(0)
        .get_or_create(|| ())
}

/// Batch `t`: the records of the replayable source `"s"` up to
/// `source_end` (unless its range is planned already) counted in keyed
/// state, committed through the sink (the model needs only the batch: its
/// rows are its range's).
fn run_batch(
    ctx: &StreamingContext<()>,
    offsets: &mut OffsetLog,
    eo: &mut ExactlyOnce<Model<'_>>,
    t: u64,
    source_end: u64,
) -> bool {
    let seen = match ctx.state::<u64, u64>("seen") {
        Ok(s) => s,
        Err(_) => return false,
    };
    if ctx.begin_batch(t).is_err() {
        return false;
    }
    let Ok(ranges) = offsets.plan(t, &BTreeMap::from([("s".to_string(), source_end)])) else {
        return false;
    };
    let r = ranges["s"];
    ctx.tracker.allocate_blocks_to_batch(t).is_ok()
        && (r.start..r.end).all(|id| {
            let n = seen.get(&id).ok().flatten().unwrap_or(0);
            seen.put(id, n + 1).is_ok()
        })
        && eo.commit_batch(ctx, t).is_ok()
}

fn check(storage: Arc<dyn Storage>, events: &[Ev]) -> Result<(), String> {
    let outside = Arc::new(Mutex::new(Outside::default()));
    for e in events {
        outside.lock().unwrap().apply(e);
    }
    let ctx = open(storage).map_err(|e| format!("recovery failed: {e:?}"))?;
    let sink = Model {
        outside: outside.clone(),
        log: None,
    };
    let mut eo = ExactlyOnce::open(&ctx, "q", sink).map_err(|e| format!("sink: {e:?}"))?;
    let mut offsets = OffsetLog::open(&ctx).map_err(|e| format!("offsets: {e:?}"))?;
    for t in batches_to_run(&ctx, &offsets).map_err(|e| e.to_string())? {
        // The source has grown since: a planned batch must not see it.
        if !run_batch(&ctx, &mut offsets, &mut eo, t, t / 1_000 * 3 + 100) {
            return Err(format!("rerun of batch {t} failed"));
        }
    }
    let (tracker, _) = ctx.tracker.snapshot().map_err(|e| e.to_string())?;
    let o = outside.lock().unwrap();
    if !o.prepared.is_empty() {
        return Err(format!("left pending: {:?}", o.prepared));
    }
    let visible: BTreeSet<u64> = o.visible.keys().copied().collect();
    if visible != tracker.committed {
        return Err(format!(
            "visible {visible:?}, committed in the context {:?}",
            tracker.committed
        ));
    }
    if let Some((b, txns)) = o.visible.iter().find(|(_, v)| v.len() != 1) {
        return Err(format!("batch {b} visible from transactions {txns:?}"));
    }
    for e in events {
        if let Ev::Done(t) = e
            && !visible.contains(t)
        {
            return Err(format!("batch {t} returned committed but is not visible"));
        }
    }
    let seen = ctx.state::<u64, u64>("seen").map_err(|e| e.to_string())?;
    let rows: BTreeMap<u64, u64> = seen
        .iter()
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    // The visible batches' ranges tile the source from 0, in batch order.
    let mut expect = BTreeMap::new();
    let mut next = 0;
    for t in &visible {
        let r = offsets.ranges(*t).ok_or(format!("batch {t} has no plan"))?["s"];
        if r.start != next {
            return Err(format!("batch {t} reads {r:?}, the last ended at {next}"));
        }
        next = r.end;
        expect.extend((r.start..r.end).map(|id| (id, 1)));
    }
    if rows != expect {
        return Err(format!("keyed state {rows:?}, the sink says {expect:?}"));
    }
    Ok(())
}

#[test]
fn sim_sink_each_committed_batch_is_visible_once_after_a_crash_at_every_step() {
    let report = CrashHarness::new("sink-6")
        .seeds(2)
        .recovery_crash_every(0)
        .run(
            |storage: Arc<dyn Storage>, rec: &Recorder<Ev>| {
                let Ok(ctx) = open(storage) else { return };
                let sink = Model {
                    outside: Arc::new(Mutex::new(Outside::default())),
                    log: Some(rec),
                };
                let Ok(mut eo) = ExactlyOnce::open(&ctx, "q", sink) else {
                    return;
                };
                let Ok(mut offsets) = OffsetLog::open(&ctx) else {
                    return;
                };
                for i in 1..=BATCHES {
                    if !run_batch(&ctx, &mut offsets, &mut eo, i * 1_000, i * 3) {
                        return;
                    }
                    rec.record(Ev::Done(i * 1_000));
                }
            },
            check,
        );
    println!("{report}");
    report.assert_passed();
}
