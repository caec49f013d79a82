//! The seed's bucket problem, crash-proof: records stream in (one per line),
//! are cut into one-second micro-batches, and each batch's records are put
//! into buckets so that no bucket holds a duplicate and all buckets together
//! hold exactly the batch's records: the k-th occurrence of a record within
//! the batch goes to bucket k. Each bucket goes to a sink: a directory sink
//! (one file `batch-<T>-bucket-<K>.txt` per batch time and bucket, written
//! atomically: temp file, fsync, rename, directory fsync; the stand-in for an
//! HDFS output location) and/or an HTTP sink that POSTs each bucket to
//! `<URL>/batch/<T>/bucket/<K>` with an `Idempotency-Key: <T>-<K>` header.
//!
//! Every block of input lines is stored in the receiver write-ahead log and
//! added to the block tracker before more input is read; each batch is
//! allocated (journaled), written to the sinks, committed and checkpointed.
//! The input is a replayable source: after a crash, restart the example with
//! the same input from its beginning and it skips the lines it had already
//! stored (their count is in the checkpoint and the stored blocks), reruns
//! the batches it owed with exactly the blocks they had, and goes on. Sinks
//! are idempotent per (batch time, bucket), so the output ends with every
//! input record exactly once: no duplicate, no gap.
//!
//! Run it (the output lands in `/tmp/dedup/out`):
//!
//! ```sh
//! seq 1 200000 | awk '{print $1 % 1000}' > /tmp/records.txt
//! cargo run --release --example dedup_buckets -- \
//!     --checkpoint /tmp/dedup/state --out /tmp/dedup/out --input /tmp/records.txt
//! ```
//!
//! Kill it with `kill -9` (or Ctrl-C) while it runs, run the same command
//! again, and compare: `cat /tmp/dedup/out/*.txt | sort | uniq -c` matches
//! `sort /tmp/records.txt | uniq -c`. Without `--input` it reads standard
//! input; `--http http://127.0.0.1:8080/buckets` adds the HTTP sink. The
//! example ends when the input ends and every stored line is in a committed
//! batch. It prints `stored N` each time N input lines in total are durable,
//! and `batch T: R records in B buckets` for each committed batch.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use streamwal::WalOptions;
use streamwal::recovery::{ContextOptions, StreamingContext};
use streamwal::tracker::BatchBlocks;

/// Puts each micro-batch's records into duplicate-free buckets and writes
/// every bucket to an idempotent sink, surviving `kill -9`.
#[derive(Parser, Debug)]
#[command(name = "dedup_buckets")]
struct Args {
    /// State directory: checkpoints, the tracker's journal and (in
    /// `receiver/`) the receiver write-ahead log.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Directory sink: one file per (batch time, bucket).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// HTTP sink: POST each bucket to URL/batch/T/bucket/K (http:// only).
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// Read records from this file instead of standard input.
    #[arg(long, value_name = "PATH")]
    input: Option<PathBuf>,
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
    name: String,
}

/// Key in the checkpoint's source offsets: input lines stored so far.
const OFFSET_KEY: &str = "input_lines";
/// Most lines in one block.
const BLOCK_LINES_MAX: usize = 10_000;

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
            eprintln!("dedup_buckets: error: {e}");
            1
        }
    }
}

/// A block's payload: `FIRST COUNT\n` then each line followed by `\n`, where
/// FIRST is the input line number of its first line.
fn encode_block(first: u64, lines: &[Vec<u8>]) -> Vec<u8> {
    let mut p = format!("{first} {}\n", lines.len()).into_bytes();
    for l in lines {
        p.extend_from_slice(l);
        p.push(b'\n');
    }
    p
}

fn decode_block(p: &[u8]) -> Res<(u64, Vec<Vec<u8>>)> {
    let bad = || "a stored block is not in this example's format".to_string();
    let nl = p.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let header = std::str::from_utf8(&p[..nl]).map_err(|_| bad())?;
    let (first, count) = header.split_once(' ').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let count: usize = count.parse().map_err(|_| bad())?;
    let body = &p[nl + 1..];
    let mut lines: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    // The body ends with '\n', so the split yields one empty piece at the end.
    if lines.pop().is_none_or(|last| !last.is_empty()) || lines.len() != count {
        return Err(bad());
    }
    Ok((first, lines))
}

