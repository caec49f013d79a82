//! The demo's parent side: start a worker, feed it records, read what it
//! reports, kill it, and tally everything for the final table.

use super::check::Verdict;
use super::data::{parse_ranges, record_line};
use super::{KillAt, Rng};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The demo run: where, since when, and what it saw.
pub struct Demo {
    /// This program, re-executed as `demo-worker`.
    pub exe: PathBuf,
    /// The demo directory.
    pub dir: PathBuf,
    /// The object-storage URL of the logs and checkpoints, if not in `dir`.
    pub store: Option<String>,
    /// When the demo started.
    pub started: Instant,
    /// Kill moments and lifetimes.
    pub rng: Rng,
    /// The id of the next record the source sends; `0..next_id` were sent.
    pub next_id: Arc<AtomicU64>,
    /// Everything counted so far.
    pub stats: Stats,
    /// How many kills the run makes.
    pub kills_planned: u32,
}

/// What the parent learnt from the workers.
#[derive(Debug, Default)]
pub struct Stats {
    /// `acked[id]`: record `id` was acknowledged.
    pub acked: Vec<bool>,
    /// How many records were acknowledged.
    pub acked_count: u64,
    /// `batch` lines seen (batches output and committed, reruns included).
    pub batches: u64,
    /// Kills made.
    pub kills: u32,
    /// Protocol lines from the worker that could not be parsed.
    pub protocol_errors: u64,
    /// Kills that landed between a batch's `start` and its `batch` line.
    kills_in_batch: u32,
    /// Kills that landed before the worker was `ready`.
    kills_in_recovery: u32,
    /// Kills that landed before the worker's context was even open.
    kills_before_open: u32,
    /// The current worker said `open`.
    opened: bool,
    /// Worker starts that recovered state from a crash.
    pub recoveries: u32,
    /// Owed batches rerun after a crash.
    replayed: u64,
    /// Of those, the ones allocated (or pending) before the crash; the rest
    /// fell due while the engine was down.
    replayed_interrupted: u64,
    /// `get_or_create` durations (µs) of the recoveries.
    recovery_us: Vec<u64>,
    /// Worker spawn to `ready` (recovered and owed batches rerun), per recovery.
    ready_ms: Vec<f64>,
    /// The current worker is inside a batch.
    in_batch: bool,
    /// The current worker is not `ready` yet.
    in_recovery: bool,
    /// The current worker recovered state (its `open` said `recovered`).
    recovering: bool,
    /// When the current worker was started.
    spawned: Option<Instant>,
    /// The final worker said `drained`.
    drained: bool,
}

/// A line from the worker's stdout, or its end.
enum Event {
    /// A whole protocol line, without its newline.
    Line(String),
    /// The worker's stdout ended (it exited or was killed).
    Closed,
}

/// One running worker process and its two helper threads.
struct Worker {
    /// The worker process.
    child: Child,
    /// Its stdout, line by line, from the reader thread.
    events: Receiver<Event>,
    /// Tells the source thread to stop (and close the worker's stdin).
    stop: Arc<AtomicBool>,
    /// The source thread feeding the worker's stdin.
    source: Option<JoinHandle<()>>,
    /// Where the worker's stderr goes.
    stderr: PathBuf,
}

