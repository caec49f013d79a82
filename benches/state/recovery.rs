//! The recovery phase: 1M keys from a snapshot and 100 deltas, against
//! redb opened after a clean close and from a crash image.

use super::*;

// ---------------------------------------------------------------------------
// Phase 3 and 4: recovery and memory.

/// Drop every file's pages under `path` from the page cache (they are
/// clean: everything was synced), so the next read comes from the disk.
fn drop_cache(path: &Path) {
    #[cfg(target_os = "linux")]
    {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    drop_cache(&e.path());
                }
            }
        } else if let Ok(f) = std::fs::File::open(path) {
            let _ = f.sync_all();
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// What a recovery opens.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The state store with the snapshot and the deltas.
    State,
    /// The state store with the snapshot alone (no deltas after it).
    StateSnapshotOnly,
    /// redb after a clean close.
    RedbClean,
    /// redb from a copy of its file taken before the close.
    RedbCrash,
}

struct Histories {
    state: PathBuf,
    state_snapshot_only: PathBuf,
    redb: PathBuf,
    crash_image: PathBuf,
    /// Where a crash image is copied to be opened (repair rewrites it).
    crash_open: PathBuf,
    keys: usize,
    deltas: usize,
}

/// Recover `target`: the time to the open alone and to the keys in
/// memory.
fn recover(h: &Histories, target: Target, cold: bool) -> (Duration, Duration) {
    let path = match target {
        Target::State => &h.state,
        Target::StateSnapshotOnly => &h.state_snapshot_only,
        Target::RedbClean => &h.redb,
        Target::RedbCrash => {
            std::fs::copy(&h.crash_image, &h.crash_open).expect("copy the crash image");
            &h.crash_open
        }
    };
    if cold {
        drop_cache(path);
    }
    let t = Instant::now();
    match target {
        Target::State | Target::StateSnapshotOnly => {
            let store = Arc::new(StateStore::open(path, state_options(u64::MAX)).expect("open"));
            let opened = t.elapsed();
            let op = store.operator::<Key, u64>(OPERATOR).expect("operator");
            let total = t.elapsed();
            assert_eq!(op.len().unwrap(), h.keys, "every key recovered");
            let r = store.report();
            let deltas = if target == Target::State { h.deltas } else { 0 };
            assert_eq!(r.deltas_replayed.len(), deltas);
            assert!(r.snapshot_used.is_some(), "recovered from the snapshot");
            (opened, total)
        }
        Target::RedbClean | Target::RedbCrash => {
            let db = Database::open(path).expect("redb open");
            let opened = t.elapsed();
            let map = read_all(&db);
            let total = t.elapsed();
            assert_eq!(map.len(), h.keys, "every key read");
            (opened, total)
        }
    }
}

fn read_all(db: &Database) -> BTreeMap<Key, u64> {
    let rtxn = db.begin_read().expect("begin_read");
    let table = rtxn.open_table(TABLE).expect("open_table");
    table
        .iter()
        .expect("iter")
        .map(|e| {
            let (k, v) = e.expect("entry");
            (k.value(), v.value())
        })
        .collect()
}

fn secs_median(v: &[Duration]) -> f64 {
    median(v.iter().map(Duration::as_secs_f64).collect())
}