/// The k-th occurrence of a record within the batch goes to bucket k (the
/// first bucket is index 0 here, printed as bucket 1).
fn bucketize(records: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut buckets: Vec<Vec<Vec<u8>>> = Vec::new();
    for r in records {
        let k = seen.entry(r.clone()).or_insert(0);
        if *k == buckets.len() {
            buckets.push(Vec::new());
        }
        buckets[*k].push(r);
        *k += 1;
    }
    buckets
}

fn bucket_body(records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        body.extend_from_slice(r);
        body.push(b'\n');
    }
    body
}

// ------------------------------------------------------------------ sinks

/// Writes one file per (batch time, bucket), atomically.
struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    fn open(dir: &Path) -> Res<DirSink> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create output directory {}: {e}", dir.display()))?;
        // Temp files of a crashed run are garbage; their final files are
        // written again by the batch's rerun.
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list output directory {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(DirSink { dir: dir.into() })
    }

    fn write(&self, batch_time: u64, bucket: usize, body: &[u8]) -> Res<()> {
        let name = format!("batch-{batch_time}-bucket-{bucket}.txt");
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let err = |what: &str, e: std::io::Error| format!("directory sink: {what} {name}: {e}");
        let mut f = std::fs::File::create(&tmp).map_err(|e| err("cannot create", e))?;
        f.write_all(body).map_err(|e| err("cannot write", e))?;
        f.sync_all().map_err(|e| err("cannot fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| err("cannot rename", e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("cannot fsync the directory of", e))
    }
}

/// POSTs each bucket with a minimal HTTP/1.1 client.
struct HttpSink {
    /// `host:port` to connect to.
    addr: String,
    /// Value of the Host header.
    host: String,
    /// Path prefix, without a trailing slash.
    prefix: String,
}

impl HttpSink {
    fn new(url: &str) -> Res<HttpSink> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--http {url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("--http {url}: no host"));
        }
        let addr = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpSink {
            addr,
            host: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn write(&self, batch_time: u64, bucket: usize, body: &[u8]) -> Res<()> {
        let mut last = String::new();
        for attempt in 0..5u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            match self.post(batch_time, bucket, body) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(format!("http sink: {last}"))
    }

    fn post(&self, batch_time: u64, bucket: usize, body: &[u8]) -> Res<()> {
        let path = format!("{}/batch/{batch_time}/bucket/{bucket}", self.prefix);
        let err = |e: std::io::Error| format!("POST {path} to {}: {e}", self.addr);
        let mut s = TcpStream::connect(&self.addr).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nIdempotency-Key: {batch_time}-{bucket}\r\n\
             Connection: close\r\n\r\n",
            self.host,
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(err)?;
        s.write_all(body).map_err(err)?;
        s.flush().map_err(err)?;
        let mut reader = BufReader::new(s.take(64 << 10));
        let mut status = String::new();
        reader.read_line(&mut status).map_err(err)?;
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("POST {path}: malformed response {:?}", status.trim_end()))?;
        if !(200..300).contains(&code) {
            return Err(format!(
                "POST {path}: server answered {}",
                status.trim_end()
            ));
        }
        // Drain the rest so the server sees a clean close.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        Ok(())
    }
}

struct Sinks {
    dir: Option<DirSink>,
    http: Option<HttpSink>,
}

impl Sinks {
    fn write(&self, batch_time: u64, buckets: &[Vec<Vec<u8>>]) -> Res<()> {
        for (i, records) in buckets.iter().enumerate() {
            let body = bucket_body(records);
            if let Some(d) = &self.dir {
                d.write(batch_time, i + 1, &body)?;
            }
            if let Some(h) = &self.http {
                h.write(batch_time, i + 1, &body)?;
            }
        }
        Ok(())
    }
}

// --------------------------------------------------------------- receiver

