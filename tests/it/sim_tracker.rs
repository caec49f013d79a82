//! Proves the tracker promise on the crash simulator: for every I/O step of a workload that stores blocks in a receiver log, adds them to the tracker, allocates batches and commits them (single-threaded, and with concurrent receivers), a crash right after it (and a second crash during recovery) leaves every acknowledged block recoverable exactly once, every acknowledged allocation unchanged, and every acknowledged commit present.
//!
//! A whole driver (checkpoints every third batch, journal retirement, `get_or_create` recovery) is crashed at every step too.
//!
//! More seeds per crash point: `STREAMWAL_SIM_SEEDS=64 cargo test --release
//! --all-features --test sim_tracker`.
#![cfg(feature = "sim")]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use streamwal::recovery::{ContextOptions, RunReason};
use streamwal::sim::checkers::{
    self, TrackerEvent, add_block_recorded, allocate_recorded, commit_recorded,
};
use streamwal::sim::{CrashHarness, Recorder};
use streamwal::storage::Storage;
use streamwal::tracker::{BlockInfo, BlockTracker};
use streamwal::{Wal, WalOptions};

const RX: &str = "/sim/receiver";
const JOURNAL: &str = "/sim/journal";

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        max_batch_bytes: 4096,
        ..WalOptions::default()
    }
}

fn block_bytes(stream: u32, i: u64) -> Vec<u8> {
    format!("stream {stream} block {i} ")
        .repeat(1 + (i % 7) as usize)
        .into_bytes()
}

/// Store a block in the receiver log, then add it to the tracker.
fn receive(
    rx: &Wal,
    tracker: &BlockTracker,
    rec: &Recorder<TrackerEvent>,
    stream: u32,
    i: u64,
) -> bool {
    let Ok(handle) = rx.append_at(&block_bytes(stream, i), i) else {
        return false;
    };
    let block = BlockInfo {
        stream_id: stream,
        handle,
        records: i % 5 + 1,
        receive_time: i,
    };
    add_block_recorded(tracker, rec, block).is_ok()
}

