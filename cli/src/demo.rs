//! `streamwal demo`: a small streaming engine killed with SIGKILL again and
//! again, recovering each time, with exactly-once output checked at the end.
//!
//! The parent is the source: it sends numbered records (`ID words...`, in
//! bursts ended by a `.` line) to the worker's stdin and reads the worker's
//! protocol lines (see `demo_worker.rs`) from its stdout; an `ack` line names
//! the records the worker made durable, so the parent knows exactly which
//! records were acknowledged. Records sent to a worker that died before
//! acknowledging them are not resent (a non-replayable source): they may be
//! counted once or not at all. After the last kill, a final worker runs to the
//! end, the parent closes its stdin, and the worker drains every record into
//! committed batches; then the sink's files are checked (`demo_check.rs`).

#[path = "demo_check.rs"]
mod check;
#[path = "demo_data.rs"]
mod data;
#[path = "demo_worker.rs"]
mod engine;
#[path = "demo_run.rs"]
mod parent;
#[path = "demo_sink.rs"]
mod txn;

use parent::{Demo, Stats};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `streamwal demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's logs, checkpoints and output; new or empty
    /// (default: a fresh temporary directory, removed after a pass).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many times the worker is killed with SIGKILL.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Roughly how long the demo runs, in seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Keep the logs and checkpoints on object storage at this URL
    /// (`s3://bucket/prefix`) instead of in the directory; the demo uses a
    /// fresh prefix below it. The output files stay in the directory. Needs
    /// a build with `--features object-store`.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// Arguments of the hidden `streamwal demo-worker` (the process the demo kills).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The demo directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The object-storage URL of the logs and checkpoints, if not in `dir`.
    #[arg(long)]
    pub store: Option<String>,
}

/// Run the demo. `Err` is one line for the user.
pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    if !(1..=3_600).contains(&args.seconds) {
        return Err("--seconds must be 1 to 3600".into());
    }
    if args.kills > 1_000 {
        return Err("--kills must be at most 1000".into());
    }
    if args.store.is_some() && !cfg!(feature = "object-store") {
        return Err("this streamwal was built without object storage; \
                    build it with `--features object-store` for --store"
            .into());
    }
    let temporary = args.dir.is_none();
    let dir = prepare_dir(args.dir)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    println!(
        "streamwal demo: word count in 1-second batches, killed with SIGKILL {} times in ~{} s",
        args.kills, args.seconds
    );
    println!(
        "  the worker stores each block in its receiver WAL and journal before it acks; \
         each batch writes one output file, then commits"
    );
    println!("  directory: {}", dir.display());
    let store = args.store.as_ref().map(|url| {
        format!(
            "{}/demo-{}-{}",
            url.trim_end_matches('/'),
            std::process::id(),
            Rng::seeded().0 % 1_000_000
        )
    });
    if let Some(url) = &store {
        println!("  logs and checkpoints: {url}");
    }
    let mut demo = Demo {
        exe,
        dir: dir.clone(),
        store,
        started: Instant::now(),
        rng: Rng::seeded(),
        next_id: Arc::new(AtomicU64::new(0)),
        stats: Stats::default(),
        kills_planned: args.kills,
    };
    let budget_ms = args.seconds * 1_000;
    for round in 0..=args.kills {
        // What is left of the budget, shared by the rounds still to run.
        let left = budget_ms.saturating_sub(demo.elapsed_ms());
        let slice = left / u64::from(args.kills - round + 1);
        if round == args.kills {
            demo.final_round(round, Duration::from_millis(left.max(500)))?;
            break;
        }
        let kill = match demo.rng.below(6) {
            0 => KillAt::Early,
            // Waiting for a batch to start takes up to a second.
            1..=3 if slice >= 1_000 => KillAt::InBatch,
            _ => KillAt::Anytime,
        };
        let life = match kill {
            KillAt::Early => demo.rng.below(40),
            // At least a little work, even when the budget is spent.
            _ => (slice / 2 + demo.rng.below(slice / 2)).max(100),
        };
        let down = demo.rng.below((slice / 2).min(DOWNTIME_MAX_MS));
        demo.killed_round(
            round,
            Duration::from_millis(life),
            kill,
            Duration::from_millis(down),
        )?;
    }
    let sent = demo.next_id.load(Ordering::SeqCst);
    let (_, _, out_dir) = engine::layout(&dir);
    let mut verdict = check::verify(&out_dir, sent, &demo.stats.acked);
    // The running counts, as an engine restarted now would find them.
    let running = engine::running_counts(&dir, demo.store.as_deref());
    verdict.running_counts = Some(match running {
        Ok(running) => match check::check_running_counts(&running, &verdict.expected_counts) {
            None => Ok(running.values().sum()),
            Some(wrong) => Err(wrong),
        },
        Err(e) => Err(format!("cannot read the running counts: {e}")),
    });
    if let Some(Err(wrong)) = &verdict.running_counts {
        verdict.problems.push(wrong.clone());
    }
    // The transactional sink: its committed files against the acknowledged
    // records, and nothing left pre-committed.
    let (_, committed) = txn::layout(&dir);
    let two_pc = check::verify(&committed, sent, &demo.stats.acked);
    let left = txn::left_prepared(&dir).map_err(|e| format!("cannot read the sink: {e}"))?;
    verdict.exactly_once = Some(if two_pc.pass() && left == 0 {
        Ok(format!(
            "{} batches committed through two-phase commit, each acknowledged record once",
            two_pc.files
        ))
    } else {
        for p in &two_pc.problems {
            verdict.problems.push(format!("transactional sink: {p}"));
        }
        if left > 0 {
            verdict.problems.push(format!(
                "transactional sink: {left} batches left pre-committed"
            ));
        }
        Err(format!(
            "{} lost / {} duplicated / {} invented, {left} left pre-committed",
            two_pc.lost, two_pc.duplicated, two_pc.invented
        ))
    });
    if demo.stats.protocol_errors > 0 {
        verdict.problems.push(format!(
            "{} garbled protocol lines from the worker",
            demo.stats.protocol_errors
        ));
    }
    demo.stats.table(sent, &verdict);
    if verdict.pass() {
        if temporary {
            // Best effort: a leftover temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &verdict.problems {
            println!("  problem: {p}");
        }
        println!("  the demo's files are kept in {}", dir.display());
        Ok(ExitCode::from(1))
    }
}

/// Run the demo's worker. `Err` is one line for the user.
pub fn worker(args: WorkerArgs) -> Result<ExitCode, String> {
    engine::run_worker(&args.dir, args.store.as_deref()).map(|()| ExitCode::SUCCESS)
}

/// The demo directory: the given one (new or empty), or a fresh temporary one.
fn prepare_dir(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => {
            if let Ok(mut entries) = std::fs::read_dir(&d)
                && entries.next().is_some()
            {
                return Err(format!(
                    "{} is not empty: the demo needs a new or empty directory",
                    d.display()
                ));
            }
            d
        }
        None => std::env::temp_dir().join(format!(
            "streamwal-demo-{}-{}",
            std::process::id(),
            Rng::seeded().0 % 1_000_000
        )),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Longest time the engine stays down after a kill (ms).
const DOWNTIME_MAX_MS: u64 = 1_500;

/// When a worker is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// At a random moment.
    Anytime,
    /// A few milliseconds after a batch starts (after its life is up).
    InBatch,
    /// Within a few tens of milliseconds of its start: while it recovers.
    Early,
}

/// xorshift64, seeded from the clock.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x1234_5678, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
