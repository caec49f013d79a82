//! The seed's NetworkWordCount in Rust: read lines from a TCP server, cut
//! them into one-second micro-batches, and print each batch's word counts.
//!
//! Start a source, then the example:
//!
//! ```sh
//! nc -lk 9999                                   # terminal 1: type lines here
//! cargo run --example network_word_count -- localhost:9999
//! ```
//!
//! **With a write-ahead log.** `--checkpoint DIR` makes the receiver
//! reliable: every block of lines (those received in ~200 ms) is stored in
//! the receiver log and added to the block tracker before more input is
//! read; each batch is allocated (journaled), printed, committed and
//! checkpointed. Kill it with `kill -9` and start it again with the same
//! command: it recovers, first reruns the batches it owed (marked
//! `(recovered)`: blocks received but not yet counted, and batches cut off
//! mid-way), then goes on. With `--ack` it also writes `ack N` back to the
//! source once N lines in all are durable, as a reliable receiver does; a
//! source that replays everything after its last ack loses nothing.
//!
//! ```sh
//! cargo run --example network_word_count -- localhost:9999 --checkpoint /tmp/nwc
//! ```
//!
//! **Running counts.** With `--checkpoint`, the example also keeps the
//! running word counts since the start in keyed state (operator
//! `running_counts`, see `streamwal::state`) and prints their total after
//! each batch (`running: N words in K keys`); they survive `kill -9`
//! exactly: a batch's words are added when it commits, once.
//!
//! **A replayable source: a crash loses nothing.** `--file PATH` tails a
//! file instead (append lines to it with `echo to be or not >> words.txt`);
//! the byte offset read so far is committed in keyed state together with
//! each batch's counts (and kept in the checkpoint's source offsets too),
//! so after `kill -9` a restart goes on from the last committed offset:
//! every line is counted, and counted once. Each batch shows the byte range
//! it covers. `--no-follow` stops at the end of the file instead of waiting
//! for more.
//!
//! ```sh
//! cargo run --example network_word_count -- --file words.txt --checkpoint /tmp/nwc-file
//! ```
//!
//! When a TCP source closes the connection, the example counts what it
//! received and exits.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use streamwal::WalOptions;
use streamwal::recovery::{ContextOptions, StreamingContext};

/// Counts the words of each one-second batch of lines from HOST:PORT or a
/// tailed file.
#[derive(Parser, Debug)]
#[command(name = "network_word_count")]
struct Args {
    /// The TCP server to read lines from, as HOST:PORT.
    #[arg(
        value_name = "HOST:PORT",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    addr: Option<String>,
    /// Tail this file instead (a replayable source: its offset is kept in
    /// the checkpoint).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Make it crash-proof: checkpoints, journal and receiver log go here.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// With --checkpoint: after each block is durable, write `ack N` (N:
    /// lines stored in all) back to the source, as a reliable receiver
    /// acknowledges its source.
    #[arg(long, requires = "checkpoint", conflicts_with = "file")]
    ack: bool,
    /// With --file: exit at the end of the file instead of waiting for more.
    #[arg(long, requires = "file")]
    no_follow: bool,
    /// Batch interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    batch_ms: u64,
    /// How long the receiver gathers lines into one block, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    block_ms: u64,
}

/// The "graph" of this job, kept in every checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    source: String,
}

/// Key in the checkpoint's source offsets (file mode).
const FILE_OFFSET_KEY: &str = "file_offset";

type Res<T> = Result<T, String>;

/// An error and its sources, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() -> ExitCode {
    ExitCode::from(real_main(std::env::args_os()))
}

/// The whole program on the given command line (program name first);
/// returns the exit code. The integration tests run it in a child process.
pub(crate) fn real_main(argv: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("network_word_count: error: {e}");
            1
        }
    }
}

fn run(args: &Args) -> Res<()> {
    if args.batch_ms == 0 || args.block_ms == 0 {
        return Err("--batch-ms and --block-ms must be at least 1".into());
    }
    match (&args.addr, &args.file) {
        (Some(addr), None) => run_socket(args, addr),
        (None, Some(path)) => run_file(args, path),
        _ => Err("give HOST:PORT or --file PATH".into()),
    }
}

/// Count words of `text` (split on whitespace) into `counts`.
fn count_words(text: &str, counts: &mut BTreeMap<String, u64>) {
    for w in text.split_whitespace() {
        *counts.entry(w.to_string()).or_default() += 1;
    }
}

