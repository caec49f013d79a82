//! The examples do what the README says: `dedup_buckets` survives `kill -9` with every input record in its directory sink exactly once and the bucket rule holding, its HTTP sink delivers every bucket to a local server, and `network_word_count` counts the words a local TCP source sends (and, tailing a file, loses nothing across a kill).
//!
//! Each example runs in a child process: this test binary compiles the
//! example files in as modules and re-executes itself to run one example's
//! `main` (so no example binary needs to be built first). Children are
//! synchronized by reading their output lines, never by sleeping.

use crate::common::rng::{Rng, seed_from_env};
use crate::common::test_name;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a test waits for a line it expects from a child.
const PATIENCE: Duration = Duration::from_secs(60);

/// Child processes run an example's code in this test binary (the example
/// files are compiled in as modules): which example, and its arguments
/// separated by newlines.
const EXAMPLE_ENV: &str = "STREAMWAL_EXAMPLE_CHILD";
const ARGS_ENV: &str = "STREAMWAL_EXAMPLE_ARGS";

#[allow(dead_code)]
#[path = "../../examples/dedup_buckets.rs"]
mod dedup_buckets;
#[allow(dead_code)]
#[path = "../../examples/network_word_count.rs"]
mod network_word_count;

/// The example's `main`, run only when a test re-executes this binary.
#[test]
#[ignore = "run by the other tests as a child process"]
fn example_child_main() {
    let Ok(name) = std::env::var(EXAMPLE_ENV) else {
        return;
    };
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let argv = std::iter::once(name.clone())
        .chain(args.split('\n').filter(|a| !a.is_empty()).map(String::from))
        .map(std::ffi::OsString::from);
    let code = match name.as_str() {
        "dedup_buckets" => dedup_buckets::real_main(argv),
        "network_word_count" => network_word_count::real_main(argv),
        other => panic!("no example {other}"),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code));
}

/// `spec` names an example (its program) and its arguments; the command
/// that runs it in a child process, stdin piped.
fn child_of(spec: &Command) -> Command {
    let name = spec.get_program().to_str().unwrap().to_string();
    let args: Vec<&str> = spec.get_args().map(|a| a.to_str().unwrap()).collect();
    assert!(args.iter().all(|a| !a.contains('\n')), "{args:?}");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        &test_name(module_path!(), "example_child_main"),
        "--ignored",
        "--nocapture",
        "-q",
    ])
    .args(["--test-threads", "1"])
    .env(EXAMPLE_ENV, name)
    .env(ARGS_ENV, args.join("\n"))
    .env_remove("RUST_BACKTRACE")
    .stdin(Stdio::piped());
    if let Some(dir) = spec.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

/// A running child whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    /// Every line read so far.
    log: Vec<String>,
}

impl Running {
    fn spawn(spec: &mut Command, stderr: PathBuf) -> Running {
        let mut child = child_of(spec)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the example");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            let mut preamble = true;
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() != Some(&b'\n') => break, // cut by a kill
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        // The test harness's own first lines.
                        if preamble && (line.is_empty() || line.starts_with("running ")) {
                            continue;
                        }
                        preamble = false;
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Running {
            child,
            lines,
            stderr,
            log: Vec::new(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line, or `None` once the child's stdout is closed.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => {
                self.log.push(l.clone());
                Some(l)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!(
                    "no output for {PATIENCE:?}; last lines: {:?}\nstderr: {}",
                    self.log.iter().rev().take(5).collect::<Vec<_>>(),
                    self.stderr()
                );
            }
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended by itself ({status}): {}",
            self.stderr()
        );
    }

    /// Read every remaining line, then wait for a successful exit.
    fn finish(&mut self) {
        while self.next_line().is_some() {}
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the example failed ({status}): {}\nlast lines: {:?}",
            self.stderr(),
            self.log.iter().rev().take(5).collect::<Vec<_>>()
        );
    }
}

// ------------------------------------------------------------ dedup_buckets

/// Input records with plenty of duplicates (up to ~40 of each).
fn bucket_records(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| format!("rec{}", i.wrapping_mul(2_654_435_761) % 97))
        .collect()
}

