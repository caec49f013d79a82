//! Exactly-once output into PostgreSQL from a replayable source: the input
//! file (one record ID per line) is read in batches of up to
//! `--batch-lines` lines, each batch's byte range journaled in the offsets
//! log before it is read (`streamwal::sources`); each record's occurrences
//! are counted in keyed state, and a row `(id, count)` per record goes into
//! PostgreSQL in a prepared transaction committed through
//! `streamwal::sink::ExactlyOnce` (the sink: `tests/it/pg/sink.rs`).
//!
//! ```sh
//! eval "$(.ci/pg-server target/pg.dir)"      # or any server with max_prepared_transactions > 0
//! seq 1 100000 > /tmp/ids.txt
//! cargo run --example pg_sink -- --url "$STREAMWAL_PG_URL" --dir /tmp/pg-ctx --input /tmp/ids.txt
//! ```
//!
//! Kill it with `kill -9` while it runs and run the same command again: it
//! resolves the transaction the dead run left (commits it if its batch
//! committed, else aborts it and runs the batch again over the same range),
//! and goes on. At the end, `SELECT count(*), count(DISTINCT id), max(n)
//! FROM pg_sink_out WHERE query = 'example'` is `100000, 100000, 1`. It
//! prints `batch T: N records` for each committed batch and `done` at the
//! end of the input.

use clap::Parser;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::StreamingContext;
use streamwal::sink::ExactlyOnce;
use streamwal::sources::{OffsetLog, batches_to_run};

// The tests compile this file in beside their own copy of the sink.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../tests/it/pg/sink.rs"]
mod pg;

/// The table the rows go to.
pub const TABLE: &str = "pg_sink_out";

#[derive(Parser, Debug)]
struct Args {
    /// libpq connection string of the server.
    #[arg(long)]
    url: String,
    /// The context's directory.
    #[arg(long)]
    dir: PathBuf,
    /// The input: one record ID (an integer) per line.
    #[arg(long)]
    input: PathBuf,
    /// The query name (rows and transactions are tagged with it).
    #[arg(long, default_value = "example")]
    query: String,
    /// Most lines per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_lines: usize,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The byte offset after up to `lines` whole lines from `start`.
fn end_after(input: &Path, start: u64, lines: usize) -> AnyResult<u64> {
    let mut f = std::fs::File::open(input)?;
    f.seek(SeekFrom::Start(start))?;
    let mut r = BufReader::new(f);
    let (mut end, mut buf) = (start, Vec::new());
    for _ in 0..lines {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break; // the end, or a line still being written
        }
        end += n as u64;
    }
    Ok(end)
}

fn run_batch(
    ctx: &StreamingContext<()>,
    offsets: &mut OffsetLog,
    eo: &mut ExactlyOnce<pg::PgSink>,
    args: &Args,
    t: u64,
) -> AnyResult<usize> {
    let name = args.input.display().to_string();
    ctx.begin_batch(t)?;
    let end = end_after(&args.input, offsets.next_start(&name), args.batch_lines)?;
    let r = offsets.plan(t, &BTreeMap::from([(name.clone(), end)]))?[&name];
    ctx.tracker.allocate_blocks_to_batch(t)?;
    let mut f = std::fs::File::open(&args.input)?;
    f.seek(SeekFrom::Start(r.start))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, r.end - r.start), &mut text)?;
    let seen = ctx.state::<u64, u64>("seen")?;
    eo.sink().begin(t)?;
    let mut records = 0;
    for line in text.lines() {
        let id: u64 = line.trim().parse()?;
        let n = seen.get(&id)?.unwrap_or(0) + 1;
        seen.put(id, n)?;
        eo.sink().write(id, n)?;
        records += 1;
    }
    eo.commit_batch(ctx, t)?;
    Ok(records)
}

fn run(args: &Args) -> AnyResult<()> {
    let ctx = StreamingContext::builder(&args.dir)
        .batch_interval_ms(1_000)
        .now_ms(1) // batches are numbered, not timed: no downtime batches
        .get_or_create(|| ())?;
    let sink = pg::PgSink::connect(&args.url, &args.query, TABLE)?;
    let mut eo = ExactlyOnce::open(&ctx, &args.query, sink)?;
    let r = eo.recovery();
    if !r.committed.is_empty() || !r.aborted.is_empty() {
        println!(
            "resolved: committed {:?}, aborted {:?}",
            r.committed, r.aborted
        );
    }
    let mut offsets = OffsetLog::open(&ctx)?;
    for t in batches_to_run(&ctx, &offsets)? {
        let n = run_batch(&ctx, &mut offsets, &mut eo, args, t)?;
        println!("batch {t}: {n} records (run again)");
    }
    let (state, _) = ctx.tracker.snapshot()?;
    let mut t = state.last_allocated_time.max(1_000) + 1_000;
    loop {
        let n = run_batch(&ctx, &mut offsets, &mut eo, args, t)?;
        println!("batch {t}: {n} records");
        if n == 0 {
            println!("done");
            return Ok(());
        }
        t += 1_000;
    }
}

/// `main` with its arguments and its exit code, for the tests.
pub fn real_main(argv: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return 2;
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pg_sink: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            1
        }
    }
}

fn main() -> ExitCode {
    ExitCode::from(real_main(std::env::args_os()))
}
