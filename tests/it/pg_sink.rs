//! Exactly-once output into a real PostgreSQL, proven with SIGKILL: a child
//! engine receives lines `r<ID>` on stdin (a receiver-log source),
//! acknowledges each once durable, and at each `.` runs a batch that also
//! reads a replayable source (a file the parent appends `f<ID>` lines to;
//! the batch's byte range is journaled in the offsets log before it is
//! read), counts every ID in keyed state and writes a row `(id, count)` per
//! line through [`ExactlyOnce`] (two-phase commit with `PREPARE
//! TRANSACTION`). The test kills it with SIGKILL when it
//! pauses at each named crash point (before the pre-commit, after the
//! pre-commit before it is journaled, after it is journaled before the
//! batch commits, after the batch commits before the sink commit, after
//! the sink commit before it is journaled, after the whole commit), at the
//! first, second or third time it gets there (recovery's own commits
//! included), and at random moments (`STREAMWAL_PG_KILLS`, default 8;
//! `STREAMWAL_PG_KILL_SEED` to replay a run); then checks by SQL that every
//! acknowledged line and every line of the source file has exactly one
//! row, with count 1 (the state applied once too), that no row comes from
//! a line never sent, and that no prepared transaction is left.

use crate::common::rng::{Rng, seed_from_env};
use crate::common::test_name;
use crate::pg::sink::PgSink;
use crate::pg::{PgServer, server};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use streamwal::sink::{ExactlyOnce, SinkError, TransactionalSink};
use streamwal::sources::{OffsetLog, batches_to_run};
use streamwal::tracker::BlockInfo;
use streamwal::{ContextOptions, StreamingContext, WalOptions};

const DIR_ENV: &str = "STREAMWAL_PG_KILL_DIR";
const URL_ENV: &str = "STREAMWAL_PG_KILL_URL";
const QUERY_ENV: &str = "STREAMWAL_PG_KILL_QUERY";
/// `<point>:<k>`: pause (print `paused <point>` and wait to be killed) the
/// `k`-th time (from 0) the child reaches `point`.
const PAUSE_ENV: &str = "STREAMWAL_PG_KILL_PAUSE";
const TABLE: &str = "kill_out";
/// The replayable source: a file the parent appends `f<ID>` lines to
/// before each round; its rows are `FILE_IDS + ID`.
const SOURCE_FILE: &str = "source.txt";
const FILE_IDS: u64 = 1 << 40;

/// The named crash points, in the order a batch reaches them.
const POINTS: [&str; 6] = [
    "before-pre-commit",
    "after-pre-commit",
    "after-journal",
    "after-decision",
    "after-sink-commit",
    "after-commit",
];

type BoxResult<T> = Result<T, SinkError>;

/// Pauses the child at its named point.
struct Pauser {
    point: Option<(String, u32)>,
}

impl Pauser {
    fn from_env() -> Pauser {
        let point = std::env::var(PAUSE_ENV).ok().map(|s| {
            let (p, k) = s.split_once(':').unwrap();
            (p.to_string(), k.parse().unwrap())
        });
        Pauser { point }
    }

    fn at(&mut self, point: &str) {
        if let Some((p, k)) = &mut self.point
            && p == point
        {
            if *k == 0 {
                say(&format!("paused {point}"));
                loop {
                    std::thread::park();
                }
            }
            *k -= 1;
        }
    }
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").and_then(|()| o.flush()).unwrap();
}

/// The PostgreSQL sink with the pause points that fall inside the sink's
/// calls.
struct Pausing {
    pg: PgSink,
    pauser: Pauser,
}

impl TransactionalSink for Pausing {
    fn pre_commit(&mut self, batch_time: u64) -> BoxResult<Vec<u8>> {
        let txn = self.pg.pre_commit(batch_time)?;
        self.pauser.at("after-pre-commit");
        Ok(txn)
    }
    fn commit(&mut self, batch_time: u64, txn: &[u8]) -> BoxResult<()> {
        self.pauser.at("after-decision");
        self.pg.commit(batch_time, txn)?;
        self.pauser.at("after-sink-commit");
        Ok(())
    }
    fn abort(&mut self, batch_time: u64, txn: Option<&[u8]>) -> BoxResult<()> {
        self.pg.abort(batch_time, txn)
    }
    fn in_doubt(&mut self) -> BoxResult<Vec<(u64, Vec<u8>)>> {
        self.pg.in_doubt()
    }
}

