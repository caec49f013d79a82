//! Real processes, real SIGKILL, whole driver recovery: a child engine recovers with `get_or_create`, reruns its recovered batches, then stores blocks the test sends (receiver log, then `add_block`, then an ack), allocates, commits, checkpoints and cleans up; the test kills it at random moments and proves, after every kill, that each acknowledged block is recoverable byte for byte exactly once (batch to run, committed batch, or unallocated), that no batch's block list ever changes, and that nothing is invented.
//!
//! Each round: the test recovers the directories itself (same options, a
//! deterministic `now_ms`), checks everything, closes them, and starts the
//! next child, which recovers the same batches (checked too) and goes on.
//!
//! Rounds: `STREAMWAL_RECOVERY_KILLS` (default 40). Replay a run with the
//! printed `STREAMWAL_RECOVERY_SEED`. Soak:
//! `STREAMWAL_RECOVERY_KILLS=500 cargo test --release --test recovery_crash`.

use crate::common::rng::{Rng, seed_from_env};
use crate::common::test_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use streamwal::WalOptions;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointWriter};
use streamwal::recovery::{ContextOptions, StreamingContext};
use streamwal::tracker::{BatchBlocks, BlockInfo};

const CKPT_ENV: &str = "STREAMWAL_RECOVERY_CHILD_CKPT";
const RX_ENV: &str = "STREAMWAL_RECOVERY_CHILD_RX";
const SEED_ENV: &str = "STREAMWAL_RECOVERY_CHILD_SEED";
const NOW_ENV: &str = "STREAMWAL_RECOVERY_CHILD_NOW";

const INTERVAL_MS: u64 = 1_000;
const STREAMS: u64 = 3;

/// The engine's graph; it must come back from every checkpoint unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Graph {
    name: String,
    streams: Vec<u32>,
    window_ms: u64,
}

fn graph() -> Graph {
    Graph {
        name: "kill-nine-engine".into(),
        streams: (0..STREAMS as u32).collect(),
        window_ms: 3 * INTERVAL_MS,
    }
}

fn options() -> ContextOptions {
    ContextOptions {
        batch_interval_ms: INTERVAL_MS,
        // Small segments so kills land in rollovers, and cleanup deletes.
        receiver_log: WalOptions {
            segment_bytes: 64 << 10,
            ..WalOptions::default()
        },
        journal: WalOptions {
            segment_bytes: 16 << 10,
            preallocate: false,
            ..WalOptions::default()
        },
        checkpoints: CheckpointOptions { keep: 4 },
        state: Default::default(),
        downtime: Default::default(),
    }
}

/// The bytes of block `id`: its id first, so the test recognises any block
/// it sent, and anything else is invented.
fn payload(id: u64) -> Vec<u8> {
    let len = 1 + (id.wrapping_mul(2_654_435_761) % 3_000) as usize;
    let mut p = format!("blk{id}:").into_bytes();
    p.extend((0..len).map(|i| (i as u64 * 131 + id * 7 + 3) as u8));
    p
}

fn stream_of(id: u64) -> u32 {
    (id.wrapping_mul(40_503) % STREAMS) as u32
}

