//! The demo's worker: a small micro-batch word-count engine built on
//! streamwal, the process the demo kills.
//!
//! A receiver thread reads records from stdin (the parent is the source),
//! stores each block with `store_block` (receiver log, then journal), and
//! only then acknowledges it with an `ack` line. The main thread recovers the
//! context with `get_or_create`, reruns the batches it owes, then runs a
//! batch every second: open the batch's state, allocate, read, count words,
//! add them to the running counts (keyed state, operator `counts`), write
//! the batch's output file atomically, put the same file into the
//! transactional sink's open transaction, commit through `ExactlyOnce`
//! (pre-commit at the sink, journal it, commit state then tracker, commit
//! at the sink), clean up, checkpoint.
//!
//! Lines on stdout (each printed only after what it reports is durable):
//! - `open MICROS BATCHES fresh|recovered`: the context is open; recovery took
//!   MICROS µs and hands back BATCHES batches to run;
//! - `replay T REASON`: a batch owed after a crash is about to run;
//! - `ready`: every owed batch ran; the receiver starts;
//! - `ack RANGES`: the records with these ids are durable (`3-9,12`);
//! - `start T`, then `batch T N`: batch T began; its output (N records) is
//!   written and committed;
//! - `drained`: stdin ended and every record received is in a committed batch.

use super::data::{BatchOutput, INTERVAL_MS, parse_record, ranges};
use super::txn::FileTxnSink;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use streamwal::checkpoint::CheckpointOptions;
use streamwal::recovery::{ContextOptions, RunReason, StreamingContext};
use streamwal::sink::ExactlyOnce;
use streamwal::tracker::BlockTracker;
use streamwal::{StateOptions, Wal, WalOptions};

/// Most records one receiver block holds.
const BLOCK_RECORDS_MAX: usize = 64;

/// The engine's transformation graph, as the checkpoints keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Graph {
    /// What the engine computes.
    operators: Vec<String>,
}

impl Graph {
    fn word_count() -> Graph {
        Graph {
            operators: vec!["flat_map(split)".into(), "count_by_value".into()],
        }
    }
}

/// The demo's directories inside `dir`: checkpoints (with the journal),
/// receiver log, sink output.
pub fn layout(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("checkpoints"),
        dir.join("receiver"),
        dir.join("out"),
    )
}

fn options() -> ContextOptions {
    ContextOptions {
        batch_interval_ms: INTERVAL_MS,
        // Small segments, so cleanup really deletes some.
        receiver_log: WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        },
        journal: WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        },
        checkpoints: CheckpointOptions { keep: 3 },
        downtime: Default::default(),
        // Snapshots often, so the demo's kills land in them too.
        state: StateOptions {
            snapshot_every_batches: 3,
            ..StateOptions::default()
        },
    }
}

/// Wall-clock milliseconds: the engine's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Print one protocol line and flush it; an error means the parent is gone.
fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to the demo: {e}"))
}

fn lib(what: &str) -> impl Fn(streamwal::Error) -> String + '_ {
    move |e| format!("{what}: {}", crate::describe(&e))
}

/// Run the worker in `dir` (logs and checkpoints at `store` if given) until
/// stdin ends and everything is drained.
pub fn run_worker(dir: &Path, store: Option<&str>) -> Result<(), String> {
    let (_, _, out_dir) = layout(dir);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut ctx = open_context(dir, store)?;
    let sink = FileTxnSink::open(dir).map_err(|e| format!("cannot open the sink: {e}"))?;
    let mut eo = ExactlyOnce::open(&ctx, SINK_QUERY, sink).map_err(lib("sink recovery"))?;
    let recovered = ctx.recovered.clone();
    say(&format!(
        "open {} {} {}",
        ctx.report.duration.as_micros(),
        ctx.report.batches_to_run,
        if recovered.is_some() {
            "recovered"
        } else {
            "fresh"
        }
    ))?;
    for b in recovered.iter().flat_map(|r| &r.batches) {
        let reason = match b.reason {
            RunReason::PendingAtCheckpoint => "pending",
            RunReason::AllocatedNotCommitted => "interrupted",
            RunReason::Downtime => "downtime",
        };
        say(&format!("replay {} {reason}", b.batch_time))?;
        run_batch(&mut ctx, &mut eo, &out_dir, b.batch_time)?;
    }
    let (state, _) = ctx.tracker.snapshot().map_err(lib("tracker"))?;
    let mut next = if state.last_allocated_time > 0 {
        state.last_allocated_time + INTERVAL_MS
    } else {
        (now_ms() / INTERVAL_MS + 1) * INTERVAL_MS
    };
    say("ready")?;

    let eof = Arc::new(AtomicBool::new(false));
    {
        let (log, tracker, eof) = (ctx.receiver_log.clone(), ctx.tracker.clone(), eof.clone());
        std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                if let Err(e) = receive(&log, &tracker, &eof) {
                    eprintln!("demo worker: {e}");
                    std::process::exit(2);
                }
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?;
    }
    loop {
        let now = now_ms();
        if now < next {
            std::thread::sleep(Duration::from_millis(next - now));
            continue;
        }
        // Read before the allocation: once set, every block is added.
        let draining = eof.load(Ordering::SeqCst);
        say(&format!("start {next}"))?;
        run_batch(&mut ctx, &mut eo, &out_dir, next)?;
        next += INTERVAL_MS;
        if draining {
            return say("drained");
        }
    }
}

