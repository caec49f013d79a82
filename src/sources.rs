//! Replayable sources without copying their data: each batch's offset range
//! per source is journaled before the batch runs (Structured Streaming's
//! offsets log), so that a batch run again after a crash reads exactly the
//! same input.
//!
//! A replayable source (files in a directory, a broker partition, a table
//! with an increasing key) is named by a string (`"kafka/orders/3"`) and
//! read by position: a batch reads `[start, end)`. [`OffsetLog::plan`]
//! journals the ranges of a batch durably and returns them; called again for
//! the same batch (a rerun), it returns the journaled ranges, whatever the
//! source now offers. Receiver-log sources and offset sources mix in one
//! batch: allocate the receiver blocks and plan the offsets, in either
//! order.
//!
//! Where it lives: `sources/` below the context, a [`Wal`] under
//! [`crate::SyncPolicy::Always`] with one record per planned batch.

use crate::codec;
use crate::error::{Error, Result};
use crate::recovery::StreamingContext;
use crate::wal::{Wal, WalOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the offsets log's directory below a context's location.
pub const SOURCES_DIR_NAME: &str = "sources";

pub use crate::limits::{SOURCE_NAME_BYTES_MAX, SOURCES_PER_BATCH_MAX};

/// The version of a planned batch's encoding (the first byte of a record).
const PLAN_FORMAT_VERSION: u8 = 1;

/// The positions `[start, end)` a batch reads from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The first position read.
    pub start: u64,
    /// One past the last position read (`start` if nothing).
    pub end: u64,
}

/// A batch's ranges, per source name.
pub type BatchRanges = BTreeMap<String, OffsetRange>;

#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    batch_time: u64,
    ranges: BatchRanges,
}

/// The offsets log of a context: which range of each source every batch
/// reads. `Send + Sync`; `plan` takes `&mut self` so that plans are made
/// one at a time.
#[derive(Debug)]
pub struct OffsetLog {
    log: Wal,
    planned: BTreeMap<u64, BatchRanges>,
    /// Per source, the end of its newest planned range.
    next: BTreeMap<String, u64>,
}

fn check_plan(plan: &Plan) -> Result<()> {
    if plan.ranges.len() > SOURCES_PER_BATCH_MAX {
        return Err(Error::TooLarge {
            size: plan.ranges.len() as u64,
            max: SOURCES_PER_BATCH_MAX as u64,
        });
    }
    for (name, r) in &plan.ranges {
        if name.is_empty() || name.len() > SOURCE_NAME_BYTES_MAX {
            return Err(Error::InvalidOptions(
                "a source name is 1 to SOURCE_NAME_BYTES_MAX bytes",
            ));
        }
        if r.end < r.start {
            return Err(Error::InvalidOptions(
                "an offset range ends before it starts",
            ));
        }
    }
    Ok(())
}

fn decode_plan(bytes: &[u8]) -> Result<Plan> {
    let bad = |why: String| Error::Decode {
        what: "offset plan",
        source: why.into(),
    };
    match bytes.split_first() {
        Some((&PLAN_FORMAT_VERSION, rest)) => {
            let plan: Plan = codec::decode(rest, "offset plan")?;
            check_plan(&plan).map_err(|e| bad(e.to_string()))?;
            Ok(plan)
        }
        Some((v, _)) => Err(bad(format!("unknown offset plan version {v}"))),
        None => Err(bad("empty offset plan".into())),
    }
}

impl OffsetLog {
    /// Open the offsets log below `ctx`'s location and replay it.
    ///
    /// # Errors
    /// The log's [`Wal::open`] errors; [`Error::Decode`] for a record that
    /// passes its checksum but is not a valid plan (never skipped).
    pub fn open<G>(ctx: &StreamingContext<G>) -> Result<OffsetLog> {
        let at = ctx.checkpoints.location().child(SOURCES_DIR_NAME)?;
        let log = Wal::open(
            at,
            WalOptions {
                segment_bytes: 4 << 20,
                max_record_bytes: crate::limits::OFFSETS_RECORD_BYTES_MAX,
                preallocate: false,
                prepare_ahead: false,
                ..WalOptions::default()
            },
        )?;
        let mut me = OffsetLog {
            log,
            planned: BTreeMap::new(),
            next: BTreeMap::new(),
        };
        let mut plans = Vec::new();
        for item in me.log.iter() {
            let (_, bytes) = item?;
            plans.push(decode_plan(&bytes)?);
        }
        for plan in plans {
            me.apply(plan);
        }
        Ok(me)
    }

