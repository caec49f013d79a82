//! The timed phases: commit cost by state size, and commit latency while
//! snapshots are written.

use super::*;

// ---------------------------------------------------------------------------
// Phase 1 and 2: batches.

#[derive(Default)]
struct Runs {
    /// Per run: median batch total, apply and commit (µs).
    total: Vec<f64>,
    apply: Vec<f64>,
    commit: Vec<f64>,
    samples: Vec<Sample>,
    /// CPU other processes used during the subject's timed batches
    /// (cores, on average over a run; the highest of the runs).
    others: f64,
}

impl Runs {
    fn add(&mut self, run: Vec<Sample>) {
        let med = |f: fn(&Sample) -> u32| median(run.iter().map(|s| f(s) as f64).collect());
        self.total.push(med(Sample::total_us));
        self.apply.push(med(|s| s.apply_us));
        self.commit.push(med(|s| s.commit_us));
        self.samples.extend(run);
    }
    fn p(&self, f: fn(&Sample) -> u32, q: f64) -> u32 {
        let mut v: Vec<u32> = self.samples.iter().map(f).collect();
        v.sort_unstable();
        percentile(&v, q)
    }
}

enum Engine {
    State(State),
    Redb(Redb),
}

impl Engine {
    fn run_batch(&mut self, batch: &[(Key, u64)]) -> Sample {
        match self {
            Engine::State(s) => s.run_batch(batch),
            Engine::Redb(r) => r.run_batch(batch),
        }
    }
    fn settle(&mut self) {
        if let Engine::State(s) = self {
            s.store.wait_for_snapshot();
        }
    }
}

/// One engine in one configuration, and what its runs measured.
struct Subject {
    label: String,
    engine: Engine,
    keys: Keys,
    /// Where its files are.
    path: PathBuf,
    runs: Runs,
    /// Snapshots written during the timed runs.
    snapshots: u64,
}

impl Subject {
    fn new(label: String, engine: Engine, keys: Keys, path: PathBuf) -> Subject {
        Subject {
            label,
            engine,
            keys,
            path,
            runs: Runs::default(),
            snapshots: 0,
        }
    }
}

/// Run every subject `cfg.reps` times, `batches` batches each, in
/// rotating order; within a repetition, in turns of `turn` batches each
/// (so that drift of the machine falls on all of them alike).
fn run_rotating(cfg: &Config, configs: &mut [Subject], batches: usize, turn: usize, phase: &str) {
    let t0 = Instant::now();
    for rep in 0..cfg.reps {
        let mut runs: Vec<Vec<Sample>> = vec![Vec::with_capacity(batches); configs.len()];
        let mut others = vec![(0u64, 0u64); configs.len()];
        let mut elapsed = vec![Duration::ZERO; configs.len()];
        let mut done = 0;
        while done < batches {
            let n = turn.min(batches - done);
            for k in 0..configs.len() {
                let i = (k + rep) % configs.len();
                let c = &mut configs[i];
                for _ in 0..WARMUP {
                    let b = c.keys.batch(cfg.changed);
                    c.engine.run_batch(&b);
                }
                let written_before = match &c.engine {
                    Engine::State(s) => s.store.stats().snapshots_written,
                    Engine::Redb(_) => 0,
                };
                let mark = CpuMark::now();
                let started = Instant::now();
                for _ in 0..n {
                    let b = c.keys.batch(cfg.changed);
                    runs[i].push(c.engine.run_batch(&b));
                }
                elapsed[i] += started.elapsed();
                let (o, a) = mark.others_ticks();
                others[i] = (others[i].0 + o, others[i].1 + a);
                if let Engine::State(s) = &c.engine {
                    c.snapshots += s.store.stats().snapshots_written - written_before;
                }
                c.engine.settle();
            }
            done += n;
        }
        for (i, run) in runs.into_iter().enumerate() {
            let c = &mut configs[i];
            let med = median(run.iter().map(|s| s.total_us() as f64).collect());
            let others = cores_of(others[i].0, others[i].1);
            eprintln!(
                "  [{:>5.1} s] {phase} {:<28} run {}: median batch {} ms ({:.1} s; other processes {:.2} cores)",
                t0.elapsed().as_secs_f64(),
                c.label,
                rep + 1,
                ms(med),
                elapsed[i].as_secs_f64(),
                others
            );
            c.runs.others = c.runs.others.max(others);
            c.runs.add(run);
        }
    }
}