fn parse_id(p: &[u8]) -> Option<u64> {
    let colon = p.iter().position(|&b| b == b':')?;
    std::str::from_utf8(p[..colon].strip_prefix(b"blk")?)
        .ok()?
        .parse()
        .ok()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A batch's blocks as printed: `stream:lsn,...` in stream order, each
/// stream's blocks in allocation order; `-` if none.
fn block_list(blocks: &BatchBlocks) -> String {
    let items: Vec<String> = blocks
        .iter()
        .flat_map(|(s, list)| list.iter().map(move |b| format!("{s}:{}", b.handle.lsn())))
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn parse_list(s: &str) -> Vec<(u32, u64)> {
    if s == "-" {
        return Vec::new();
    }
    s.split(',')
        .map(|item| {
            let (stream, lsn) = item.split_once(':').expect("stream:lsn");
            (stream.parse().expect("stream"), lsn.parse().expect("lsn"))
        })
        .collect()
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} unset"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

// ---------------------------------------------------------------- the child

/// The engine, run only when the parent re-executes this test binary.
///
/// Lines it prints (each only after what it reports is durable):
/// `open`; `run T LIST|?` per recovered batch (`?`: not yet allocated);
/// `alloc T LIST`; `commit T`; `cleaning B` (printed *before* the cleanup,
/// so the parent always knows what may be gone); `ack ID LSN`.
#[test]
#[ignore = "run by kill_nine_recovery_loses_nothing as a child process"]
fn recovery_child_main() {
    let Ok(ckpt_dir) = std::env::var(CKPT_ENV) else {
        return;
    };
    let rx_dir = std::env::var(RX_ENV).expect("receiver dir");
    let mut rng = Rng::new(env_u64(SEED_ENV));
    let now = env_u64(NOW_ENV);
    let mut ctx = streamwal::StreamingContext::builder(Path::new(&ckpt_dir))
        .receiver_log(Path::new(&rx_dir))
        .options(options())
        .now_ms(now)
        .get_or_create(graph)
        .expect("recover");
    assert_eq!(ctx.graph, graph());
    println!("open");
    let mut engine = Engine::new(&ctx, &mut rng);

    // First, every recovered batch: allocate (idempotent), report, commit.
    let recovered = ctx.recovered.clone();
    if let Some(rec) = &recovered {
        for b in &rec.batches {
            let shown = b.blocks.as_ref().map_or("?".into(), block_list);
            println!("run {} {shown}", b.batch_time);
            let got = ctx
                .tracker
                .allocate_blocks_to_batch(b.batch_time)
                .expect("allocate a recovered batch");
            if let Some(blocks) = &b.blocks {
                assert_eq!(&got, blocks, "re-allocation changed batch {}", b.batch_time);
            }
            assert!(
                ctx.tracker.batch(b.batch_time).expect("batch").is_some(),
                "recovered batch {} could not be allocated",
                b.batch_time
            );
            // Run it: read every block back.
            ctx.read_batch(&got).expect("read a recovered batch");
            println!("alloc {} {}", b.batch_time, block_list(&got));
            ctx.tracker.commit_batch(b.batch_time).expect("commit");
            println!("commit {}", b.batch_time);
        }
    }
    let (state, _) = ctx.tracker.snapshot().expect("snapshot");
    let ckpt_time = recovered.and_then(|r| r.checkpoint_time).unwrap_or(0);
    engine.next_time = state.last_allocated_time.max(ckpt_time) + INTERVAL_MS;

    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut f = line.split(' ');
        assert_eq!(f.next(), Some("block"), "bad input line {line}");
        let id: u64 = f.next().expect("id").parse().expect("id");
        let stream: u32 = f.next().expect("stream").parse().expect("stream");
        let bytes = unhex(f.next().expect("payload"));
        let handle = ctx.receiver_log.append(&bytes).expect("append");
        ctx.tracker
            .add_block(BlockInfo {
                stream_id: stream,
                handle,
                records: id,
                receive_time: engine.next_time,
            })
            .expect("add_block");
        // Only now may the source be acknowledged.
        println!("ack {id} {}", handle.lsn());
        engine.last_id = id;
        engine.since_batch += 1;
        if engine.since_batch >= engine.blocks_per_batch {
            engine.since_batch = 0;
            engine.batch(&mut ctx, &mut rng);
        }
    }
}

struct Engine {
    writer: CheckpointWriter,
    blocks_per_batch: u64,
    since_batch: u64,
    next_time: u64,
    last_id: u64,
    /// Allocated, not yet committed, oldest first.
    uncommitted: VecDeque<u64>,
    /// Journal LSN of the newest checkpoint handed to the writer, not yet
    /// known durable.
    submitted: Option<u64>,
    /// Journal LSNs of checkpoints known durable, oldest first.
    durable: Vec<u64>,
}

impl Engine {
    fn new(ctx: &StreamingContext<Graph>, rng: &mut Rng) -> Engine {
        Engine {
            writer: CheckpointWriter::new(ctx.checkpoints.clone()).expect("writer"),
            blocks_per_batch: 1 + rng.below(12),
            since_batch: 0,
            next_time: 0,
            last_id: 0,
            uncommitted: VecDeque::new(),
            submitted: None,
            durable: Vec::new(),
        }
    }

    fn commit(&mut self, ctx: &StreamingContext<Graph>, t: u64) {
        ctx.tracker.commit_batch(t).expect("commit");
        self.uncommitted.retain(|&u| u != t);
        println!("commit {t}");
    }

    /// One batch on the synthetic clock.
    fn batch(&mut self, ctx: &mut StreamingContext<Graph>, rng: &mut Rng) {
        let t = self.next_time;
        self.next_time += INTERVAL_MS;
        let blocks = ctx.tracker.allocate_blocks_to_batch(t).expect("allocate");
        println!("alloc {t} {}", block_list(&blocks));
        self.uncommitted.push_back(t);
        // Commit now, or leave it (and older ones) for a while.
        if rng.below(2) == 0 {
            self.commit(ctx, t);
        }
        while let Some(&oldest) = self.uncommitted.front() {
            if self.uncommitted.len() > 3 || rng.below(3) == 0 {
                self.commit(ctx, oldest);
            } else {
                break;
            }
        }
        match rng.below(6) {
            0 | 1 => self.checkpoint_in_background(ctx, t),
            2 => {
                let (_, lsn) = ctx.tracker.snapshot().expect("snapshot");
                let offsets = self.offsets();
                ctx.checkpoint(streamwal::CheckpointAt {
                    batch_time: t,
                    pending_batches: self.pending(),
                    source_offsets: offsets,
                })
                .expect("synchronous checkpoint");
                self.durable.push(lsn);
            }
            _ => {}
        }
        if rng.below(4) == 0 {
            self.flush_and_retire(ctx);
        }
        if rng.below(4) == 0 {
            // Everything before the oldest uncommitted batch is done.
            let before = self
                .uncommitted
                .front()
                .copied()
                .unwrap_or(t.saturating_sub(rng.below(3) * INTERVAL_MS));
            println!("cleaning {before}");
            ctx.tracker.cleanup(before).expect("cleanup");
            ctx.tracker
                .cleanup_receiver_log(&ctx.receiver_log)
                .expect("cleanup receiver log");
        }
    }

    fn pending(&self) -> Vec<u64> {
        self.uncommitted.iter().copied().collect()
    }

    fn offsets(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("last_id".to_string(), self.last_id.to_string())])
    }

    fn checkpoint_in_background(&mut self, ctx: &StreamingContext<Graph>, t: u64) {
        let (tracker, journal_lsn) = ctx.tracker.snapshot().expect("snapshot");
        let ckpt = Checkpoint {
            batch_time: t,
            batch_interval_ms: ctx.batch_interval_ms,
            graph: &ctx.graph,
            graph_version: ctx.graph_version,
            pending_batches: self.pending(),
            journal_lsn,
            tracker,
            source_offsets: self.offsets(),
        };
        self.writer.submit(&ckpt).expect("submit");
        self.submitted = Some(journal_lsn);
    }

    /// Wait for the background checkpoints, then retire the journal up to
    /// the checkpoint before the newest durable one.
    fn flush_and_retire(&mut self, ctx: &StreamingContext<Graph>) {
        self.writer.flush().expect("checkpoint flush");
        if let Some(lsn) = self.submitted.take() {
            self.durable.push(lsn);
            self.durable.sort_unstable();
        }
        if self.durable.len() >= 2 {
            let covered = self.durable[self.durable.len() - 2];
            ctx.tracker.retire_journal(covered).expect("retire journal");
        }
    }
}