    fn apply(&mut self, plan: Plan) {
        for (name, r) in &plan.ranges {
            let next = self.next.entry(name.clone()).or_default();
            *next = (*next).max(r.end);
        }
        self.planned.insert(plan.batch_time, plan.ranges);
    }

    /// Where source `name`'s next range starts: the end of its newest
    /// planned range (0 if it has none).
    pub fn next_start(&self, name: &str) -> u64 {
        self.next.get(name).copied().unwrap_or(0)
    }

    /// The ranges journaled for `batch_time`, if any.
    pub fn ranges(&self, batch_time: u64) -> Option<&BatchRanges> {
        self.planned.get(&batch_time)
    }

    /// The ranges batch `batch_time` reads. If the batch is planned already
    /// (a rerun), its journaled ranges, whatever `ends` says. Otherwise each
    /// source in `ends` reads from its [`OffsetLog::next_start`] to the end
    /// given, journaled durably before this returns; a source not in `ends`
    /// reads nothing this batch. Call it before the batch reads its input.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if an end is before its start, a source
    /// name is empty or over [`SOURCE_NAME_BYTES_MAX`] bytes, or
    /// `batch_time` is not after every planned batch; [`Error::TooLarge`]
    /// for more than [`SOURCES_PER_BATCH_MAX`] sources; the log's append
    /// errors (the batch is then not planned; after an I/O error, stop and
    /// recover).
    pub fn plan(&mut self, batch_time: u64, ends: &BTreeMap<String, u64>) -> Result<BatchRanges> {
        if let Some(r) = self.planned.get(&batch_time) {
            return Ok(r.clone());
        }
        if self
            .planned
            .keys()
            .next_back()
            .is_some_and(|&last| last > batch_time)
        {
            return Err(Error::InvalidOptions(
                "a new batch's offsets must come after every planned batch",
            ));
        }
        let ranges: BatchRanges = ends
            .iter()
            .map(|(name, &end)| {
                let start = self.next_start(name);
                (name.clone(), OffsetRange { start, end })
            })
            .collect();
        let plan = Plan { batch_time, ranges };
        check_plan(&plan)?;
        let mut bytes = vec![PLAN_FORMAT_VERSION];
        bytes.extend(codec::encode(&plan, "offset plan")?);
        self.log.append(&bytes)?;
        let ranges = plan.ranges.clone();
        self.apply(plan);
        Ok(ranges)
    }

    /// The planned batches `ctx` has not committed (nor cleaned up), in
    /// time order: each must run again with its journaled ranges. A batch
    /// planned but never allocated in the tracker is among them, though
    /// [`crate::recovery::Recovered::batches`] may not list it.
    ///
    /// # Errors
    /// The tracker's errors.
    pub fn owed<G>(&self, ctx: &StreamingContext<G>) -> Result<Vec<u64>> {
        let (state, _) = ctx.tracker.snapshot()?;
        Ok(self
            .planned
            .keys()
            .copied()
            .filter(|t| *t >= state.cleaned_before && !state.committed.contains(t))
            .collect())
    }
}

/// The batches a recovered engine with offset sources runs, in time order:
/// [`crate::recovery::Recovered::batches`] and [`OffsetLog::owed`], each
/// once.
///
/// # Errors
/// As [`OffsetLog::owed`].
pub fn batches_to_run<G>(ctx: &StreamingContext<G>, offsets: &OffsetLog) -> Result<Vec<u64>> {
    let mut all: std::collections::BTreeSet<u64> = offsets.owed(ctx)?.into_iter().collect();
    if let Some(r) = &ctx.recovered {
        all.extend(r.batches.iter().map(|b| b.batch_time));
    }
    Ok(all.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_plans_are_typed_errors() {
        assert!(matches!(decode_plan(&[]), Err(Error::Decode { .. })));
        assert!(matches!(decode_plan(&[7, 0]), Err(Error::Decode { .. })));
        assert!(matches!(
            decode_plan(&[1, 255, 255]),
            Err(Error::Decode { .. })
        ));
        let backwards = Plan {
            batch_time: 1,
            ranges: BTreeMap::from([("a".into(), OffsetRange { start: 5, end: 2 })]),
        };
        let mut bytes = vec![PLAN_FORMAT_VERSION];
        bytes.extend(codec::encode(&backwards, "t").unwrap());
        assert!(matches!(decode_plan(&bytes), Err(Error::Decode { .. })));
    }
}