#[test]
fn tracker_allocations_and_commits() {
    let report = CrashHarness::new("tracker").seeds(8).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<TrackerEvent>| {
            let Ok(rx) = Wal::open(streamwal::Location::dir_on(storage.clone(), RX), opts()) else {
                return;
            };
            let Ok(tracker) =
                BlockTracker::open(streamwal::Location::dir_on(storage, JOURNAL), None, opts())
            else {
                return;
            };
            let mut n = 0;
            for batch in 1..=15u64 {
                for _ in 0..3 {
                    n += 1;
                    if !receive(&rx, &tracker, rec, (n % 2) as u32, n) {
                        return;
                    }
                }
                if allocate_recorded(&tracker, rec, batch * 1_000).is_err() {
                    return;
                }
                if batch > 1 && commit_recorded(&tracker, rec, (batch - 1) * 1_000).is_err() {
                    return;
                }
            }
        },
        checkers::tracker_checker(JOURNAL, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    // The workload ran whole (an early failure would leave few I/O steps).
    assert!(report.steps >= 200, "{} steps", report.steps);
}

#[test]
fn tracker_concurrent_receivers() {
    // Receivers run on real threads; each crash state is a snapshot of the
    // one recorded run (see CrashHarness).
    let report = CrashHarness::new("tracker-concurrent").seeds(6).run(
        |storage: Arc<dyn Storage>, rec: &Recorder<TrackerEvent>| {
            let Ok(rx) = Wal::open(streamwal::Location::dir_on(storage.clone(), RX), opts()) else {
                return;
            };
            let Ok(tracker) =
                BlockTracker::open(streamwal::Location::dir_on(storage, JOURNAL), None, opts())
            else {
                return;
            };
            for batch in 1..=5u64 {
                std::thread::scope(|s| {
                    for stream in 0..3u32 {
                        let (rx, tracker) = (&rx, &tracker);
                        s.spawn(move || {
                            for i in 0..3 {
                                let id = batch * 100 + u64::from(stream) * 10 + i;
                                if !receive(rx, tracker, rec, stream, id) {
                                    return;
                                }
                            }
                        });
                    }
                });
                if allocate_recorded(&tracker, rec, batch * 1_000).is_err()
                    || commit_recorded(&tracker, rec, batch * 1_000).is_err()
                {
                    return;
                }
            }
        },
        checkers::tracker_checker(JOURNAL, opts()),
    );
    eprintln!("{report}");
    report.assert_passed();
    // The workload ran whole (an early failure would leave few I/O steps).
    assert!(report.steps >= 150, "{} steps", report.steps);
}

const CKPT: &str = "/sim/driver/checkpoints";
const DRIVER_RX: &str = "/sim/driver/receiver";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Graph {
    name: String,
}

fn context_options() -> ContextOptions {
    let mut o = ContextOptions::new(1_000);
    o.receiver_log = opts();
    o.journal = opts();
    o.checkpoints.keep = 2;
    o
}

/// The whole driver: receive, allocate, commit, checkpoint every third
/// batch (which retires journal segments), crash anywhere, recover with
/// `StreamingContext::builder` on the simulator. Every acknowledged block is recoverable
/// exactly once with its bytes, allocations never change, acknowledged
/// commits stay, and every allocated uncommitted batch is handed back to run.
#[test]
fn driver_recovery_with_checkpoints() {
    let report = CrashHarness::new("driver").run(
        |storage: Arc<dyn Storage>, rec: &Recorder<TrackerEvent>| {
            let Ok(ctx) = streamwal::StreamingContext::builder(streamwal::Location::dir_on(
                storage.clone(),
                CKPT,
            ))
            .receiver_log(streamwal::Location::dir_on(storage, DRIVER_RX))
            .options(context_options())
            .now_ms(0)
            .get_or_create(|| Graph { name: "g".into() }) else {
                return;
            };
            let mut n = 0;
            for batch in 1..=30u64 {
                let t = batch * 1_000;
                for _ in 0..3 {
                    n += 1;
                    if !receive(&ctx.receiver_log, &ctx.tracker, rec, (n % 2) as u32, n) {
                        return;
                    }
                }
                if allocate_recorded(&ctx.tracker, rec, t).is_err() {
                    return;
                }
                // Leave every fourth batch uncommitted: recovery must rerun it.
                if batch % 4 != 2 && commit_recorded(&ctx.tracker, rec, t).is_err() {
                    return;
                }
                if batch % 3 == 0
                    && ctx
                        .checkpoint(streamwal::CheckpointAt {
                            batch_time: t,
                            pending_batches: Vec::new(),
                            source_offsets: BTreeMap::new(),
                        })
                        .is_err()
                {
                    return;
                }
            }
            let removed = ctx.tracker.journal().stats().segments_removed;
            assert!(
                removed > 0,
                "the checkpoints retired journal segments: {:?} floor {:?}",
                ctx.tracker.journal().stats(),
                ctx.checkpoints.journal_floor()
            );
        },
        |storage: Arc<dyn Storage>, events: &[TrackerEvent]| {
            let ctx = streamwal::StreamingContext::builder(streamwal::Location::dir_on(
                storage.clone(),
                CKPT,
            ))
            .receiver_log(streamwal::Location::dir_on(storage, DRIVER_RX))
            .options(context_options())
            .now_ms(0)
            .get_or_create(|| Graph { name: "g".into() })
            .map_err(|e| format!("recovery failed: {e}"))?;
            let (state, _) = ctx.tracker.snapshot().map_err(|e| e.to_string())?;
            checkers::check_tracker_state(&state, events)?;
            for list in state
                .unallocated
                .values()
                .chain(state.allocated.values().flat_map(|b| b.values()))
            {
                for b in list {
                    let bytes = ctx
                        .read_block(b)
                        .map_err(|e| format!("block {:?} unreadable: {e}", b.handle))?;
                    if bytes != block_bytes(b.stream_id, b.receive_time) {
                        return Err(format!("block {:?} has other bytes", b.handle));
                    }
                }
            }
            let to_run: BTreeMap<u64, _> = ctx
                .recovered
                .iter()
                .flat_map(|r| r.batches.iter())
                .map(|b| (b.batch_time, b))
                .collect();
            for (t, blocks) in &state.allocated {
                let committed = state.committed.contains(t);
                match to_run.get(t) {
                    Some(_) if committed => {
                        return Err(format!("committed batch {t} handed back to run"));
                    }
                    Some(b) if b.blocks.as_ref() != Some(blocks) => {
                        return Err(format!("batch {t} handed back with other blocks"));
                    }
                    None if !committed => {
                        return Err(format!("uncommitted batch {t} not handed back"));
                    }
                    _ => {}
                }
            }
            if let Some(b) = to_run.values().find(|b| b.reason == RunReason::Downtime) {
                return Err(format!("downtime batch {} with now_ms 0", b.batch_time));
            }
            Ok(())
        },
    );
    eprintln!("{report}");
    report.assert_passed();
    // The workload ran whole (an early failure would leave few I/O steps).
    assert!(report.steps >= 400, "{} steps", report.steps);
}