/// Reads the input, skipping the first `skip` lines, and hands lines over.
fn read_input(input: Option<PathBuf>, skip: u64, tx: mpsc::SyncSender<Vec<u8>>) -> Res<()> {
    let reader: Box<dyn BufRead> = match &input {
        Some(p) => Box::new(BufReader::new(
            std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let mut reader = reader;
    let mut n = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let got = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read the input: {e}"))?;
        if got == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        n += 1;
        if n <= skip {
            continue;
        }
        if tx.send(line.clone()).is_err() {
            break;
        }
    }
    if n < skip {
        eprintln!(
            "dedup_buckets: warning: the input has {n} lines, but {skip} were already stored; \
             is it the same input as before the crash?"
        );
    }
    Ok(())
}

/// Cuts lines into blocks, stores each durably (receiver log, then tracker),
/// and only then takes more input.
fn receive(
    rx: mpsc::Receiver<Vec<u8>>,
    ctx_log: Arc<streamwal::Wal>,
    tracker: Arc<streamwal::tracker::BlockTracker>,
    stored: Arc<AtomicU64>,
    block_ms: u64,
) -> Res<()> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut deadline = Instant::now() + Duration::from_millis(block_ms);
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (flush, closed) = match rx.recv_timeout(timeout) {
            Ok(l) => {
                lines.push(l);
                (lines.len() >= BLOCK_LINES_MAX, false)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => (true, false),
            Err(mpsc::RecvTimeoutError::Disconnected) => (true, true),
        };
        if flush {
            if !lines.is_empty() {
                let first = stored.load(Ordering::SeqCst);
                let payload = encode_block(first, &lines);
                tracker
                    .store_block(&ctx_log, 0, &payload, lines.len() as u64, now_ms())
                    .map_err(|e| format!("store_block: {}", describe(&e)))?;
                // Durable: the source may now move on.
                let end = first + lines.len() as u64;
                stored.store(end, Ordering::SeqCst);
                println!("stored {end}");
                lines.clear();
            }
            deadline = Instant::now() + Duration::from_millis(block_ms);
        }
        if closed {
            return Ok(());
        }
    }
}

// ------------------------------------------------------------------ batches

fn run_batch(ctx: &StreamingContext<Job>, sinks: &Sinks, batch_time: u64, rerun: bool) -> Res<u64> {
    let blocks: BatchBlocks = ctx
        .tracker
        .allocate_blocks_to_batch(batch_time)
        .map_err(|e| format!("allocating batch {batch_time}: {}", describe(&e)))?;
    let data = ctx
        .read_batch(&blocks)
        .map_err(|e| format!("reading batch {batch_time}: {}", describe(&e)))?;
    let mut records = Vec::new();
    let mut end = 0;
    for payload in data.values().flatten() {
        let (first, lines) = decode_block(payload)?;
        end = first + lines.len() as u64;
        records.extend(lines);
    }
    let count = records.len();
    let buckets = bucketize(records);
    sinks.write(batch_time, &buckets)?;
    ctx.tracker
        .commit_batch(batch_time)
        .map_err(|e| format!("committing batch {batch_time}: {}", describe(&e)))?;
    let note = if rerun { " (rerun)" } else { "" };
    println!(
        "batch {batch_time}: {count} records in {} buckets{note}",
        buckets.len()
    );
    Ok(end)
}

fn checkpoint(ctx: &mut StreamingContext<Job>, batch_time: u64, stored: u64) -> Res<()> {
    // `stored` was read before the tracker's snapshot is taken (or is the
    // end of an allocated block), so every line it counts is in a block the
    // checkpoint knows.
    let offsets = BTreeMap::from([(OFFSET_KEY.to_string(), stored.to_string())]);
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time,
        pending_batches: Vec::new(),
        source_offsets: offsets,
    })
    .map_err(|e| format!("checkpoint at {batch_time}: {}", describe(&e)))
}

/// Input lines already stored: the checkpoint's offset, or further if blocks
/// were added after it.
fn stored_lines(ctx: &StreamingContext<Job>) -> Res<u64> {
    let Some(rec) = &ctx.recovered else {
        return Ok(0);
    };
    let mut end = match rec.source_offsets.get(OFFSET_KEY) {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("the checkpoint's {OFFSET_KEY} offset {v:?} is not a number"))?,
        None => 0,
    };
    let (state, _) = ctx
        .tracker
        .snapshot()
        .map_err(|e| format!("tracker: {}", describe(&e)))?;
    let blocks = state
        .unallocated
        .values()
        .chain(state.allocated.values().flat_map(|b| b.values()))
        .flatten();
    for b in blocks {
        let payload = ctx
            .read_block(b)
            .map_err(|e| format!("reading a stored block: {}", describe(&e)))?;
        let (first, lines) = decode_block(&payload)?;
        end = end.max(first + lines.len() as u64);
    }
    Ok(end)
}