// --------------------------------------------------------------- the parent

/// What the parent learnt from every child so far.
#[derive(Debug, Default)]
struct Seen {
    /// id -> receiver LSN of every acknowledged block.
    acked: BTreeMap<u64, u64>,
    /// Ids sent so far are `0..sent`.
    sent: u64,
    /// Batch time -> the block list the child printed for it.
    allocs: BTreeMap<u64, Vec<(u32, u64)>>,
    /// Receiver LSN -> the batch a printed allocation gave it to.
    batch_of_lsn: BTreeMap<u64, u64>,
    /// Batches the child said it committed.
    commits: BTreeSet<u64>,
    /// The highest cleanup mark the child announced.
    cleaning: u64,
    /// `run` lines of the current child.
    runs: Vec<(u64, String)>,
}

impl Seen {
    fn line(&mut self, line: &str) {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "ack" => {
                let (id, lsn) = rest.split_once(' ').expect("ack ID LSN");
                let (id, lsn): (u64, u64) = (id.parse().unwrap(), lsn.parse().unwrap());
                assert!(id < self.sent, "ack of block {id}, never sent");
                assert!(
                    self.acked.insert(id, lsn).is_none(),
                    "block {id} acknowledged twice"
                );
            }
            "alloc" => {
                let (t, list) = rest.split_once(' ').expect("alloc T LIST");
                let t: u64 = t.parse().unwrap();
                let list = parse_list(list);
                if let Some(before) = self.allocs.get(&t) {
                    assert_eq!(
                        before, &list,
                        "batch {t} was allocated other blocks than before"
                    );
                }
                for &(_, lsn) in &list {
                    if let Some(other) = self.batch_of_lsn.insert(lsn, t) {
                        assert_eq!(other, t, "receiver LSN {lsn} allocated to two batches");
                    }
                }
                self.allocs.insert(t, list);
            }
            "run" => {
                let (t, list) = rest.split_once(' ').expect("run T LIST");
                self.runs.push((t.parse().unwrap(), list.to_string()));
            }
            "commit" => {
                self.commits.insert(rest.parse().unwrap());
            }
            "cleaning" => {
                self.cleaning = self.cleaning.max(rest.parse().unwrap());
            }
            "open" => {}
            _ => {} // the test harness's own lines
        }
    }
}