impl Demo {
    /// Milliseconds since the demo started.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Start worker number `round`, its stdout reader and its source.
    fn spawn(&mut self, round: u32) -> Result<Worker, String> {
        let stderr = self.dir.join(format!("worker-{round}.log"));
        let log = std::fs::File::create(&stderr)
            .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
        let mut command = Command::new(&self.exe);
        command.args(["demo-worker", "--dir"]).arg(&self.dir);
        if let Some(url) = &self.store {
            command.args(["--store", url]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        self.stats.spawned = Some(Instant::now());
        self.stats.in_batch = false;
        self.stats.in_recovery = true;
        self.stats.opened = false;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("the worker's pipes are missing".into());
        };
        let (tx, events) = channel();
        let reader = std::thread::Builder::new().name("worker-stdout".into());
        let spawned = reader.spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    // A line cut by the kill is not a report.
                    Ok(_) if buf.last() == Some(&b'\n') => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        if tx.send(Event::Line(line)).is_err() {
                            return;
                        }
                    }
                    _ => {
                        let _ = tx.send(Event::Closed);
                        return;
                    }
                }
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let source = spawned.and_then(|_| {
            let (next_id, stop, seed) = (self.next_id.clone(), stop.clone(), self.rng.next() | 1);
            std::thread::Builder::new()
                .name("source".into())
                .spawn(move || feed(stdin, &next_id, &stop, Rng(seed)))
        });
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot start a thread: {e}"));
            }
        };
        Ok(Worker {
            child,
            events,
            stop,
            source: Some(source),
            stderr,
        })
    }

    /// Run a worker for about `life`, then SIGKILL it: at that moment, or
    /// ([`KillAt::InBatch`]) a few milliseconds after the next batch starts;
    /// then leave the engine down for `down`.
    pub fn killed_round(
        &mut self,
        round: u32,
        life: Duration,
        kill: KillAt,
        down: Duration,
    ) -> Result<(), String> {
        let mut w = self.spawn(round)?;
        let born = Instant::now();
        let mut last_progress = Instant::now();
        let in_batch = kill == KillAt::InBatch;
        loop {
            let left = life.saturating_sub(born.elapsed());
            let wait = if left.is_zero() { TICK } else { left.min(TICK) };
            let started_batch = match w.events.recv_timeout(wait) {
                Ok(Event::Line(l)) => self.stats.line(&l),
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(died(&mut w));
                }
                Err(RecvTimeoutError::Timeout) => false,
            };
            let due = born.elapsed() >= life;
            if due && in_batch && started_batch {
                std::thread::sleep(Duration::from_millis(self.rng.below(4)));
            }
            // A batch starts every second: do not wait much longer.
            let waited_enough = born.elapsed() >= life + Duration::from_millis(1_200);
            if due && (!in_batch || started_batch || waited_enough) {
                break;
            }
            self.progress(&mut last_progress);
        }
        let _ = w.child.kill(); // SIGKILL
        let status = w
            .child
            .wait()
            .map_err(|e| format!("cannot wait for the worker: {e}"))?;
        if status.signal() != Some(9) {
            return Err(died(&mut w));
        }
        // Whatever the worker printed before it died counts.
        while let Ok(Event::Line(l)) = w.events.recv_timeout(Duration::from_secs(5)) {
            self.stats.line(&l);
        }
        w.stop.store(true, Ordering::SeqCst);
        if let Some(source) = w.source.take() {
            let _ = source.join();
        }
        self.stats.kills += 1;
        self.stats.kills_before_open += u32::from(!self.stats.opened);
        let when = if self.stats.in_recovery {
            self.stats.kills_in_recovery += 1;
            " while starting up or recovering"
        } else if self.stats.in_batch {
            self.stats.kills_in_batch += 1;
            " during a batch"
        } else {
            ""
        };
        // The engine stays down a while: batches fall due meanwhile.
        println!(
            "{:6.1}s  SIGKILL #{}/{}{when}; down for {:.1} s",
            self.elapsed_ms() as f64 / 1e3,
            self.stats.kills,
            self.kills_planned,
            down.as_secs_f64()
        );
        std::thread::sleep(down);
        Ok(())
    }

    /// Run the last worker for `life`, then close its stdin and wait until it
    /// has drained every record into committed batches and exited.
    pub fn final_round(&mut self, round: u32, life: Duration) -> Result<(), String> {
        let mut w = self.spawn(round)?;
        let born = Instant::now();
        let mut last_progress = Instant::now();
        let mut closing = false;
        loop {
            match w.events.recv_timeout(TICK) {
                Ok(Event::Line(l)) => {
                    self.stats.line(&l);
                }
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if !closing && born.elapsed() >= life {
                closing = true;
                println!(
                    "{:6.1}s  the source stops; the worker drains what it holds",
                    self.elapsed_ms() as f64 / 1e3
                );
                w.stop.store(true, Ordering::SeqCst);
                if let Some(source) = w.source.take() {
                    let _ = source.join(); // closes the worker's stdin
                }
            }
            if born.elapsed() >= life + DRAIN_TIMEOUT {
                let _ = w.child.kill();
                let _ = w.child.wait();
                return Err("the worker did not drain in time".into());
            }
            self.progress(&mut last_progress);
        }
        let status = w
            .child
            .wait()
            .map_err(|e| format!("cannot wait for the worker: {e}"))?;
        if !status.success() || !self.stats.drained {
            return Err(died(&mut w));
        }
        Ok(())
    }

    /// A progress line, at most once a second.
    fn progress(&self, last: &mut Instant) {
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
        let recovery = self
            .stats
            .recovery_us
            .last()
            .map_or("-".to_string(), |us| format!("{:.1} ms", *us as f64 / 1e3));
        println!(
            "{:6.1}s  kills {}/{}  acknowledged {} records  batches {}  last recovery {recovery}",
            self.elapsed_ms() as f64 / 1e3,
            self.stats.kills,
            self.kills_planned,
            self.stats.acked_count,
            self.stats.batches
        );
    }
}

/// How long the parent waits for a line before it looks at the clock.
const TICK: Duration = Duration::from_millis(20);

/// How long the final worker may take to drain after its stdin closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker ended by itself: kill it if needed and say why, in one line.
fn died(w: &mut Worker) -> String {
    let _ = w.child.kill();
    let status = w
        .child
        .wait()
        .map_or_else(|e| e.to_string(), |s| s.to_string());
    w.stop.store(true, Ordering::SeqCst);
    let log = std::fs::read_to_string(&w.stderr).unwrap_or_default();
    let last = log.lines().last().unwrap_or("no message");
    format!("the worker ended by itself ({status}): {last}")
}