/// Check a sink's output, (batch time, bucket) -> records: no bucket holds a
/// duplicate; bucket k > 1 only holds records also in bucket k - 1 of the
/// same batch; buckets are numbered 1.. without a gap; and all of them
/// together hold exactly `input`, as a multiset.
fn check_buckets(output: &BTreeMap<(u64, usize), Vec<String>>, input: &[String]) {
    let mut per_batch: BTreeMap<u64, BTreeMap<usize, &Vec<String>>> = BTreeMap::new();
    for ((t, k), recs) in output {
        per_batch.entry(*t).or_default().insert(*k, recs);
    }
    for (t, buckets) in &per_batch {
        let ks: Vec<usize> = buckets.keys().copied().collect();
        assert_eq!(
            ks,
            (1..=ks.len()).collect::<Vec<_>>(),
            "batch {t}: buckets with a gap"
        );
        let mut previous: Option<HashSet<&String>> = None;
        for (k, recs) in buckets {
            let set: HashSet<&String> = recs.iter().collect();
            assert_eq!(
                set.len(),
                recs.len(),
                "batch {t} bucket {k} holds a duplicate"
            );
            assert!(!recs.is_empty(), "batch {t} bucket {k} is empty");
            if let Some(prev) = &previous {
                for r in recs.iter() {
                    assert!(
                        prev.contains(r),
                        "batch {t}: {r} is in bucket {k} but not in bucket {}",
                        k - 1
                    );
                }
            }
            previous = Some(set);
        }
    }
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for recs in output.values() {
        for r in recs {
            *got.entry(r).or_default() += 1;
        }
    }
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for r in input {
        *want.entry(r).or_default() += 1;
    }
    assert_eq!(got, want, "the sink's records are not exactly the input's");
}

fn lines_of(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The directory sink's files: `batch-T-bucket-K.txt`; no temp file left.
fn read_dir_sink(dir: &Path) -> BTreeMap<(u64, usize), Vec<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let key = name
            .strip_prefix("batch-")
            .and_then(|s| s.strip_suffix(".txt"))
            .and_then(|s| s.split_once("-bucket-"))
            .and_then(|(t, k)| Some((t.parse().ok()?, k.parse().ok()?)))
            .unwrap_or_else(|| panic!("unexpected file in the sink: {name}"));
        out.insert(key, lines_of(&std::fs::read(entry.path()).unwrap()));
    }
    out
}

/// Write `records[from..to]`, one per line; stop quietly if the child died.
fn feed(mut stdin: ChildStdin, records: Vec<String>) -> ChildStdin {
    let mut buf = String::new();
    for r in records {
        buf.push_str(&r);
        buf.push('\n');
    }
    let _ = stdin.write_all(buf.as_bytes());
    stdin
}

fn dedup_cmd(state: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("dedup_buckets");
    cmd.arg("--checkpoint")
        .arg(state)
        .arg("--out")
        .arg(out)
        .args(["--batch-ms", "40", "--block-ms", "10"])
        .stdin(Stdio::piped());
    cmd
}

/// Where the child resumes reading its input (its first line says).
fn resume_line(first: &str) -> u64 {
    if first == "fresh start" {
        return 0;
    }
    first
        .rsplit_once("resumes after line ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
}

#[test]
fn dedup_buckets_survives_kill_nine_exactly_once() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    const N: u64 = 6_000;
    let records = bucket_records(N);
    let mut reruns = 0;
    let mut stored_max = 0;

    // KILLS runs killed mid-stream, each fed the input from its start (a
    // replayable source) up to a growing limit, then a run fed everything.
    const KILLS: u64 = 5;
    for round in 0..=KILLS {
        let limit = if round < KILLS {
            N * (2 + round) / (KILLS + 3)
        } else {
            N
        };
        let mut run = Running::spawn(
            &mut dedup_cmd(&state, &out),
            tmp.path().join(format!("stderr-{round}")),
        );
        let stdin = run.child.stdin.take().unwrap();
        let input = records[..limit as usize].to_vec();
        let feeder = std::thread::spawn(move || feed(stdin, input));
        let first = run.next_line().expect("a first line");
        let resume = resume_line(&first);
        assert!(
            resume >= stored_max,
            "round {round}: resumes at line {resume}, but {stored_max} were stored (seed {seed})"
        );
        if round == KILLS {
            drop(feeder.join().unwrap()); // end of input: the example finishes
            run.finish();
            assert_eq!(
                run.log.last().map(String::as_str),
                Some(format!("done: {N} input lines stored").as_str()),
                "seed {seed}"
            );
        } else {
            // Kill once a random number of lines past the resume point is
            // durable: mid-block, mid-batch or mid-checkpoint.
            let target = resume + 1 + rng.below(limit.saturating_sub(resume));
            loop {
                let line = run.next_line().unwrap_or_else(|| {
                    panic!("round {round}: the example ended early: {}", run.stderr())
                });
                if let Some(n) = line.strip_prefix("stored ") {
                    stored_max = n.parse().unwrap();
                    if stored_max >= target {
                        break;
                    }
                }
            }
            run.kill9();
            drop(feeder.join().unwrap());
        }
        reruns += run.log.iter().filter(|l| l.ends_with("(rerun)")).count();
    }
    println!("{reruns} batches rerun after a kill");
    let output = read_dir_sink(&out);
    check_buckets(&output, &records);
    assert!(
        output.keys().any(|&(_, k)| k > 1),
        "the input's duplicates never made a second bucket"
    );
}