fn open(dir: &Path) -> streamwal::Result<StreamingContext<()>> {
    // A clock that never runs ahead of the batches: no downtime batches.
    // Small segments: opening a debug build's log of 64 MiB segments
    // would be most of the test's time.
    let small = WalOptions {
        segment_bytes: 256 << 10,
        max_record_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let mut opts = ContextOptions::new(1_000);
    opts.receiver_log = small.clone();
    opts.journal = small;
    StreamingContext::builder(dir.join("ctx"))
        .options(opts)
        .now_ms(1)
        .get_or_create(|| ())
}

/// The IDs of the source file's lines in `[start, end)`.
fn file_ids(dir: &Path, start: u64, end: u64) -> BoxResult<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; (end - start) as usize];
    std::fs::File::open(dir.join(SOURCE_FILE))?.read_exact_at(&mut buf, start)?;
    let text = String::from_utf8(buf)?;
    let mut ids = Vec::new();
    for line in text.lines() {
        ids.push(FILE_IDS + line.strip_prefix('f').ok_or("bad line")?.parse::<u64>()?);
    }
    Ok(ids)
}

/// Batch `t`: the receiver-log lines allocated to it and the source file's
/// range planned for it (to the file's end, unless planned before).
fn run_batch(
    ctx: &StreamingContext<()>,
    offsets: &mut OffsetLog,
    eo: &mut ExactlyOnce<Pausing>,
    dir: &Path,
    t: u64,
) -> BoxResult<()> {
    ctx.begin_batch(t)?;
    let file_end = std::fs::metadata(dir.join(SOURCE_FILE))?.len();
    let ranges = offsets.plan(t, &BTreeMap::from([(SOURCE_FILE.to_string(), file_end)]))?;
    let blocks = ctx.tracker.allocate_blocks_to_batch(t)?;
    let seen = ctx.state::<u64, u64>("seen")?;
    eo.sink().pg.begin(t)?;
    let mut ids = Vec::new();
    for payloads in ctx.read_batch(&blocks)?.values() {
        for p in payloads {
            ids.push(std::str::from_utf8(p)?[1..].parse()?);
        }
    }
    let r = ranges[SOURCE_FILE];
    ids.extend(file_ids(dir, r.start, r.end)?);
    for id in ids {
        let n = seen.get(&id)?.unwrap_or(0) + 1;
        seen.put(id, n)?;
        eo.sink().pg.write(id, n)?;
    }
    eo.sink().pauser.at("before-pre-commit");
    eo.pre_commit(ctx, t)?;
    eo.sink().pauser.at("after-journal");
    eo.commit(ctx, t)?;
    eo.sink().pauser.at("after-commit");
    Ok(())
}

/// The engine: prints `open`, `ack ID` once line `r<ID>` is durable,
/// `batch T` once batch T is committed everywhere, `idle` for a `?`, and
/// `done` at the end of its input.
#[test]
#[ignore = "run by pg_sink_kill_nine_writes_each_line_once as a child process"]
fn pg_sink_child_main() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let url = std::env::var(URL_ENV).unwrap();
    let query = std::env::var(QUERY_ENV).unwrap();
    let ctx = open(dir).expect("recover the context");
    let sink = Pausing {
        pg: PgSink::connect(&url, &query, TABLE).expect("connect"),
        pauser: Pauser::from_env(),
    };
    let mut eo = ExactlyOnce::open(&ctx, &query, sink).expect("resolve the sink");
    let mut offsets = OffsetLog::open(&ctx).expect("open the offsets log");
    for t in batches_to_run(&ctx, &offsets).unwrap() {
        run_batch(&ctx, &mut offsets, &mut eo, dir, t).expect("rerun an owed batch");
    }
    let (state, _) = ctx.tracker.snapshot().unwrap();
    let mut next = state.last_allocated_time.max(1_000) + 1_000;
    say("open");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        if line == "." {
            run_batch(&ctx, &mut offsets, &mut eo, dir, next).expect("batch");
            say(&format!("batch {next}"));
            next += 1_000;
        } else if line == "?" {
            say("idle");
        } else {
            let handle = ctx.receiver_log.append(line.as_bytes()).unwrap();
            ctx.tracker
                .add_block(BlockInfo {
                    stream_id: 0,
                    handle,
                    records: 1,
                    receive_time: next - 1,
                })
                .unwrap();
            say(&format!("ack {}", &line[1..]));
        }
    }
    run_batch(&ctx, &mut offsets, &mut eo, dir, next).expect("last batch");
    say("done");
}