pub(super) fn phase_recovery(cfg: &Config, root: &Path) {
    let n = cfg.large_keys;
    println!();
    println!(
        "## Recovery: {n} keys from a snapshot and {} deltas of {} keys ({} opens each)",
        cfg.recovery_deltas, cfg.changed, cfg.reps
    );
    let h = Histories {
        state: root.join("state"),
        state_snapshot_only: root.join("state-snapshot-only"),
        redb: root.join("recover.redb"),
        crash_image: root.join("recover-crash.redb"),
        crash_open: root.join("recover-crash-open.redb"),
        keys: n,
        deltas: cfg.recovery_deltas,
    };
    const SEED: u64 = 0x0123_4567_89AB_CDEF;

    // The state store's history: every key in one batch, a snapshot, then
    // the deltas.
    let snapshot_secs;
    {
        let mut keys = Keys::new(n, SEED);
        let mut s = State::open(&h.state, state_options(u64::MAX));
        s.fill(&keys);
        let t = Instant::now();
        s.store.snapshot_now().expect("snapshot");
        snapshot_secs = t.elapsed().as_secs_f64();
        for _ in 0..cfg.recovery_deltas {
            let b = keys.batch(cfg.changed);
            s.run_batch(&b);
        }
        // The same state with no deltas after its snapshot.
        let mut s = State::open(&h.state_snapshot_only, state_options(u64::MAX));
        s.fill(&keys);
        s.store.snapshot_now().expect("snapshot");
    }
    let snapshot_bytes = dir_bytes(&h.state.join(streamwal::state::STATE_SNAPSHOTS_NAME));
    let log_bytes = dir_bytes(&h.state.join(streamwal::state::STATE_LOG_NAME));

    // redb's history: the same keys and batches.
    {
        let mut keys = Keys::new(n, SEED);
        let mut r = Redb::create(&h.redb);
        r.fill(&keys);
        for _ in 0..cfg.recovery_deltas {
            let b = keys.batch(cfg.changed);
            r.run_batch(&b);
        }
        // Every commit was durable: the file's bytes now are what a crash
        // at this point leaves on the disk.
        std::fs::copy(&h.redb, &h.crash_image).expect("copy the crash image");
    }
    let redb_bytes = std::fs::metadata(&h.redb).map_or(0, |m| m.len());

    let cases = [
        ("streamwal state store", Target::State, false),
        (
            "streamwal state store, snapshot only",
            Target::StateSnapshotOnly,
            false,
        ),
        ("redb, after a clean close", Target::RedbClean, false),
        ("redb, from a crash image", Target::RedbCrash, false),
        ("streamwal state store, cold cache", Target::State, true),
        (
            "redb, after a clean close, cold cache",
            Target::RedbClean,
            true,
        ),
        (
            "redb, from a crash image, cold cache",
            Target::RedbCrash,
            true,
        ),
    ];
    let mut opens: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut totals: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for rep in 0..cfg.reps {
        for k in 0..cases.len() {
            let i = (k + rep) % cases.len();
            let (label, target, cold) = cases[i];
            let mark = CpuMark::now();
            let (open, total) = recover(&h, target, cold);
            eprintln!(
                "  recovery {label:<40} run {}: {:.3} s (open {:.3} s; other processes {:.2} cores)",
                rep + 1,
                total.as_secs_f64(),
                open.as_secs_f64(),
                mark.others_since()
            );
            opens[i].push(open);
            totals[i].push(total);
        }
    }

    println!();
    println!("| recovery | keys in memory (s) | open alone (s) |");
    println!("|---|---:|---:|");
    for (i, (label, _, _)) in cases.iter().enumerate() {
        println!(
            "| {label} | {:.3} | {:.3} |",
            secs_median(&totals[i]),
            secs_median(&opens[i])
        );
    }
    println!();
    println!(
        "streamwal / redb (keys in memory, page cache): {:.2} against a clean close, {:.2} against a crash image",
        secs_median(&totals[0]) / secs_median(&totals[2]),
        secs_median(&totals[0]) / secs_median(&totals[3])
    );
    println!(
        "on disk: state snapshot {:.1} MB, state log {:.1} MB ({} deltas); redb file {:.1} MB; writing the snapshot (snapshot_now) took {:.3} s",
        snapshot_bytes as f64 / 1e6,
        log_bytes as f64 / 1e6,
        cfg.recovery_deltas,
        redb_bytes as f64 / 1e6,
        snapshot_secs
    );

    // Memory, in untimed opens: the allocator counts only here.
    let (state_heap, state_peak) = {
        let counted = Counted::start();
        let store = Arc::new(StateStore::open(&h.state, state_options(u64::MAX)).expect("open"));
        let op = store.operator::<Key, u64>(OPERATOR).expect("operator");
        let got = (counted.live(), counted.peak());
        drop((op, store, counted));
        got
    };
    let redb_heap = {
        let counted = Counted::start();
        let db = Database::open(&h.redb).expect("redb open");
        let map = read_all(&db);
        let got = counted.live();
        drop((map, db, counted));
        got
    };
    let btree = {
        let keys = Keys::new(n, SEED);
        let counted = Counted::start();
        let map: BTreeMap<Key, u64> = keys.keys.iter().map(|k| (*k, 0)).collect();
        let got = counted.live();
        drop((map, counted));
        got
    };
    let _ = std::fs::remove_file(&h.crash_open);
    println!();
    println!("## Memory ({n} keys; heap bytes counted by a global allocator)");
    println!();
    println!("| what | bytes | bytes per key |");
    println!("|---|---:|---:|");
    for (label, b) in [
        ("state store after recovery", state_heap),
        ("state store, peak during recovery", state_peak),
        ("redb after open + reading into a BTreeMap", redb_heap),
        ("BTreeMap<[u8; 16], u64> alone", btree),
    ] {
        println!("| {label} | {b} | {:.1} |", b as f64 / n as f64);
    }
}