/// The query the transactional sink writes for.
const SINK_QUERY: &str = "wordcount";

/// The operator holding the running word counts.
pub const COUNTS: &str = "counts";

/// Open the context as the worker does (the layout in `dir`, or `store`).
fn open_context(dir: &Path, store: Option<&str>) -> Result<StreamingContext<Graph>, String> {
    let (ckpt_dir, rx_dir, _) = layout(dir);
    let opened = match store {
        None => streamwal::StreamingContext::builder(&ckpt_dir)
            .receiver_log(&rx_dir)
            .options(options())
            .now_ms(now_ms())
            .get_or_create(Graph::word_count),
        #[cfg(feature = "object-store")]
        Some(url) => streamwal::Location::parse(url).and_then(|loc| {
            streamwal::StreamingContext::builder(loc)
                .options(options())
                .now_ms(now_ms())
                .get_or_create(Graph::word_count)
        }),
        #[cfg(not(feature = "object-store"))]
        Some(_) => {
            return Err("this streamwal was built without object storage; \
                        build it with `--features object-store` for --store"
                .into());
        }
    };
    opened.map_err(lib("recovery failed"))
}

/// The running counts as a restarted engine would find them: the context
/// recovered as the README says, the `counts` operator read as of the last
/// committed batch. Run after the last worker exited (it holds the locks).
pub fn running_counts(dir: &Path, store: Option<&str>) -> Result<BTreeMap<String, u64>, String> {
    let ctx = open_context(dir, store)?;
    let counts = ctx
        .state::<String, u64>(COUNTS)
        .map_err(lib("running counts"))?;
    Ok(counts
        .iter()
        .map_err(lib("running counts"))?
        .into_iter()
        .collect())
}

/// Run the batch at `t` (idempotent: a rerun gives the same output, and
/// the running counts take its words once, when it commits).
fn run_batch(
    ctx: &mut StreamingContext<Graph>,
    eo: &mut ExactlyOnce<FileTxnSink>,
    out_dir: &Path,
    t: u64,
) -> Result<(), String> {
    ctx.begin_batch(t)
        .map_err(lib("opening the batch's state"))?;
    let blocks = ctx
        .tracker
        .allocate_blocks_to_batch(t)
        .map_err(lib("allocation"))?;
    let data = ctx.read_batch(&blocks).map_err(lib("reading a batch"))?;
    let mut records = Vec::new();
    for payload in data.values().flatten() {
        let text =
            std::str::from_utf8(payload).map_err(|_| format!("batch {t}: a block is not UTF-8"))?;
        for line in text.lines() {
            records.push(parse_record(line).ok_or_else(|| format!("batch {t}: bad record"))?);
        }
    }
    let output = BatchOutput::count(t, records);
    let running = ctx
        .state::<String, u64>(COUNTS)
        .map_err(lib("running counts"))?;
    for (word, n) in &output.counts {
        let before = running.get(word).map_err(lib("running counts"))?;
        running
            .put(word.clone(), before.unwrap_or(0) + n)
            .map_err(lib("running counts"))?;
    }
    output
        .write_atomically(out_dir)
        .map_err(|e| format!("cannot write the output of batch {t}: {e}"))?;
    eo.sink().begin(t, output.render());
    eo.commit_batch(ctx, t).map_err(lib("commit"))?;
    // Every batch before `t` is committed: forget them and free their blocks.
    ctx.tracker.cleanup(t).map_err(lib("cleanup"))?;
    ctx.cleanup_covered().map_err(lib("cleanup_covered"))?;
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: t,
        pending_batches: Vec::new(),
        source_offsets: BTreeMap::new(),
    })
    .map_err(lib("checkpoint"))?;
    say(&format!("batch {t} {}", output.ids.len()))
}

/// The receiver: records from stdin, one block per burst (a `.` line) or per
/// [`BLOCK_RECORDS_MAX`] records; each block durable (log, then journal)
/// before its `ack`. Sets `eof` once stdin ended and the last block is added.
fn receive(log: &Wal, tracker: &BlockTracker, eof: &AtomicBool) -> Result<(), String> {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let mut block = String::new();
    let mut ids = Vec::new();
    loop {
        line.clear();
        let n = stdin
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the source: {e}"))?;
        // A line without its newline was cut short: not a record.
        let ended = n == 0 || !line.ends_with('\n');
        if !ended {
            let l = line.trim_end_matches('\n');
            if l != "." {
                let (id, _) = parse_record(l).ok_or("bad record from the source")?;
                ids.push(id);
                block.push_str(l);
                block.push('\n');
            }
            if l != "." && ids.len() < BLOCK_RECORDS_MAX {
                continue;
            }
        }
        if !ids.is_empty() {
            tracker
                .store_block(log, 0, block.as_bytes(), ids.len() as u64, now_ms())
                .map_err(lib("store_block"))?;
            // Only now may the source be acknowledged.
            say(&format!("ack {}", ranges(&ids)))?;
            ids.clear();
            block.clear();
        }
        if ended {
            eof.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
}