/// A tiny HTTP/1.1 server: stores each POST's body by path (so a repeated
/// POST is idempotent) and answers 503 to the very first request, to make
/// the client retry.
/// What the test's HTTP server received: path -> body of the last POST.
type Posted = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

fn http_server() -> (u16, Posted) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = store.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut length = 0usize;
            let mut key = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let ok = reader.read_exact(&mut body).is_ok();
            let mut f = request.split(' ');
            let (method, path) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            let status = if first {
                first = false;
                "503 Service Unavailable"
            } else if ok && method == "POST" && key.is_some() {
                shared.lock().unwrap().insert(path.to_string(), body);
                "200 OK"
            } else {
                "400 Bad Request"
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, store)
}

#[test]
fn dedup_buckets_http_sink_delivers_every_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let records = bucket_records(2_000);
    let input = tmp.path().join("records.txt");
    std::fs::write(&input, records.join("\n") + "\n").unwrap();
    let (port, store) = http_server();
    let mut cmd = Command::new("dedup_buckets");
    cmd.arg("--checkpoint")
        .arg(tmp.path().join("state"))
        .arg("--input")
        .arg(&input)
        .arg("--http")
        .arg(format!("http://127.0.0.1:{port}/sink"))
        .args(["--batch-ms", "40", "--block-ms", "10"])
        .stdin(Stdio::null());
    let mut run = Running::spawn(&mut cmd, tmp.path().join("stderr"));
    run.finish();
    let mut output = BTreeMap::new();
    for (path, body) in store.lock().unwrap().iter() {
        let key = path
            .strip_prefix("/sink/batch/")
            .and_then(|s| s.split_once("/bucket/"))
            .and_then(|(t, k)| Some((t.parse().ok()?, k.parse().ok()?)))
            .unwrap_or_else(|| panic!("unexpected path {path}"));
        output.insert(key, lines_of(body));
    }
    check_buckets(&output, &records);
}

#[test]
fn dedup_buckets_rejects_bad_arguments_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["--checkpoint", "x"],
        vec!["--checkpoint", "x", "--http", "ftp://host/"],
        vec!["--checkpoint", "x", "--out", "y", "--batch-ms", "0"],
    ] {
        let mut spec = Command::new("dedup_buckets");
        spec.current_dir(tmp.path()).args(&args);
        let out = child_of(&spec).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("dedup_buckets: error: "), "{args:?}: {err}");
    }
}

// ------------------------------------------------------- network_word_count

/// One printed batch: its time, its byte range (file mode) and its counts.
#[derive(Debug, Default)]
struct WordBatch {
    time: u64,
    range: Option<(u64, u64)>,
    counts: BTreeMap<String, u64>,
}

/// Parse the example's batches (`Time: T ms[ (bytes A..B)]`, then `(w,c)`).
fn word_batches(log: &[String]) -> Vec<WordBatch> {
    let mut out: Vec<WordBatch> = Vec::new();
    for line in log {
        if let Some(rest) = line.strip_prefix("Time: ") {
            let range = rest
                .split_once("(bytes ")
                .and_then(|(_, r)| r.strip_suffix(')'))
                .and_then(|r| r.split_once(".."))
                .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()));
            let time = rest.split(' ').next().unwrap().parse().unwrap();
            out.push(WordBatch {
                time,
                range,
                counts: BTreeMap::new(),
            });
        } else if let Some(pair) = line.strip_prefix('(').and_then(|l| l.strip_suffix(')'))
            && let Some((w, c)) = pair.rsplit_once(',')
        {
            let batch = out.last_mut().expect("a count before any batch");
            *batch.counts.entry(w.to_string()).or_default() += c.parse::<u64>().unwrap();
        }
    }
    out
}

fn add_counts<'a>(batches: impl IntoIterator<Item = &'a WordBatch>) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for b in batches {
        for (w, c) in &b.counts {
            *total.entry(w.clone()).or_default() += c;
        }
    }
    total
}

fn count_text(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_string()).or_default() += 1;
    }
    counts
}