/// The source: bursts of 1 to 24 records, each ended by a `.` line, about
/// a hundred bursts a second, until `stop` or the worker is gone. Dropping
/// `stdin` at the end closes the worker's input.
fn feed(mut stdin: ChildStdin, next_id: &AtomicU64, stop: &AtomicBool, mut rng: Rng) {
    let mut buf = String::new();
    while !stop.load(Ordering::SeqCst) {
        let first = next_id.load(Ordering::SeqCst);
        let n = 1 + rng.below(24);
        buf.clear();
        for id in first..first + n {
            buf.push_str(&record_line(id));
            buf.push('\n');
        }
        buf.push_str(".\n");
        // Counted as sent before the write: a record may only be counted if
        // it was sent, and one cut short is simply never acknowledged.
        next_id.store(first + n, Ordering::SeqCst);
        if stdin.write_all(buf.as_bytes()).is_err() || stdin.flush().is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Stats {
    /// Take one protocol line; true if it says a batch started.
    fn line(&mut self, line: &str) -> bool {
        let mut f = line.split(' ');
        match (f.next(), f.next(), f.next(), f.next()) {
            (Some("ack"), Some(list), None, None) => {
                let Ok(ids) = parse_ranges(list) else {
                    // A garbled acknowledgement must fail the run, not vanish.
                    self.protocol_errors += 1;
                    return false;
                };
                for id in ids {
                    let Ok(i) = usize::try_from(id) else { continue };
                    if i >= self.acked.len() {
                        self.acked.resize(i + 1, false);
                    }
                    if !self.acked[i] {
                        self.acked[i] = true;
                        self.acked_count += 1;
                    }
                }
            }
            (Some("open"), Some(us), Some(_), Some(kind)) => {
                self.opened = true;
                self.recovering = kind == "recovered";
                if self.recovering {
                    self.recoveries += 1;
                    self.recovery_us.push(us.parse().unwrap_or(0));
                }
            }
            (Some("replay"), Some(_), Some(reason), None) => {
                self.replayed += 1;
                self.replayed_interrupted += u64::from(reason != "downtime");
                self.in_batch = true;
            }
            (Some("ready"), None, None, None) => {
                self.in_recovery = false;
                if self.recovering
                    && let Some(t) = self.spawned
                {
                    self.ready_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            (Some("start"), Some(_), None, None) => {
                self.in_batch = true;
                return true;
            }
            (Some("batch"), Some(_), Some(_), None) => {
                self.in_batch = false;
                self.batches += 1;
            }
            (Some("drained"), None, None, None) => self.drained = true,
            _ => {}
        }
        false
    }

    /// The final table.
    pub fn table(&self, sent: u64, v: &Verdict) {
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let max = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
        let rec: Vec<f64> = self.recovery_us.iter().map(|&u| u as f64 / 1e3).collect();
        let rows = [
            ("records sent", sent.to_string()),
            ("records acknowledged", self.acked_count.to_string()),
            (
                "counted exactly once",
                format!(
                    "{} acknowledged (+{} sent and stored, never acknowledged)",
                    v.acked_once, v.unacked_counted
                ),
            ),
            (
                "lost / duplicated / invented",
                format!("{} / {} / {}", v.lost, v.duplicated, v.invented),
            ),
            (
                "kills",
                format!(
                    "{} ({} during a batch, {} while starting up or recovering)",
                    self.kills, self.kills_in_batch, self.kills_in_recovery
                ),
            ),
            (
                "recoveries",
                format!(
                    "{} (+{} starts killed before their context was open)",
                    self.recoveries, self.kills_before_open
                ),
            ),
            (
                "replayed batches",
                format!(
                    "{} ({} interrupted, {} fell due while down)",
                    self.replayed,
                    self.replayed_interrupted,
                    self.replayed - self.replayed_interrupted
                ),
            ),
            (
                "batch output files",
                format!(
                    "{} ({} words; miscounted: {})",
                    v.files, v.words, v.miscounted
                ),
            ),
            (
                "running counts",
                match &v.running_counts {
                    Some(Ok(words)) => format!(
                        "PASS ({words} words in keyed state, each acknowledged line's once)"
                    ),
                    Some(Err(_)) => "FAIL (see the problems below)".to_string(),
                    None => "not checked".to_string(),
                },
            ),
            (
                "exactly once",
                match &v.exactly_once {
                    Some(Ok(summary)) => format!("PASS ({summary})"),
                    Some(Err(wrong)) => format!("FAIL ({wrong})"),
                    None => "not checked".to_string(),
                },
            ),
            (
                "recovery time",
                format!(
                    "mean {:.1} ms, max {:.1} ms (get_or_create)",
                    mean(&rec),
                    max(&rec)
                ),
            ),
            (
                "restart to ready",
                format!(
                    "mean {:.1} ms, max {:.1} ms (start, recover, rerun owed batches)",
                    mean(&self.ready_ms),
                    max(&self.ready_ms)
                ),
            ),
            (
                "verdict",
                if v.pass() { "PASS" } else { "FAIL" }.to_string(),
            ),
        ];
        println!();
        for (label, value) in rows {
            println!("  {label:<30}{value}");
        }
    }
}