/// Print a batch like Spark's `print()`.
fn print_batch(t: u64, note: &str, counts: &BTreeMap<String, u64>) {
    let mut out = format!(
        "-------------------------------------------\nTime: {t} ms{note}\n\
         -------------------------------------------\n"
    );
    for (w, c) in counts {
        out.push_str(&format!("({w},{c})\n"));
    }
    println!("{out}");
}

/// The next batch time after `last`, aligned to the interval, and sleep
/// until then.
fn wait_for_batch(last: u64, interval: u64) -> u64 {
    let now = now_ms();
    let t = ((now / interval + 1) * interval).max(last + interval);
    std::thread::sleep(Duration::from_millis(t.saturating_sub(now)));
    t
}

fn context_options(interval: u64) -> ContextOptions {
    ContextOptions {
        receiver_log: WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        },
        journal: WalOptions {
            segment_bytes: 256 << 10,
            max_record_bytes: 16 << 20,
            ..WalOptions::default()
        },
        ..ContextOptions::new(interval)
    }
}

fn open_context(dir: &std::path::Path, interval: u64, source: &str) -> Res<StreamingContext<Job>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ctx = streamwal::StreamingContext::builder(dir)
        .receiver_log(dir.join("receiver"))
        .options(context_options(interval))
        .now_ms(now_ms())
        .get_or_create(|| Job {
            source: source.to_string(),
        })
        .map_err(|e| format!("opening {}: {}", dir.display(), describe(&e)))?;
    if ctx.graph.source != source {
        return Err(format!(
            "{} holds the state of a job reading {}, not {source}",
            dir.display(),
            ctx.graph.source
        ));
    }
    Ok(ctx)
}

// ------------------------------------------------------------- TCP source

/// Where received blocks go until a batch takes them.
enum Store {
    /// No checkpoint: lines wait in memory (lost on a crash).
    Memory(Mutex<Vec<String>>),
    /// The receiver log and tracker of a context.
    Durable {
        log: Arc<streamwal::Wal>,
        tracker: Arc<streamwal::tracker::BlockTracker>,
    },
}

impl Store {
    /// Keep a block; returns once it is durable (with a checkpoint).
    fn add(&self, lines: Vec<String>) -> Res<()> {
        match self {
            Store::Memory(m) => {
                m.lock().map_err(|_| "poisoned")?.extend(lines);
                Ok(())
            }
            Store::Durable { log, tracker } => {
                let mut payload = Vec::new();
                for l in &lines {
                    payload.extend_from_slice(l.as_bytes());
                    payload.push(b'\n');
                }
                tracker
                    .store_block(log, 0, &payload, lines.len() as u64, now_ms())
                    .map(|_| ())
                    .map_err(|e| format!("store_block: {}", describe(&e)))
            }
        }
    }
}

/// Reads lines from the socket, cuts them into blocks of `block_ms`, and
/// stores each block before reading on.
fn receive(stream: TcpStream, store: &Store, block_ms: u64, ack: bool) -> Res<()> {
    let mut acks = if ack {
        Some(
            stream
                .try_clone()
                .map_err(|e| format!("cannot clone the socket: {e}"))?,
        )
    } else {
        None
    };
    let mut stored = 0u64;
    let (tx, rx) = mpsc::sync_channel::<String>(10_000);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("network_word_count: warning: reading the socket: {e}");
                    break;
                }
            }
        }
    });
    let mut lines = Vec::new();
    let mut deadline = Instant::now() + Duration::from_millis(block_ms);
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (flush, closed) = match rx.recv_timeout(timeout) {
            Ok(l) => {
                lines.push(l);
                (lines.len() >= 10_000, false)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => (true, false),
            Err(mpsc::RecvTimeoutError::Disconnected) => (true, true),
        };
        if flush {
            if !lines.is_empty() {
                stored += lines.len() as u64;
                store.add(std::mem::take(&mut lines))?;
                // Durable: only now is the source acknowledged.
                if let Some(a) = &mut acks
                    && a.write_all(format!("ack {stored}\n").as_bytes()).is_err()
                {
                    acks = None; // the source is gone; what it sent is kept
                }
            }
            deadline = Instant::now() + Duration::from_millis(block_ms);
        }
        if closed {
            return Ok(());
        }
    }
}