fn run(args: &Args) -> Res<()> {
    if args.batch_ms == 0 || args.block_ms == 0 {
        return Err("--batch-ms and --block-ms must be at least 1".into());
    }
    if args.out.is_none() && args.http.is_none() {
        return Err("give a sink: --out DIR and/or --http URL".into());
    }
    let sinks = Sinks {
        dir: args.out.as_deref().map(DirSink::open).transpose()?,
        http: args.http.as_deref().map(HttpSink::new).transpose()?,
    };
    let interval = args.batch_ms;
    let opts = ContextOptions {
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
    };
    std::fs::create_dir_all(&args.checkpoint).map_err(|e| {
        format!(
            "cannot create state directory {}: {e}",
            args.checkpoint.display()
        )
    })?;
    let receiver_dir = args.checkpoint.join("receiver");
    let mut ctx = streamwal::StreamingContext::builder(&args.checkpoint)
        .receiver_log(&receiver_dir)
        .options(opts)
        .now_ms(now_ms())
        .get_or_create(|| Job {
            name: "dedup_buckets".into(),
        })
        .map_err(|e| format!("opening {}: {}", args.checkpoint.display(), describe(&e)))?;
    let interval = ctx.batch_interval_ms;
    let resume = stored_lines(&ctx)?;
    let recovered = ctx.recovered.clone();
    match &recovered {
        None => println!("fresh start"),
        Some(r) => println!(
            "recovered in {:?}: checkpoint at {}, {} batches to rerun, input resumes after line {resume}",
            ctx.report.duration,
            r.checkpoint_time
                .map_or("none (journal only)".to_string(), |t| t.to_string()),
            r.batches.len()
        ),
    }

    // First, the batches owed from before the crash.
    let mut last_t = 0;
    if let Some(r) = &recovered {
        let (state, _) = ctx
            .tracker
            .snapshot()
            .map_err(|e| format!("tracker: {}", describe(&e)))?;
        last_t = state
            .last_allocated_time
            .max(r.checkpoint_time.unwrap_or(0));
        let mut times: Vec<u64> = r.batches.iter().map(|b| b.batch_time).collect();
        // Blocks stored but never allocated are owed too: one more batch, at
        // a time already past, takes them now.
        let owed = ctx
            .tracker
            .snapshot()
            .is_ok_and(|(s, _)| s.unallocated.values().any(|l| !l.is_empty()));
        if owed && times.is_empty() {
            let t = (now_ms() / interval * interval).max(last_t + interval);
            times.push(t);
        }
        for &t in &times {
            run_batch(&ctx, &sinks, t, true)?;
            last_t = last_t.max(t);
        }
        if !times.is_empty() {
            checkpoint(&mut ctx, last_t, resume)?;
        }
    }

    // Then the live stream.
    let stored = Arc::new(AtomicU64::new(resume));
    let finished = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(BLOCK_LINES_MAX);
    let input = args.input.clone();
    std::thread::spawn(move || {
        if let Err(e) = read_input(input, resume, tx) {
            eprintln!("dedup_buckets: error: {e}");
            std::process::exit(1);
        }
    });
    {
        let (log, tracker) = (ctx.receiver_log.clone(), ctx.tracker.clone());
        let (stored, finished) = (stored.clone(), finished.clone());
        let block_ms = args.block_ms;
        std::thread::spawn(move || match receive(rx, log, tracker, stored, block_ms) {
            Ok(()) => finished.store(true, Ordering::SeqCst),
            Err(e) => {
                eprintln!("dedup_buckets: error: {e}");
                std::process::exit(1);
            }
        });
    }
    let mut cleaned_to = 0;
    loop {
        let now = now_ms();
        let t = ((now / interval + 1) * interval).max(last_t + interval);
        std::thread::sleep(Duration::from_millis(t.saturating_sub(now)));
        // Read before allocating: once the receiver is finished, this batch
        // takes the last blocks.
        let done = finished.load(Ordering::SeqCst);
        let stored_now = stored.load(Ordering::SeqCst);
        let end = run_batch(&ctx, &sinks, t, false)?;
        checkpoint(&mut ctx, t, stored_now.max(end))?;
        // Forget batches the previous checkpoint already covers.
        if last_t > cleaned_to {
            ctx.tracker
                .cleanup(last_t)
                .and_then(|()| ctx.cleanup_covered())
                .map_err(|e| format!("cleanup: {}", describe(&e)))?;
            cleaned_to = last_t;
        }
        last_t = t;
        if done {
            println!("done: {} input lines stored", stored.load(Ordering::SeqCst));
            return Ok(());
        }
    }
}