/// Where a recovered block was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Batch(u64),
    Unallocated,
}

/// Recover the directories as a restarted driver would and check every
/// promise against what the children printed. Returns the batches a child
/// recovering with the same `now` must run: (time, printed list or `?`).
fn check_recovery(
    ckpt_dir: &Path,
    rx_dir: &Path,
    now: u64,
    seen: &Seen,
    round: u64,
    seed: u64,
    exercised: &mut Exercised,
) -> Vec<(u64, String)> {
    let at = format!("round {round} (STREAMWAL_RECOVERY_SEED={seed})");
    let ctx = streamwal::StreamingContext::builder(ckpt_dir)
        .receiver_log(rx_dir)
        .options(options())
        .now_ms(now)
        .get_or_create(graph)
        .unwrap_or_else(|e| panic!("{at}: recovery failed: {e}"));
    assert_eq!(ctx.graph, graph(), "{at}: graph");
    assert_eq!(ctx.batch_interval_ms, INTERVAL_MS, "{at}");
    let (state, _) = ctx.tracker.snapshot().unwrap();
    exercised.from_checkpoint += u64::from(ctx.report.checkpoint_used.is_some());
    exercised.journal_first_lsn = ctx.tracker.journal().first_lsn().unwrap_or(0);
    exercised.receiver_first_lsn = ctx.receiver_log.first_lsn().unwrap_or(0);
    let Some(rec) = &ctx.recovered else {
        assert!(
            seen.acked.is_empty() && seen.allocs.is_empty(),
            "{at}: acknowledged blocks, yet recovery says fresh"
        );
        return Vec::new();
    };
    assert!(
        state.cleaned_before <= seen.cleaning,
        "{at}: cleanup mark {} never announced (max {})",
        state.cleaned_before,
        seen.cleaning
    );
    if let Some(last) = rec.source_offsets.get("last_id") {
        let last: u64 = last.parse().unwrap();
        assert!(
            last < seen.sent,
            "{at}: checkpoint offset {last} never sent"
        );
    }

    let mut found: Vec<(Place, BlockInfo)> = Vec::new();
    let mut expect_runs = Vec::new();
    let mut previous = None;
    for b in &rec.batches {
        let t = b.batch_time;
        assert!(previous < Some(t), "{at}: batches to run out of order");
        previous = Some(t);
        assert!(
            !rec.committed.contains(&t),
            "{at}: committed batch {t} to run"
        );
        assert!(t >= state.cleaned_before, "{at}: cleaned batch {t} to run");
        match &b.blocks {
            Some(blocks) => {
                assert_eq!(state.allocated.get(&t), Some(blocks), "{at}: batch {t}");
                let read = ctx
                    .read_batch(blocks)
                    .unwrap_or_else(|e| panic!("{at}: batch {t} unreadable: {e}"));
                for (stream, list) in blocks {
                    for (b, bytes) in list.iter().zip(&read[stream]) {
                        assert_eq!(bytes, &ctx.read_block(b).unwrap(), "{at}");
                    }
                }
                found.extend(
                    blocks
                        .values()
                        .flatten()
                        .map(|x| (Place::Batch(t), x.clone())),
                );
                expect_runs.push((t, block_list(blocks)));
            }
            None => {
                assert!(
                    !state.allocated.contains_key(&t) && t > state.last_allocated_time && t <= now,
                    "{at}: batch {t} to run without blocks is not a downtime batch"
                );
                expect_runs.push((t, "?".to_string()));
            }
        }
    }
    for &t in &rec.committed {
        let blocks = ctx
            .tracker
            .batch(t)
            .unwrap()
            .unwrap_or_else(|| panic!("{at}: committed batch {t} has no allocation"));
        found.extend(
            blocks
                .values()
                .flatten()
                .map(|x| (Place::Batch(t), x.clone())),
        );
    }
    for t in state.allocated.keys() {
        let to_run = rec
            .batches
            .iter()
            .any(|b| b.batch_time == *t && b.blocks.is_some());
        assert!(
            to_run || rec.committed.contains(t),
            "{at}: allocated batch {t} neither to run nor committed"
        );
    }
    assert_eq!(rec.unallocated, state.unallocated, "{at}");
    found.extend(
        rec.unallocated
            .values()
            .flatten()
            .map(|x| (Place::Unallocated, x.clone())),
    );

    // Every block found: sent by us, intact, once, where it was allocated.
    let mut ids = BTreeMap::new();
    for (place, b) in &found {
        let lsn = b.handle.lsn();
        let bytes = ctx
            .read_block(b)
            .unwrap_or_else(|e| panic!("{at}: block at receiver LSN {lsn} unreadable: {e}"));
        let id = parse_id(&bytes)
            .unwrap_or_else(|| panic!("{at}: receiver LSN {lsn} holds an invented block"));
        assert!(id < seen.sent, "{at}: block {id} was never sent");
        assert_eq!(bytes, payload(id), "{at}: block {id} damaged");
        assert_eq!(b.stream_id, stream_of(id), "{at}: block {id} stream");
        assert_eq!(b.records, id, "{at}: block {id} metadata");
        if let Some(&acked_lsn) = seen.acked.get(&id) {
            assert_eq!(lsn, acked_lsn, "{at}: block {id} moved in the receiver log");
        }
        if let Some(&t) = seen.batch_of_lsn.get(&lsn) {
            assert_eq!(*place, Place::Batch(t), "{at}: block {id} left batch {t}");
        }
        if let Some(other) = ids.insert(id, *place) {
            panic!("{at}: block {id} recovered twice ({other:?} and {place:?})");
        }
    }
    // Every acknowledged block is there, unless its batch was cleaned up.
    for (&id, &lsn) in &seen.acked {
        if ids.contains_key(&id) {
            continue;
        }
        match seen.batch_of_lsn.get(&lsn) {
            Some(&t) if t < state.cleaned_before => {}
            other => panic!(
                "{at}: acknowledged block {id} (receiver LSN {lsn}, batch {other:?}) lost; \
                 cleaned before {}",
                state.cleaned_before
            ),
        }
    }
    // Every printed allocation is unchanged, or cleaned up.
    for (&t, list) in &seen.allocs {
        let now_list = state.allocated.get(&t).map(|b| parse_list(&block_list(b)));
        if t >= state.cleaned_before {
            assert_eq!(now_list.as_ref(), Some(list), "{at}: batch {t} changed");
        } else {
            assert_eq!(now_list, None, "{at}: cleaned batch {t} came back");
        }
    }
    for &t in &seen.commits {
        assert!(
            t < state.cleaned_before || rec.committed.contains(&t),
            "{at}: committed batch {t} forgotten"
        );
    }
    expect_runs
}