/// What the table holds for `query`: per ID, how many rows and their counts.
fn rows(pg: &PgServer, query: &str) -> BTreeMap<u64, Vec<u64>> {
    let mut sink = PgSink::connect(&pg.url, query, TABLE).unwrap();
    let mut out: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for row in sink
        .client()
        .query(
            &format!("SELECT id, n FROM {TABLE} WHERE query = $1"),
            &[&query],
        )
        .unwrap()
    {
        let (id, n): (i64, i64) = (row.get(0), row.get(1));
        out.entry(id as u64).or_default().push(n as u64);
    }
    out
}

#[test]
fn pg_sink_kill_nine_writes_each_line_once() {
    let Some(pg) = server("pg_sink_kill_nine_writes_each_line_once") else {
        return;
    };
    let seed = seed_from_env("STREAMWAL_PG_KILL_SEED");
    let mut rng = Rng::new(seed);
    let query = format!("kill{}_{}", std::process::id(), rng.below(1 << 30));
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Each point at its first, second and third visit, then random kills.
    let mut plan: Vec<Option<(String, u64)>> = Vec::new();
    for k in 0..3 {
        plan.extend(POINTS.iter().map(|p| Some((p.to_string(), k))));
    }
    let random: usize = std::env::var("STREAMWAL_PG_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    plan.extend((0..random).map(|_| None));
    plan.push(None); // the last round: runs to the end of its input
    let (mut sent, mut acked, mut file_sent) = (0u64, BTreeSet::new(), 0u64);
    let mut paused: BTreeMap<String, u32> = BTreeMap::new();
    for (round, pause) in plan.iter().enumerate() {
        let last = round + 1 == plan.len();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            &test_name(module_path!(), "pg_sink_child_main"),
            "--ignored",
            "--nocapture",
        ])
        .env(DIR_ENV, tmp.path())
        .env(URL_ENV, &pg.url)
        .env(QUERY_ENV, &query)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some((p, k)) = pause {
            cmd.env(PAUSE_ENV, format!("{p}:{k}"));
        }
        // The replayable source grows before each round, whole lines only.
        let file_lines = rng.below(20);
        let mut lines_text = String::new();
        for id in file_sent..file_sent + file_lines {
            lines_text.push_str(&format!("f{id}\n"));
        }
        file_sent += file_lines;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tmp.path().join(SOURCE_FILE))
            .and_then(|mut f| f.write_all(lines_text.as_bytes()))
            .unwrap();
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let count = 10 + rng.below(30);
        let mut text = String::new();
        for id in sent..sent + count {
            text.push_str(&format!("r{id}\n"));
            if rng.below(4) == 0 {
                text.push_str(".\n");
            }
        }
        text.push_str(".\n?\n");
        sent += count;
        // The pipe holds it all (well under 64 KiB): no writer thread.
        stdin.write_all(text.as_bytes()).unwrap();
        // Held open until the kill, so that the child never sees the end
        // of its input; the last round's child does, and finishes.
        let stdin = if last {
            drop(stdin);
            None
        } else {
            Some(stdin)
        };
        let kill_after = if pause.is_none() && !last {
            rng.below(count)
        } else {
            u64::MAX
        };
        let stdout = lines_of(child.stdout.take().unwrap());
        let (mut lines, mut acks) = (Vec::new(), 0);
        while let Some(line) = next_line(&stdout, &mut child, &lines) {
            acks += u64::from(line.starts_with("ack "));
            let stop = line.starts_with("paused ") || line == "idle" || acks > kill_after;
            lines.push(line);
            if stop && !last {
                break;
            }
        }
        if !last {
            child.kill().unwrap(); // SIGKILL
        }
        drop(stdin);
        let status = child.wait().unwrap();
        if last {
            assert!(status.success(), "the last child failed ({status})");
        } else {
            assert_eq!(status.signal(), Some(9), "round {round}: ended by itself");
        }
        // What it printed before it died was printed after the fact.
        while let Some(line) = next_line(&stdout, &mut child, &lines) {
            lines.push(line);
        }
        for line in &lines {
            if let Some(id) = line.strip_prefix("ack ") {
                acked.insert(id.parse::<u64>().unwrap());
            } else if let Some(p) = line.strip_prefix("paused ") {
                *paused.entry(p.to_string()).or_default() += 1;
            }
        }
        if last {
            assert!(
                lines.iter().any(|l| l == "done"),
                "the last child: {lines:?}"
            );
        }
    }
    let table = rows(&pg, &query);
    for (id, ns) in &table {
        let known = *id < sent || (FILE_IDS..FILE_IDS + file_sent).contains(id);
        assert!(known, "row for {id}, never sent (seed {seed})");
        assert_eq!(ns, &[1], "{id}: rows with counts {ns:?} (seed {seed})");
    }
    // Every line of the replayable source, read or re-read across the
    // kills, has its row once: the last batch read to the end.
    for id in 0..file_sent {
        assert!(
            table.contains_key(&(FILE_IDS + id)),
            "source line f{id} has no row (seed {seed})"
        );
    }
    for id in &acked {
        assert!(
            table.contains_key(id),
            "acknowledged r{id} has no row (seed {seed})"
        );
    }
    let mut sink = PgSink::connect(&pg.url, &query, TABLE).unwrap();
    assert_eq!(
        sink.in_doubt().unwrap(),
        Vec::new(),
        "prepared transactions left"
    );
    for p in POINTS {
        assert!(
            paused.get(p).copied().unwrap_or(0) >= 2,
            "crash point {p} reached only {paused:?} (seed {seed})"
        );
    }
    println!(
        "{} rounds: {sent} lines sent, {} acknowledged, {file_sent} source lines, {} rows, pauses {paused:?}",
        plan.len(),
        acked.len(),
        table.len()
    );
}