/// Lines of words, some repeated across lines.
fn word_lines(n: usize, salt: usize) -> String {
    let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
    let mut s = String::new();
    for i in 0..n {
        let len = 1 + (i * 7 + salt) % 6;
        let line: Vec<&str> = (0..len)
            .map(|j| words[(i * 31 + j * 17 + salt) % words.len()])
            .collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s
}

/// The word count against a TCP source the test serves: every word the
/// source sent is counted once across the printed batches.
fn word_count_over_tcp(checkpoint: Option<&Path>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = tx.send(conn);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("network_word_count");
    cmd.arg(addr.to_string())
        .args(["--batch-ms", "100", "--block-ms", "20"])
        .stdin(Stdio::null());
    if let Some(dir) = checkpoint {
        cmd.arg("--checkpoint").arg(dir);
    }
    let mut run = Running::spawn(&mut cmd, tmp.path().join("stderr"));
    let mut conn = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the example never connected: {}", run.stderr()));
    let text = word_lines(300, 1);
    // Two halves, the second once the first is counted, so both land in
    // more than one batch.
    let cut = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let a = &text[..cut];
    conn.write_all(a.as_bytes()).unwrap();
    let want_a = count_text(a);
    while add_counts(&word_batches(&run.log)) != want_a {
        run.next_line().expect("the example ended early");
    }
    conn.write_all(&text.as_bytes()[cut..]).unwrap();
    drop(conn); // the source closes: the example counts the rest and exits
    run.finish();
    let batches = word_batches(&run.log);
    assert_eq!(add_counts(&batches), count_text(&text));
    assert!(batches.len() >= 2, "{batches:?}");
}

#[test]
fn network_word_count_counts_a_tcp_source() {
    word_count_over_tcp(None);
}

#[test]
fn network_word_count_counts_a_tcp_source_through_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    word_count_over_tcp(Some(&tmp.path().join("ckpt")));
    // The state directory holds a checkpoint, the journal and the log.
    assert!(tmp.path().join("ckpt/journal").is_dir());
    assert!(tmp.path().join("ckpt/receiver").is_dir());
}

#[test]
fn network_word_count_file_source_loses_nothing_across_kill_nine() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (file, ckpt) = (tmp.path().join("words.txt"), tmp.path().join("ckpt"));
    let parts = [word_lines(200, 2), word_lines(150, 3), word_lines(100, 5)];
    std::fs::write(&file, &parts[0]).unwrap();
    let cmd = |follow: bool| {
        let mut c = Command::new("network_word_count");
        c.arg("--file")
            .arg(&file)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--batch-ms", "40"])
            .stdin(Stdio::null());
        if !follow {
            c.arg("--no-follow");
        }
        c
    };

    // Run 1 tails the file; the second part is appended once the first is
    // checkpointed; the kill lands right after a batch is printed (before
    // its checkpoint) or right after a checkpoint.
    let mut run = Running::spawn(&mut cmd(true), tmp.path().join("stderr-1"));
    let first_end = parts[0].len() as u64;
    let mut appended = false;
    let kill_on_print = rng.below(2) == 0;
    loop {
        let line = run.next_line().expect("the example ended early");
        if !appended
            && line
                .strip_prefix("checkpointed ")
                .is_some_and(|l| l.ends_with(&format!("at byte {first_end}")))
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap();
            f.write_all(parts[1].as_bytes()).unwrap();
            appended = true;
        } else if appended {
            let batches = word_batches(&run.log);
            let last_end = batches.last().and_then(|b| b.range).map_or(0, |r| r.1);
            let hit = if kill_on_print {
                line.starts_with("Time: ") && last_end > first_end
            } else {
                line.starts_with("checkpointed ") && last_end > first_end
            };
            if hit || last_end == (parts[0].len() + parts[1].len()) as u64 {
                break;
            }
        }
    }
    run.kill9();
    while run.next_line().is_some() {} // what it printed before dying
    let run1 = word_batches(&run.log);

    // More input while it is down, then run 2 reads to the end of the file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(parts[2].as_bytes()).unwrap();
    drop(f);
    let mut run2 = Running::spawn(&mut cmd(false), tmp.path().join("stderr-2"));
    let first = run2.next_line().expect("a first line");
    let resume: u64 = first
        .rsplit_once(" from byte ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    run2.finish();
    let run2 = word_batches(&run2.log);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        resume > 0 && resume <= text.len() as u64,
        "resume at {resume}"
    );
    // Run 1's batches up to the checkpointed offset cover [0, resume)
    // exactly; run 2 covers the rest: nothing lost, nothing counted twice.
    let done: Vec<&WordBatch> = run1
        .iter()
        .filter(|b| b.range.is_some_and(|r| r.1 <= resume))
        .collect();
    let mut at = 0;
    for b in &done {
        let (start, end) = b.range.unwrap();
        assert_eq!(start, at, "run 1's batches are not contiguous: {run1:?}");
        at = end;
    }
    assert_eq!(
        at, resume,
        "run 1's checkpointed batches end at {at}, not {resume}"
    );
    assert_eq!(
        add_counts(done.iter().copied()),
        count_text(&text[..resume as usize])
    );
    assert_eq!(
        run2.first().and_then(|b| b.range).map(|r| r.0),
        Some(resume)
    );
    assert_eq!(add_counts(&run2), count_text(&text[resume as usize..]));
}