fn state_engine(dir: &Path, keys: &Keys, every: u64) -> Engine {
    let mut s = State::open(dir, state_options(every));
    s.fill(keys);
    Engine::State(s)
}

fn redb_engine(path: &Path, keys: &Keys) -> Engine {
    let mut r = Redb::create(path);
    r.fill(keys);
    Engine::Redb(r)
}

pub(super) fn phase_commit_cost(cfg: &Config, root: &Path) {
    println!();
    println!(
        "## Commit cost by state size ({} keys changed per batch, {} batches per run, {} runs)",
        cfg.changed, cfg.batches, cfg.reps
    );
    let mut configs = Vec::new();
    for (i, n) in [cfg.small_keys, cfg.large_keys].into_iter().enumerate() {
        let seed = 0x9E37_79B9_7F4A_7C15 + i as u64;
        let t = Instant::now();
        let (keys, path) = (Keys::new(n, seed), root.join(format!("state-{n}")));
        let engine = state_engine(&path, &keys, u64::MAX);
        eprintln!(
            "  built the state store of {n} keys in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        configs.push(Subject::new(
            format!("streamwal state|{n}"),
            engine,
            keys,
            path,
        ));
        let t = Instant::now();
        let (keys, path) = (Keys::new(n, seed), root.join(format!("redb-{n}.redb")));
        let engine = redb_engine(&path, &keys);
        eprintln!(
            "  built redb of {n} keys in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        configs.push(Subject::new(format!("redb|{n}"), engine, keys, path));
    }
    run_rotating(cfg, &mut configs, cfg.batches, 10, "commit");

    println!();
    println!(
        "| system | keys in state | batch median (ms) | apply median (ms) | commit median (ms) | batch p50 / p99 (ms) | commit p50 / p99 (ms) | batches/s | other processes, max (cores) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &configs {
        let (sys, n) = c.label.split_once('|').unwrap_or((&c.label, ""));
        let total = median(c.runs.total.clone());
        println!(
            "| {sys} | {n} | {} | {} | {} | {} / {} | {} / {} | {:.1} | {:.2} |",
            ms(total),
            ms(median(c.runs.apply.clone())),
            ms(median(c.runs.commit.clone())),
            ms(c.runs.p(Sample::total_us, 0.5) as f64),
            ms(c.runs.p(Sample::total_us, 0.99) as f64),
            ms(c.runs.p(|s| s.commit_us, 0.5) as f64),
            ms(c.runs.p(|s| s.commit_us, 0.99) as f64),
            1e6 / total,
            c.runs.others
        );
    }
    // The median over the repetitions of each repetition's ratio.
    let ratio = |a: &Subject, b: &Subject, f: fn(&Runs) -> &Vec<f64>| {
        median(
            f(&a.runs)
                .iter()
                .zip(f(&b.runs))
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let (s_small, r_small, s_large, r_large) = (&configs[0], &configs[1], &configs[2], &configs[3]);
    println!();
    println!("| ratio (median of the runs' ratios) | batch | apply | commit |");
    println!("|---|---:|---:|---:|");
    for (label, a, b) in [
        ("streamwal: large state / small state", s_large, s_small),
        ("redb: large state / small state", r_large, r_small),
        ("streamwal / redb, small state", s_small, r_small),
        ("streamwal / redb, large state", s_large, r_large),
    ] {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            ratio(a, b, |r| &r.total),
            ratio(a, b, |r| &r.apply),
            ratio(a, b, |r| &r.commit)
        );
    }
    println!();
    for c in &configs {
        let bytes = match &c.engine {
            Engine::State(_) => dir_bytes(&c.path),
            Engine::Redb(_) => std::fs::metadata(&c.path).map_or(0, |m| m.len()),
        };
        println!(
            "on disk after the runs: {} {:.1} MB",
            c.label.replace('|', " of "),
            bytes as f64 / 1e6
        );
    }
}

pub(super) fn phase_snapshot_latency(cfg: &Config, root: &Path) {
    let batches = cfg.batches * 2;
    println!();
    println!(
        "## Commit latency while snapshots are written ({} keys, {} changed per batch, {batches} batches per run, {} runs)",
        cfg.large_keys, cfg.changed, cfg.reps
    );
    let mut configs = Vec::new();
    for (label, every) in [
        ("no snapshots", u64::MAX),
        ("snapshot every 10 batches", 10),
        ("snapshot every batch", 1),
    ] {
        let keys = Keys::new(cfg.large_keys, 0x2545_F491_4F6C_DD1D);
        let path = root.join(format!("snap-{every}"));
        let engine = state_engine(&path, &keys, every);
        configs.push(Subject::new(label.to_string(), engine, keys, path));
    }
    run_rotating(cfg, &mut configs, batches, batches, "snapshot");

    // Untimed: the heap a running snapshot holds on top of the live state
    // (its frozen map's nodes, which the batch loop's writes then copy, and
    // its encoded entries), over batches with snapshots back to back.
    let extra_peak = {
        let c = &mut configs[2];
        let counted = Counted::start();
        for _ in 0..cfg.batches.min(40) {
            let b = c.keys.batch(cfg.changed);
            c.engine.run_batch(&b);
        }
        c.engine.settle();
        counted.peak()
    };

    println!();
    println!(
        "| snapshots | batch p50 / p99 (ms) | commit p50 / p99 (ms) | apply p50 / p99 (ms) | snapshots written | batches during a snapshot | other processes, max (cores) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for c in &configs {
        let during = c.runs.samples.iter().filter(|s| s.during_snapshot).count();
        println!(
            "| {} | {} / {} | {} / {} | {} / {} | {} | {:.0}% | {:.2} |",
            c.label,
            ms(c.runs.p(Sample::total_us, 0.5) as f64),
            ms(c.runs.p(Sample::total_us, 0.99) as f64),
            ms(c.runs.p(|s| s.commit_us, 0.5) as f64),
            ms(c.runs.p(|s| s.commit_us, 0.99) as f64),
            ms(c.runs.p(|s| s.apply_us, 0.5) as f64),
            ms(c.runs.p(|s| s.apply_us, 0.99) as f64),
            c.snapshots,
            100.0 * during as f64 / c.runs.samples.len().max(1) as f64,
            c.runs.others
        );
    }
    let base = &configs[0].runs;
    println!();
    println!("| p99 ratio to no snapshots | batch | commit |");
    println!("|---|---:|---:|");
    for c in &configs[1..] {
        println!(
            "| {} | {:.2} | {:.2} |",
            c.label,
            c.runs.p(Sample::total_us, 0.99) as f64 / base.p(Sample::total_us, 0.99) as f64,
            c.runs.p(|s| s.commit_us, 0.99) as f64 / base.p(|s| s.commit_us, 0.99) as f64,
        );
    }
    println!();
    println!(
        "| snapshots | apply p50 (ms): first batch after a snapshot starts / other batches during a snapshot / no snapshot running | batches |"
    );
    println!("|---|---:|---:|");
    for c in &configs[1..] {
        let pick = |f: &dyn Fn(&Sample) -> bool| {
            let mut v: Vec<u32> = c
                .runs
                .samples
                .iter()
                .filter(|s| f(s))
                .map(|s| s.apply_us)
                .collect();
            v.sort_unstable();
            (percentile(&v, 0.5), v.len())
        };
        let (first, n1) = pick(&|s| s.after_freeze);
        let (during, n2) = pick(&|s| s.during_snapshot && !s.after_freeze);
        let (idle, n3) = pick(&|s| !s.during_snapshot && !s.after_freeze);
        println!(
            "| {} | {} / {} / {} | {n1} / {n2} / {n3} |",
            c.label,
            ms(first as f64),
            ms(during as f64),
            ms(idle as f64)
        );
    }
    println!();
    println!(
        "Peak heap above the resting state with a snapshot being written during every batch ({} batches, untimed): {:.1} MB ({:.0} bytes per key)",
        cfg.batches.min(40),
        extra_peak as f64 / 1e6,
        extra_peak as f64 / cfg.large_keys as f64
    );
}