/// How long the test waits for the child's next line before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The child's complete stdout lines, read by a thread (a line cut by the
/// kill is dropped).
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = String::new();
        loop {
            buf.clear();
            match r.read_line(&mut buf) {
                Ok(n) if n > 0 && buf.ends_with('\n') => {
                    if tx.send(buf.trim_end().to_string()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    rx
}

/// The child's next line, `None` once its stdout is closed; a child silent
/// for [`PATIENCE`] is killed and the test fails.
fn next_line(rx: &mpsc::Receiver<String>, child: &mut Child, seen: &[String]) -> Option<String> {
    match rx.recv_timeout(PATIENCE) {
        Ok(line) => Some(line),
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!(
                "the child printed nothing for {PATIENCE:?}; last lines: {:?}",
                seen.iter().rev().take(5).collect::<Vec<_>>()
            );
        }
    }
}

/// Kill the sink's server connection from outside (`pg_terminate_backend`),
/// as a lost connection does.
fn cut_connection(pg: &PgServer, sink: &mut PgSink) {
    let pid: i32 = sink
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut admin = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
}

fn plain_open(dir: &Path) -> StreamingContext<()> {
    StreamingContext::builder(dir)
        .batch_interval_ms(1_000)
        .now_ms(1)
        .get_or_create(|| ())
        .unwrap()
}

/// Begin batch `t` in the context and the sink and write one row, `t + 1`.
fn one_row(ctx: &StreamingContext<()>, eo: &mut ExactlyOnce<PgSink>, t: u64) {
    ctx.begin_batch(t).unwrap();
    ctx.tracker.allocate_blocks_to_batch(t).unwrap();
    ctx.state::<u64, u64>("seen")
        .unwrap()
        .put(t + 1, 1)
        .unwrap();
    eo.sink().begin(t).unwrap();
    eo.sink().write(t + 1, 1).unwrap();
}

#[test]
fn pg_sink_a_lost_connection_is_an_error_with_its_cause_and_nothing_is_lost_or_doubled() {
    let Some(pg) = server("pg_sink_a_lost_connection") else {
        return;
    };
    let query = format!("lost{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = plain_open(tmp.path());
    let sink = PgSink::connect(&pg.url, &query, TABLE).unwrap();
    let mut eo = ExactlyOnce::open(&ctx, &query, sink).unwrap();

    // Lost before the pre-commit: an error naming the cause; not committed.
    one_row(&ctx, &mut eo, 1_000);
    cut_connection(&pg, eo.sink());
    let e = eo.commit_batch(&ctx, 1_000).unwrap_err();
    assert!(
        matches!(
            e,
            streamwal::Error::Sink {
                op: "pre-commit",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(std::error::Error::source(&e).is_some(), "the cause: {e:?}");
    assert!(!ctx.tracker.is_committed(1_000).unwrap());
    assert!(rows(&pg, &query).is_empty());
    // Run again: the sink reconnects.
    one_row(&ctx, &mut eo, 1_000);
    eo.commit_batch(&ctx, 1_000).unwrap();
    assert_eq!(
        rows(&pg, &query).keys().copied().collect::<Vec<_>>(),
        [1_001]
    );

    // Lost between the decision and the sink's commit: the batch is
    // committed, its rows prepared; a retry commits them, once.
    one_row(&ctx, &mut eo, 2_000);
    eo.pre_commit(&ctx, 2_000).unwrap();
    cut_connection(&pg, eo.sink());
    let e = eo.commit(&ctx, 2_000).unwrap_err();
    assert!(
        matches!(e, streamwal::Error::Sink { op: "commit", .. }),
        "{e:?}"
    );
    assert!(ctx.tracker.is_committed(2_000).unwrap());
    assert_eq!(eo.pending(), vec![2_000]);
    assert!(!rows(&pg, &query).contains_key(&2_001), "not visible yet");
    eo.retry_pending().unwrap();
    assert!(eo.pending().is_empty());

    // The same, but the driver dies instead of retrying: the next open
    // finds the prepared transaction and commits it.
    one_row(&ctx, &mut eo, 3_000);
    eo.pre_commit(&ctx, 3_000).unwrap();
    cut_connection(&pg, eo.sink());
    assert!(eo.commit(&ctx, 3_000).is_err());
    drop((eo, ctx));
    let ctx = plain_open(tmp.path());
    let sink = PgSink::connect(&pg.url, &query, TABLE).unwrap();
    let mut eo = ExactlyOnce::open(&ctx, &query, sink).unwrap();
    assert_eq!(eo.recovery().committed, vec![3_000]);
    assert!(ctx.recovered.as_ref().unwrap().batches.is_empty());
    let all = rows(&pg, &query);
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        [1_001, 2_001, 3_001]
    );
    assert!(all.values().all(|ns| ns == &[1]));

    // A prepared transaction rolled back behind the driver's back after the
    // decision is reported, never silently taken as committed.
    one_row(&ctx, &mut eo, 4_000);
    eo.pre_commit(&ctx, 4_000).unwrap();
    let gid = eo.sink().gid(4_000);
    let mut admin = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .unwrap();
    let e = eo.commit(&ctx, 4_000).unwrap_err();
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.contains("never committed"), "{cause}");
    assert_eq!(eo.pending(), vec![4_000]);
}

#[test]
fn pg_sink_a_connection_lost_mid_transaction_never_autocommits_and_strays_are_rolled_back() {
    let Some(pg) = server("pg_sink_mid_transaction") else {
        return;
    };
    let query = format!("mid{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = plain_open(tmp.path());
    let sink = PgSink::connect(&pg.url, &query, TABLE).unwrap();
    let mut eo = ExactlyOnce::open(&ctx, &query, sink).unwrap();
    one_row(&ctx, &mut eo, 1_000);
    cut_connection(&pg, eo.sink());
    // The next writes must not go to a new session (they would
    // autocommit): the first fails on the dead connection, the next are
    // refused.
    assert!(eo.sink().write(1_002, 1).is_err());
    let e = eo.sink().write(1_003, 1).unwrap_err();
    assert!(e.to_string().contains("lost"), "{e}");
    assert!(eo.commit_batch(&ctx, 1_000).is_err());
    assert!(rows(&pg, &query).is_empty(), "nothing visible early");
    assert!(!ctx.tracker.is_committed(1_000).unwrap());
    // Run again: a new session.
    one_row(&ctx, &mut eo, 1_000);
    eo.commit_batch(&ctx, 1_000).unwrap();
    assert_eq!(
        rows(&pg, &query).keys().copied().collect::<Vec<_>>(),
        [1_001]
    );

    // A prepare that reached the server with its reply lost is rolled back
    // by abort(T, None).
    let mut sink = PgSink::connect(&pg.url, &query, TABLE).unwrap();
    sink.begin(2_000).unwrap();
    sink.write(2_001, 1).unwrap();
    sink.pre_commit(2_000).unwrap();
    sink.abort(2_000, None).unwrap();
    assert_eq!(sink.in_doubt().unwrap(), Vec::new());
    // A handle that is not the sink's name never reaches SQL.
    for bad in [&b"x'; DROP TABLE kill_out; --"[..], b"streamwal-other-2000"] {
        assert!(sink.commit(2_000, bad).is_err());
        assert!(sink.abort(2_000, Some(bad)).is_err());
    }
}