#[test]
fn network_word_count_wal_recovers_acknowledged_lines_after_kill_nine() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let cmd = |addr: String| {
        let mut c = Command::new("network_word_count");
        c.arg(addr)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--ack", "--batch-ms", "60", "--block-ms", "15"])
            .stdin(Stdio::null());
        c
    };
    let serve = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((conn, _)) = listener.accept() {
                let _ = tx.send(conn);
            }
        });
        (addr, rx)
    };
    const LINES: u64 = 400;
    let text = word_lines(LINES as usize, 7);
    let lines: Vec<&str> = text.lines().collect();

    // Run 1: the source sends every line and reads the acknowledgements;
    // the example is killed once a random number of lines is acknowledged.
    let (addr, conn) = serve();
    let mut run = Running::spawn(&mut cmd(addr), tmp.path().join("stderr-1"));
    let conn = conn
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the example never connected: {}", run.stderr()));
    // A paced source: 10 lines, then wait for their acknowledgement.
    let mut writer = conn.try_clone().unwrap();
    let mut acks = BufReader::new(conn);
    let target = 10 * (1 + rng.below(LINES / 10 - 1));
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut line = String::new();
    let mut read_ack = |acks: &mut BufReader<TcpStream>| -> Option<u64> {
        line.clear();
        match acks.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                Some(line.trim().strip_prefix("ack ").unwrap().parse().unwrap())
            }
            _ => None,
        }
    };
    while sent < LINES {
        let chunk: String = lines[sent as usize..sent as usize + 10]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        writer.write_all(chunk.as_bytes()).unwrap();
        sent += 10;
        if acked >= target {
            break; // this chunk is in flight when the kill comes
        }
        while acked < sent {
            acked = read_ack(&mut acks).unwrap_or_else(|| panic!("no ack: {}", run.stderr()));
        }
    }
    run.kill9();
    // Acknowledgements sent before the kill count too.
    while let Some(n) = read_ack(&mut acks) {
        acked = n;
    }
    drop(writer);
    while run.next_line().is_some() {}
    let run1 = word_batches(&run.log);

    // Run 2: recovers, reruns the batches it owed, then meets a source that
    // closes at once, and exits.
    let (addr, conn) = serve();
    let mut run2 = Running::spawn(&mut cmd(addr), tmp.path().join("stderr-2"));
    let conn = conn.recv_timeout(PATIENCE);
    assert!(conn.is_ok(), "run 2 never connected: {}", run2.stderr());
    drop(conn);
    run2.finish();
    let recovered = run2
        .log
        .iter()
        .filter(|l| l.ends_with("(recovered)"))
        .count();
    let run2 = word_batches(&run2.log);

    // A rerun batch is the same batch: run 1 printed it, maybe cut short by
    // the kill, with no count above the rerun's.
    let mut by_time: BTreeMap<u64, &WordBatch> = run1.iter().map(|b| (b.time, b)).collect();
    for b in &run2 {
        if let Some(before) = by_time.get(&b.time) {
            for (w, c) in &before.counts {
                assert!(
                    b.counts.get(w).is_some_and(|c2| c2 >= c),
                    "batch {} changed",
                    b.time
                );
            }
        }
        by_time.insert(b.time, b);
    }
    // Counted once per batch time: exactly the first S lines the source
    // sent, for some S covering every acknowledged line.
    let total = add_counts(by_time.values().copied());
    let stored = (acked..=LINES).find(|&s| {
        let prefix: String = lines[..s as usize]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        count_text(&prefix) == total
    });
    assert!(
        stored.is_some(),
        "the counts are not those of a prefix of at least the {acked} acknowledged lines \
         (seed {seed}); {recovered} batches recovered"
    );
    println!("{acked} lines acknowledged, {stored:?} stored, {recovered} batches recovered");
}