/// The operator holding the running word counts (keyed state).
const RUNNING: &str = "running_counts";
/// The operator holding the file source's offset, committed with the counts.
const OFFSETS: &str = "source_offsets";

/// Add a batch's counts to the running counts of the open batch; print the
/// running total (a line the batch parsers skip: not `(word,count)`).
fn add_to_running(ctx: &StreamingContext<Job>, counts: &BTreeMap<String, u64>) -> Res<()> {
    let err = |e: streamwal::Error| format!("running counts: {}", describe(&e));
    let running = ctx.state::<String, u64>(RUNNING).map_err(err)?;
    for (w, n) in counts {
        let before = running.get(w).map_err(err)?.unwrap_or(0);
        running.put(w.clone(), before + n).map_err(err)?;
    }
    let all = running.iter().map_err(err)?;
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    println!("running: {total} words in {} keys", all.len());
    Ok(())
}

/// Count one batch of the durable store: open its state, allocate
/// (idempotent), read, print, add to the running counts, commit (state,
/// then tracker).
fn durable_batch(ctx: &StreamingContext<Job>, t: u64, note: &str) -> Res<()> {
    ctx.begin_batch(t)
        .map_err(|e| format!("opening batch {t}: {}", describe(&e)))?;
    let blocks = ctx
        .tracker
        .allocate_blocks_to_batch(t)
        .map_err(|e| format!("allocating batch {t}: {}", describe(&e)))?;
    let data = ctx
        .read_batch(&blocks)
        .map_err(|e| format!("reading batch {t}: {}", describe(&e)))?;
    let mut counts = BTreeMap::new();
    for payload in data.values().flatten() {
        count_words(&String::from_utf8_lossy(payload), &mut counts);
    }
    print_batch(t, note, &counts);
    add_to_running(ctx, &counts)?;
    ctx.commit_batch(t)
        .map_err(|e| format!("committing batch {t}: {}", describe(&e)))
}

fn run_socket(args: &Args, addr: &str) -> Res<()> {
    let mut ctx = match &args.checkpoint {
        // The source may move (a new port): the job is "a TCP source".
        Some(dir) => Some(open_context(dir, args.batch_ms, "tcp")?),
        None => None,
    };
    let interval = ctx.as_ref().map_or(args.batch_ms, |c| c.batch_interval_ms);
    let mut last_t = 0;
    // First the batches owed from before a crash.
    if let Some(c) = &mut ctx
        && let Some(rec) = c.recovered.clone()
    {
        let (state, _) = c
            .tracker
            .snapshot()
            .map_err(|e| format!("tracker: {}", describe(&e)))?;
        last_t = state
            .last_allocated_time
            .max(rec.checkpoint_time.unwrap_or(0));
        eprintln!(
            "network_word_count: recovered in {:?}: {} batches to rerun",
            c.report.duration,
            rec.batches.len()
        );
        let mut times: Vec<u64> = rec.batches.iter().map(|b| b.batch_time).collect();
        // Blocks stored but never allocated are owed too: one more batch, at
        // a time already past, takes them now.
        if times.is_empty() && rec.unallocated.values().any(|l| !l.is_empty()) {
            times.push((now_ms() / interval * interval).max(last_t + interval));
        }
        for &t in &times {
            durable_batch(c, t, " (recovered)")?;
            last_t = last_t.max(t);
        }
        if !times.is_empty() {
            c.checkpoint(streamwal::CheckpointAt {
                batch_time: last_t,
                pending_batches: Vec::new(),
                source_offsets: BTreeMap::new(),
            })
            .map_err(|e| format!("checkpoint: {}", describe(&e)))?;
        }
    }
    let stream = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let store = Arc::new(match &ctx {
        Some(c) => Store::Durable {
            log: c.receiver_log.clone(),
            tracker: c.tracker.clone(),
        },
        None => Store::Memory(Mutex::new(Vec::new())),
    });
    let finished = Arc::new(AtomicBool::new(false));
    {
        let (store, finished) = (store.clone(), finished.clone());
        let (block_ms, ack) = (args.block_ms, args.ack);
        std::thread::spawn(move || match receive(stream, &store, block_ms, ack) {
            Ok(()) => finished.store(true, Ordering::SeqCst),
            Err(e) => {
                eprintln!("network_word_count: error: {e}");
                std::process::exit(1);
            }
        });
    }
    let mut cleaned_to = 0;
    loop {
        let t = wait_for_batch(last_t, interval);
        let done = finished.load(Ordering::SeqCst);
        match (&mut ctx, &*store) {
            (Some(c), _) => {
                durable_batch(c, t, "")?;
                c.checkpoint(streamwal::CheckpointAt {
                    batch_time: t,
                    pending_batches: Vec::new(),
                    source_offsets: BTreeMap::new(),
                })
                .map_err(|e| format!("checkpoint: {}", describe(&e)))?;
                if last_t > cleaned_to {
                    c.tracker
                        .cleanup(last_t)
                        .and_then(|()| c.cleanup_covered())
                        .map_err(|e| format!("cleanup: {}", describe(&e)))?;
                    cleaned_to = last_t;
                }
            }
            (None, Store::Memory(m)) => {
                let lines = std::mem::take(&mut *m.lock().map_err(|_| "poisoned")?);
                let mut counts = BTreeMap::new();
                for l in &lines {
                    count_words(l, &mut counts);
                }
                print_batch(t, "", &counts);
            }
            (None, Store::Durable { .. }) => unreachable!("a durable store has a context"),
        }
        last_t = t;
        if done {
            eprintln!("network_word_count: the source closed the connection");
            return Ok(());
        }
    }
}