/// What the rounds exercised; a run that never took a path fails.
#[derive(Debug, Default)]
struct Exercised {
    /// Recoveries that started from a checkpoint file.
    from_checkpoint: u64,
    /// Oldest journal LSN kept at the last recovery (> 1: retired).
    journal_first_lsn: u64,
    /// Oldest receiver-log LSN kept at the last recovery (> 1: cleaned).
    receiver_first_lsn: u64,
    /// Recovered batches the children reran.
    reruns: usize,
}

struct Round {
    stdin: ChildStdin,
    sent: u64,
}

/// Send blocks `first..first + count` to the child; stop early if it died.
fn send_blocks(mut stdin: ChildStdin, first: u64, count: u64) -> Round {
    let mut sent = first;
    for id in first..first + count {
        let line = format!("block {id} {} {}\n", stream_of(id), hex(&payload(id)));
        if stdin.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent = id + 1;
    }
    Round { stdin, sent }
}

fn child_stderr(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

#[test]
fn kill_nine_recovery_loses_nothing() {
    let rounds: u64 = std::env::var("STREAMWAL_RECOVERY_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed = seed_from_env("STREAMWAL_RECOVERY_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let ckpt_dir = tmp.path().join("checkpoints");
    let rx_dir = tmp.path().join("receiver");
    let exe = std::env::current_exe().unwrap();
    let mut seen = Seen::default();
    let mut expect_runs: Vec<(u64, String)> = Vec::new();
    let mut now = 0;
    let mut exercised = Exercised::default();

    for round in 0..rounds {
        let child_seed = rng.next() | 1;
        let stderr_path: PathBuf = tmp.path().join(format!("child-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                &test_name(module_path!(), "recovery_child_main"),
                "--ignored",
                "--nocapture",
            ])
            .env(CKPT_ENV, &ckpt_dir)
            .env(RX_ENV, &rx_dir)
            .env(SEED_ENV, child_seed.to_string())
            .env(NOW_ENV, now.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        // Kill right after the child opened (1 in 8), or after a random
        // number of acknowledgements.
        let kill_at_open = rng.below(8) == 0;
        let kill_after = rng.below(150);
        let to_send = kill_after + 1 + rng.below(100);
        let first = seen.sent;
        seen.sent += to_send;
        let stdin = child.stdin.take().unwrap();
        let sender = std::thread::spawn(move || send_blocks(stdin, first, to_send));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        seen.runs.clear();

        let mut acks = 0;
        let mut opened = false;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if stdout.read_until(b'\n', &mut buf).unwrap() == 0 || buf.last() != Some(&b'\n') {
                break; // the child ended (a panic: reported below)
            }
            let line = String::from_utf8(buf[..buf.len() - 1].to_vec()).unwrap();
            seen.line(&line);
            opened |= line == "open";
            acks += u64::from(line.starts_with("ack "));
            if opened && (kill_at_open || acks >= kill_after) {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round} (STREAMWAL_RECOVERY_SEED={seed}): the child ended by itself ({status}):\n{}",
            child_stderr(&stderr_path)
        );
        // Whatever the child printed before it died is as good as what was
        // read before the kill: each line was printed after the fact.
        loop {
            buf.clear();
            if stdout.read_until(b'\n', &mut buf).unwrap() == 0 || buf.last() != Some(&b'\n') {
                break; // a line cut by the kill is not a report
            }
            let line = String::from_utf8(buf[..buf.len() - 1].to_vec()).unwrap();
            seen.line(&line);
        }
        let sent = sender.join().unwrap();
        drop(sent.stdin);
        assert!(sent.sent <= seen.sent);

        // The child recovered exactly what the previous check said it would.
        assert!(
            seen.runs.len() <= expect_runs.len() && seen.runs[..] == expect_runs[..seen.runs.len()],
            "round {round} (STREAMWAL_RECOVERY_SEED={seed}): the child recovered other batches \
             than the test did:\nchild: {:?}\ntest:  {expect_runs:?}",
            seen.runs
        );
        exercised.reruns += seen.runs.len();

        // The next "now": the newest batch the test saw, plus 0-2 intervals
        // of downtime.
        now = seen.allocs.keys().next_back().copied().unwrap_or(0) + rng.below(3) * INTERVAL_MS;
        expect_runs = check_recovery(&ckpt_dir, &rx_dir, now, &seen, round, seed, &mut exercised);
    }
    println!(
        "{rounds} kills; {} blocks acknowledged, {} batches allocated, {} committed, cleaned \
         before {}; {exercised:?}",
        seen.acked.len(),
        seen.allocs.len(),
        seen.commits.len(),
        seen.cleaning,
    );
    assert!(!seen.acked.is_empty(), "no block was ever acknowledged");
    if rounds >= 20 {
        // With this many rounds each path is taken unless something is off.
        assert!(exercised.from_checkpoint > 0, "{exercised:?}");
        assert!(exercised.reruns > 0, "{exercised:?}");
        assert!(exercised.journal_first_lsn > 1, "{exercised:?}");
        assert!(exercised.receiver_first_lsn > 1, "{exercised:?}");
    }
}
