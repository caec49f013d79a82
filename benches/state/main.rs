//! Keyed state (`streamwal::state::StateStore`) side by side with `redb`,
//! in one process, on one file system, every batch durable.
//!
//! ```text
//! cargo bench --bench state                 # every table (~3-5 minutes)
//! STREAMWAL_STATE_REPS=1 cargo bench --bench state   # a quicker look
//! cargo bench --bench state -- recovery     # one phase: commit, snapshot, recovery
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench` argument) or with
//! `-- --test` it runs every phase once, shrunk, as a smoke test.
//!
//! The workload: one operator, keys `[u8; 16]` (random), values `u64`
//! (random, so bincode's varint takes 9 bytes), a batch changes 10,000
//! existing keys (a window of a fixed random permutation of the keys: every
//! key in a batch is distinct) to new values. The state store is driven
//! directly, not through a `StreamingContext`: `begin_batch`, one
//! `KeyedState::put` per key, `commit_batch` (one durable delta in the state
//! log). redb (dev-dependency) holds the same keys in one table
//! (`[u8; 16]` to `u64`): one write transaction per batch, durability
//! `Immediate`, 10,000 `insert`s, `commit`.
//!
//! Phases:
//! 1. **Commit cost by state size.** 10,000 keys changed per batch with
//!    10,000 and with 1,000,000 keys in the state, both systems, snapshots
//!    off for the state store (`snapshot_every_batches = u64::MAX`), so that
//!    this is the batch loop alone. Each batch is timed in two parts:
//!    `apply` (`begin_batch` and the puts; redb: `begin_write`,
//!    `open_table` and the inserts) and `commit` (`commit_batch`; redb:
//!    `commit`). The
//!    four subjects take turns of 10 batches (each turn after 2 untimed
//!    ones), so that the machine's drift falls on all of them alike; ratios
//!    are the median of the runs' ratios.
//! 2. **Commit latency while a snapshot is written.** The state store at
//!    1,000,000 keys with snapshots off, with the default
//!    (`snapshot_every_batches = 10`) and with `snapshot_every_batches = 1`:
//!    each commit starts a background snapshot when none is running, so one
//!    is being written during nearly every batch (the table gives the
//!    snapshots written and the share of batches during which one was in
//!    progress, and the puts' median in the first batch after a snapshot
//!    starts, which copies the frozen map's nodes it writes, apart from the
//!    others). Then, untimed, the heap a running snapshot adds.
//! 3. **Recovery.** 1,000,000 keys, a snapshot (`snapshot_now`), then 100
//!    batches of 10,000 changes (deltas), then the store dropped. Recovery
//!    is `StateStore::open` plus `StateStore::operator::<[u8; 16], u64>`
//!    (which decodes the recovered bytes into the typed map): the state is
//!    then in memory, ready for the next batch. redb gets the same history
//!    (1,000,000 inserts in one transaction, then the same 100
//!    transactions); its recovery is `Database::open` plus reading the whole
//!    table into a `BTreeMap<[u8; 16], u64>`, the same end point (the keys
//!    in the engine's memory). `Database::open` alone is given too: redb
//!    reads from its file on demand, so an engine using it need not load
//!    anything at open. Two redb cases: after a clean close (`open` loads
//!    the allocator state written at close), and from a crash image (a copy
//!    of the file taken after the last durable commit, before the close:
//!    `open` then repairs, walking the tree and checking every page's
//!    checksum). Each is timed from the page cache and (Linux) with the
//!    files' pages dropped first (`posix_fadvise(DONTNEED)`).
//! 4. **Memory.** A counting global allocator (live heap bytes, and the
//!    peak): the state store's heap after recovery per key, the peak during
//!    recovery, the extra heap a running snapshot holds, and for reference a
//!    `BTreeMap<[u8; 16], u64>` of the same keys and redb's heap after its
//!    recovery (its page cache plus the map).
//!
//! Environment:
//! - `STREAMWAL_BENCH_DIR`: where the files go (default: Cargo's target tmp
//!   directory; on tmpfs every durable figure is meaningless).
//! - `STREAMWAL_STATE_KEYS`: keys in the large state (default 1,000,000).
//! - `STREAMWAL_STATE_BATCHES`: timed batches per run (default 100; phase
//!   2 runs twice as many).
//! - `STREAMWAL_STATE_REPS`: runs per configuration, in rotating order
//!   (default 3; medians of the runs, latency percentiles pooled).
//!
//! Every run line on stderr and every table gives the CPU that other
//! processes used meanwhile (from /proc/stat against /proc/self/stat), so a
//! disturbed run shows as one.

#![allow(unsafe_code)] // the counting allocator below

#[path = "../common/mod.rs"]
mod common;
mod phases;
mod recovery;
use common::{Rng, bench_root, test_mode};
use phases::{phase_commit_cost, phase_snapshot_latency};
use recovery::phase_recovery;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use streamwal::state::{KeyedState, StateOptions, StateStore};

// ---------------------------------------------------------------------------
// A counting allocator: live heap bytes and their peak.

struct Counting;

/// Counting is on only around the memory measurements: two atomic
/// operations per allocation, on a cache line the snapshot thread shares,
/// would otherwise be part of every timed figure.
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        let now = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
        if now > PEAK.load(Ordering::Relaxed) {
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
    }
}

fn shrank(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes allocated and not freed while counting was on, from the
/// start of a [`Counted`] region (objects freed in it that were allocated
/// before it count negative: regions here free only their own).
struct Counted {
    start: isize,
}

impl Counted {
    fn start() -> Counted {
        COUNTING.store(true, Ordering::SeqCst);
        let start = LIVE.load(Ordering::SeqCst);
        PEAK.store(start, Ordering::SeqCst);
        Counted { start }
    }
    /// Live bytes now, above the start.
    fn live(&self) -> usize {
        (LIVE.load(Ordering::SeqCst) - self.start).max(0) as usize
    }
    /// The highest live bytes since the start, above the start.
    fn peak(&self) -> usize {
        (PEAK.load(Ordering::SeqCst) - self.start).max(0) as usize
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Configuration and the workload.

type Key = [u8; 16];

const OPERATOR: &str = "op";
const TABLE: TableDefinition<Key, u64> = TableDefinition::new("op");
const INTERVAL_MS: u64 = 1_000;

struct Config {
    small_keys: usize,
    large_keys: usize,
    changed: usize,
    batches: usize,
    reps: usize,
    recovery_deltas: usize,
    dir: PathBuf,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a whole number"))
}

fn config() -> Config {
    let test = test_mode();
    Config {
        small_keys: if test { 1_000 } else { 10_000 },
        large_keys: env_usize("STREAMWAL_STATE_KEYS").unwrap_or(if test {
            20_000
        } else {
            1_000_000
        }),
        changed: if test { 1_000 } else { 10_000 },
        batches: env_usize("STREAMWAL_STATE_BATCHES").unwrap_or(if test { 5 } else { 100 }),
        reps: env_usize("STREAMWAL_STATE_REPS")
            .unwrap_or(if test { 1 } else { 3 })
            .max(1),
        recovery_deltas: if test { 5 } else { 100 },
        dir: bench_root(),
    }
}

/// The keys of a state and the order batches change them in.
struct Keys {
    keys: Vec<Key>,
    /// A random permutation of `0..keys.len()`.
    order: Vec<u32>,
    /// Where the next batch's window starts in `order`.
    next: usize,
    rng: Rng,
}

impl Keys {
    fn new(n: usize, seed: u64) -> Keys {
        let mut rng = Rng(seed);
        let keys: Vec<Key> = (0..n)
            .map(|_| {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&rng.next().to_le_bytes());
                k[8..].copy_from_slice(&rng.next().to_le_bytes());
                k
            })
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        Keys {
            keys,
            order,
            next: 0,
            rng,
        }
    }

    /// The next batch: `changed` distinct keys, each with a new value.
    fn batch(&mut self, changed: usize) -> Vec<(Key, u64)> {
        let n = self.order.len();
        let batch = (0..changed.min(n))
            .map(|i| {
                let k = self.keys[self.order[(self.next + i) % n] as usize];
                (k, self.rng.next())
            })
            .collect();
        self.next = (self.next + changed) % n;
        batch
    }
}

/// One batch's two timed parts, in microseconds.
#[derive(Clone, Copy, Default)]
struct Sample {
    apply_us: u32,
    commit_us: u32,
    /// A snapshot was being written at some point during the batch.
    during_snapshot: bool,
    /// The batch before this one started a snapshot: this batch's writes
    /// are the first to the newly frozen map's shared nodes.
    after_freeze: bool,
}

impl Sample {
    fn total_us(&self) -> u32 {
        self.apply_us + self.commit_us
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

// ---------------------------------------------------------------------------
// The two systems.

/// A state store with one operator, and the batch time of its last batch.
struct State {
    store: Arc<StateStore>,
    op: KeyedState<Key, u64>,
    batch_time: u64,
    /// Background snapshots started by this handle's commits.
    started: u64,
    /// The last commit started one.
    froze: bool,
}

fn state_options(snapshot_every_batches: u64) -> StateOptions {
    StateOptions {
        snapshot_every_batches,
        snapshot_every_bytes: u64::MAX,
        ..StateOptions::default()
    }
}

impl State {
    fn open(dir: &Path, opts: StateOptions) -> State {
        let store = Arc::new(StateStore::open(dir, opts).expect("open the state store"));
        let op = store.operator::<Key, u64>(OPERATOR).expect("operator");
        let batch_time = store.version().unwrap_or(0);
        State {
            store,
            op,
            batch_time,
            started: 0,
            froze: false,
        }
    }

    /// Put every key (one batch) and wait for any snapshot it started.
    fn fill(&mut self, keys: &Keys) {
        self.batch_time += INTERVAL_MS;
        self.store.begin_batch(self.batch_time).expect("begin");
        for (i, k) in keys.keys.iter().enumerate() {
            self.op.put(*k, i as u64).expect("put");
        }
        self.commit();
        self.store.wait_for_snapshot();
    }

    fn commit(&mut self) {
        self.store.commit_batch(self.batch_time).expect("commit");
        // A commit that starts a background snapshot resets the counter of
        // batches since the last one (every batch here changes the state).
        if self.store.stats().batches_since_snapshot == 0 {
            self.started += 1;
        }
    }

    /// Snapshots finished (written or failed) since open.
    fn finished(&self) -> u64 {
        let s = self.store.stats();
        s.snapshots_written + s.snapshot_failures
    }

    /// Whether a background snapshot is being written: the store has no
    /// such query, so count the ones commits started against the ones
    /// that finished.
    fn snapshot_running(&self) -> bool {
        self.started > self.finished()
    }

    fn run_batch(&mut self, batch: &[(Key, u64)]) -> Sample {
        let finished = self.finished();
        let running_before = self.started > finished;
        self.batch_time += INTERVAL_MS;
        let t0 = Instant::now();
        self.store.begin_batch(self.batch_time).expect("begin");
        for &(k, v) in batch {
            self.op.put(k, v).expect("put");
        }
        let t1 = Instant::now();
        self.store.commit_batch(self.batch_time).expect("commit");
        let t2 = Instant::now();
        let after_freeze = self.froze;
        self.froze = self.store.stats().batches_since_snapshot == 0;
        if self.froze {
            self.started += 1;
        }
        let during_snapshot =
            running_before || self.finished() != finished || self.snapshot_running();
        Sample {
            apply_us: us(t1 - t0),
            commit_us: us(t2 - t1),
            during_snapshot,
            after_freeze,
        }
    }
}

/// A redb database holding the same table.
struct Redb {
    db: Database,
}

impl Redb {
    fn create(path: &Path) -> Redb {
        let db = Database::create(path).expect("redb create");
        Redb { db }
    }

    fn fill(&mut self, keys: &Keys) {
        let mut txn = self.db.begin_write().expect("begin_write");
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        {
            let mut table = txn.open_table(TABLE).expect("open_table");
            for (i, k) in keys.keys.iter().enumerate() {
                table.insert(k, i as u64).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    fn run_batch(&mut self, batch: &[(Key, u64)]) -> Sample {
        let t0 = Instant::now();
        let mut txn = self.db.begin_write().expect("begin_write");
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        {
            let mut table = txn.open_table(TABLE).expect("open_table");
            for (k, v) in batch {
                table.insert(k, v).expect("insert");
            }
        }
        let t1 = Instant::now();
        txn.commit().expect("commit");
        let t2 = Instant::now();
        Sample {
            apply_us: us(t1 - t0),
            commit_us: us(t2 - t1),
            during_snapshot: false,
            after_freeze: false,
        }
    }
}

/// Untimed batches before each turn of a subject: the first batch after
/// another subject ran finds cold caches, which a store in a real batch
/// loop would not.
const WARMUP: usize = 2;

/// CPU time of the whole machine and of this process, from /proc (Linux;
/// zeros elsewhere), to tell how much else ran during a measurement.
#[derive(Clone, Copy)]
struct CpuMark {
    /// Ticks of all CPUs: busy, and in all.
    busy: u64,
    all: u64,
    /// Ticks of this process.
    mine: u64,
}

impl CpuMark {
    fn now() -> CpuMark {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let all: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let mine = me
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|f| f.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        CpuMark {
            busy: all - idle,
            all,
            mine,
        }
    }

    /// Ticks of other processes since `self`, and ticks of all CPUs.
    fn others_ticks(&self) -> (u64, u64) {
        let now = CpuMark::now();
        let others = (now.busy.saturating_sub(self.busy)).saturating_sub(now.mine - self.mine);
        (others, now.all.saturating_sub(self.all))
    }

    /// Cores used by other processes since `self`, on average.
    fn others_since(&self) -> f64 {
        let (others, all) = self.others_ticks();
        cores_of(others, all)
    }
}

/// `others` ticks out of `all` as cores.
fn cores_of(others: u64, all: u64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if all == 0 {
        0.0
    } else {
        others as f64 / all as f64 * cores
    }
}

// ---------------------------------------------------------------------------

fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, ty) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(at)
                .then(|| (at.len(), ty.to_string(), dev.to_string()))
        })
        .max()
        .unwrap_or_else(|| (0, "unknown".into(), "unknown".into()));
    if fs.1 == "tmpfs" {
        println!("state: WARNING: tmpfs makes fdatasync free; set STREAMWAL_BENCH_DIR to a disk");
    }
    format!(
        "{cores} cores, kernel {kernel}, {} on {}, directory {}",
        fs.1,
        fs.2,
        dir.display()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let cfg = config();
    let root = tempfile::tempdir_in(&cfg.dir).expect("tempdir");
    println!("state: {}", machine(root.path()));
    println!(
        "state: {} keys large, {} small, {} changed per batch, load average at start {}",
        cfg.large_keys,
        cfg.small_keys,
        cfg.changed,
        loadavg()
    );
    // `cargo bench` passes `--bench`; a filter argument picks phases by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let started = Instant::now();
    type Phase = fn(&Config, &Path);
    let phases: [(&str, Phase); 3] = [
        ("commit", phase_commit_cost),
        ("snapshot", phase_snapshot_latency),
        ("recovery", phase_recovery),
    ];
    for (name, phase) in phases {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            phase(&cfg, &root.path().join(name));
        }
    }
    println!();
    println!(
        "state: {:.0} s in all, load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}