// ------------------------------------------------------------ file source

fn run_file(args: &Args, path: &std::path::Path) -> Res<()> {
    let source = format!("file:{}", path.display());
    let mut ctx = match &args.checkpoint {
        Some(dir) => Some(open_context(dir, args.batch_ms, &source)?),
        None => None,
    };
    let interval = ctx.as_ref().map_or(args.batch_ms, |c| c.batch_interval_ms);
    let mut offset: u64 = 0;
    let mut last_t = 0;
    if let Some(rec) = ctx.as_ref().and_then(|c| c.recovered.as_ref()) {
        if let Some(v) = rec.source_offsets.get(FILE_OFFSET_KEY) {
            offset = v
                .parse()
                .map_err(|_| format!("the checkpoint's file offset {v:?} is not a number"))?;
        }
        last_t = rec.checkpoint_time.unwrap_or(0);
    }
    if let Some(c) = &ctx {
        // The offset committed with the last batch's counts wins over the
        // checkpoint's: a crash between the commit and the checkpoint must
        // not read those bytes again.
        let committed = c
            .state::<String, u64>(OFFSETS)
            .and_then(|o| o.get(&FILE_OFFSET_KEY.to_string()))
            .map_err(|e| format!("source offsets: {}", describe(&e)))?;
        if let Some(at) = committed {
            offset = at;
        }
        last_t = last_t.max(c.state.version().unwrap_or(0));
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    println!("reading {} from byte {offset}", path.display());
    loop {
        let t = wait_for_batch(last_t, interval);
        // Every complete line from `offset` on.
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
            .len();
        if len < offset {
            return Err(format!(
                "{} shrank below the checkpointed offset {offset}; it is not the same file",
                path.display()
            ));
        }
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| (&mut file).take(len - offset).read_to_end(&mut buf))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // A last line without its newline waits for the rest, unless the
        // example stops at the end of the file.
        let complete = if args.no_follow {
            buf.len()
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let mut counts = BTreeMap::new();
        count_words(&String::from_utf8_lossy(&buf[..complete]), &mut counts);
        let end = offset + complete as u64;
        print_batch(t, &format!(" (bytes {offset}..{end})"), &counts);
        if let Some(c) = &mut ctx {
            // The batch's counts and the offset after its bytes commit
            // together: exactly once, across any crash.
            let err = |e: streamwal::Error| format!("batch {t}: {}", describe(&e));
            c.begin_batch(t).map_err(err)?;
            add_to_running(c, &counts)?;
            c.state::<String, u64>(OFFSETS)
                .and_then(|o| o.put(FILE_OFFSET_KEY.to_string(), end))
                .map_err(err)?;
            c.commit_batch(t).map_err(err)?;
            let offsets = BTreeMap::from([(FILE_OFFSET_KEY.to_string(), end.to_string())]);
            c.checkpoint(streamwal::CheckpointAt {
                batch_time: t,
                pending_batches: Vec::new(),
                source_offsets: offsets,
            })
            .map_err(|e| format!("checkpoint: {}", describe(&e)))?;
            println!("checkpointed {t} at byte {end}");
        }
        offset = end;
        last_t = t;
        if args.no_follow && offset == len {
            return Ok(());
        }
    }
}
