//! Side by side, in one process, on one file system: the disk's limit,
//! `streamwal`, and `okaywal`, every commit durable.
//!
//! ```text
//! cargo bench --bench compare                  # the full table (~5 minutes)
//! STREAMWAL_COMPARE_SECS=0.5 cargo bench --bench compare   # a quick look
//! cargo bench --bench compare -- "4 KiB"       # only workloads whose label has this
//! ```
//!
//! Under `cargo test --all-targets` it runs every point once for 20 ms, as a
//! smoke test.
//!
//! Environment:
//! - `STREAMWAL_BENCH_DIR`: where the logs go (default: Cargo's target tmp
//!   directory). It must be on the disk you care about: on tmpfs
//!   `fdatasync` is free and every figure is meaningless.
//! - `STREAMWAL_COMPARE_SECS`: seconds per measured run (default 2).
//! - `STREAMWAL_COMPARE_REPS`: runs per system and workload (default 3;
//!   the table shows the median).
//!
//! The limit is a plain loop over a preallocated file whose blocks are
//! already written (the cheapest case for `fdatasync`, see
//! docs/PERFORMANCE.md): one `pwrite` + `fdatasync` per record for small
//! records, `threads` records in one `pwrite` + one `fdatasync` for
//! concurrent workloads (what a perfect group commit would do), and for 1 MiB
//! records sequential `pwrite`s followed by one `fdatasync` at the end.
//! Systems run in rotating order within each repetition, so drift of the
//! machine affects all of them alike.

mod common;
use common::{bench_root, payload, test_mode, zero_fill};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Limit,
    Streamwal,
    Okaywal,
}

const SYSTEMS: [System; 3] = [System::Limit, System::Streamwal, System::Okaywal];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Limit => "limit",
            System::Streamwal => "streamwal",
            System::Okaywal => "okaywal",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Workload {
    payload: usize,
    threads: usize,
}

impl Workload {
    fn label(&self) -> String {
        let size = match self.payload {
            n if n >= 1 << 20 => format!("{} MiB", n >> 20),
            n if n >= 1 << 10 => format!("{} KiB", n >> 10),
            n => format!("{n} B"),
        };
        format!("{size} x{}", self.threads)
    }
    /// Large records: the limit is sequential writes plus one final sync.
    fn streaming(&self) -> bool {
        self.payload >= 1 << 20
    }
}

const WORKLOADS: [Workload; 8] = [
    Workload {
        payload: 100,
        threads: 1,
    },
    Workload {
        payload: 4096,
        threads: 1,
    },
    Workload {
        payload: 4096,
        threads: 4,
    },
    Workload {
        payload: 4096,
        threads: 16,
    },
    Workload {
        payload: 4096,
        threads: 64,
    },
    Workload {
        payload: 64 << 10,
        threads: 1,
    },
    Workload {
        payload: 256 << 10,
        threads: 1,
    },
    Workload {
        payload: 1 << 20,
        threads: 1,
    },
];

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Run {
    records: u64,
    elapsed: Duration,
    /// Per-append latencies in microseconds (empty for the limit's
    /// streaming form, which has no per-record commit).
    latencies_us: Vec<u32>,
}

impl Run {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

struct Config {
    secs: Duration,
    reps: usize,
    dir: PathBuf,
}

fn config() -> Config {
    // Under `cargo test --all-targets` (no `--bench` argument) only check
    // that every system runs every workload.
    let default_secs = if test_mode() { 0.02 } else { 2.0 };
    let secs = std::env::var("STREAMWAL_COMPARE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(default_secs);
    let reps = std::env::var("STREAMWAL_COMPARE_REPS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(if test_mode() { 1 } else { 3 })
        .max(1);
    Config {
        secs: Duration::from_secs_f64(secs),
        reps,
        dir: bench_root(),
    }
}

/// Run `threads` workers that each call `op` until the deadline; returns
/// the total count and merged latencies.
fn drive<F>(threads: usize, secs: Duration, op: F) -> Run
where
    F: Fn(usize) + Sync,
{
    let barrier = Barrier::new(threads + 1);
    let per_thread_cap = 1 << 20;
    let (results, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per_thread_cap);
                    barrier.wait();
                    let deadline = Instant::now() + secs;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= deadline {
                            break;
                        }
                        op(t);
                        let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        if lat.len() < per_thread_cap {
                            lat.push(us);
                        }
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Vec<u32>> = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect();
        (results, start.elapsed())
    });
    let latencies_us: Vec<u32> = results.into_iter().flatten().collect();
    Run {
        records: latencies_us.len() as u64,
        elapsed,
        latencies_us,
    }
}

/// A file of `bytes` whose blocks are all written and durable, so that
/// later overwrites commit no metadata.
fn preallocated(path: &Path, bytes: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("create limit file");
    let len = file.metadata().expect("stat").len();
    if len < bytes {
        zero_fill(&file, bytes);
    }
    file
}

/// The limit: `pwrite` + `fdatasync` of one record per thread-round into a
/// preallocated file; with `threads > 1`, `threads` records in one write
/// and one sync, as a perfect group commit would.
fn run_limit(w: Workload, cfg: &Config, file: &File, file_bytes: u64) -> Run {
    if w.streaming() {
        let data = payload(w.payload);
        let start = Instant::now();
        let mut off = 0;
        while off + data.len() as u64 <= file_bytes && start.elapsed() < cfg.secs {
            file.write_all_at(&data, off).expect("write");
            off += data.len() as u64;
        }
        file.sync_data().expect("fdatasync");
        return Run {
            records: off / data.len() as u64,
            elapsed: start.elapsed(),
            latencies_us: Vec::new(),
        };
    }
    let data = payload(w.payload * w.threads);
    let mut off = 0u64;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(1 << 20);
    while start.elapsed() < cfg.secs {
        let t0 = Instant::now();
        if off + data.len() as u64 > file_bytes {
            off = 0;
        }
        file.write_all_at(&data, off).expect("write");
        file.sync_data().expect("fdatasync");
        off += data.len() as u64;
        let us = t0.elapsed().as_micros() as u32;
        lat.extend(std::iter::repeat_n(us, w.threads));
    }
    Run {
        records: lat.len() as u64,
        elapsed: start.elapsed(),
        latencies_us: lat,
    }
}

/// streamwal's options: the defaults, except where the environment says
/// otherwise (`STREAMWAL_COMPARE_SEGMENT_MIB`, `STREAMWAL_COMPARE_PREPARE_AHEAD=0`,
/// `STREAMWAL_COMPARE_PREALLOCATE=0`, `STREAMWAL_COMPARE_SYNC=never`), for
/// the profile notes in docs/PERFORMANCE.md. The table is then no longer a
/// durable comparison; the header line says which options ran.
fn streamwal_options() -> streamwal::WalOptions {
    let mut opts = streamwal::WalOptions::default();
    if test_mode() {
        // The smoke run under `cargo test`: small segments, little zero-fill.
        opts.segment_bytes = 1 << 20;
    }
    if std::env::var("STREAMWAL_COMPARE_SYNC").as_deref() == Ok("never") {
        opts.sync_policy = streamwal::SyncPolicy::Never;
    }
    if let Some(mib) = std::env::var("STREAMWAL_COMPARE_SEGMENT_MIB")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        opts.segment_bytes = mib << 20;
    }
    if std::env::var("STREAMWAL_COMPARE_PREPARE_AHEAD").as_deref() == Ok("0") {
        opts.prepare_ahead = false;
    }
    if std::env::var("STREAMWAL_COMPARE_PREALLOCATE").as_deref() == Ok("0") {
        opts.preallocate = false;
    }
    opts
}

fn run_streamwal(w: Workload, cfg: &Config, dir: &Path) -> Run {
    let wal = streamwal::Wal::open(dir, streamwal_options()).expect("open");
    let data = payload(w.payload);
    let run = drive(w.threads, cfg.secs, |_| {
        wal.append(&data).expect("append");
    });
    let stats = wal.stats();
    assert_eq!(stats.records_appended, run.records, "every append counted");
    wal.close().expect("close");
    run
}

#[derive(Debug)]
struct NoCheckpoint;

impl okaywal::LogManager for NoCheckpoint {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }
    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_okaywal(w: Workload, cfg: &Config, dir: &Path) -> Run {
    // The same file size as streamwal's segments, checkpointing (and so
    // moving to another file) at three quarters of it, okaywal's own default
    // ratio: a file is then never extended past its preallocation.
    let file_bytes: u32 = if test_mode() { 1 << 20 } else { 64 << 20 };
    let log = okaywal::Configuration::default_for(dir)
        .preallocate_bytes(file_bytes)
        .checkpoint_after_bytes(u64::from(file_bytes) / 4 * 3)
        .open(NoCheckpoint)
        .expect("okaywal open");
    let data = payload(w.payload);
    let run = drive(w.threads, cfg.secs, |_| {
        let mut entry = log.begin_entry().expect("begin_entry");
        entry.write_chunk(&data).expect("write_chunk");
        entry.commit().expect("commit");
    });
    log.shutdown().expect("okaywal shutdown");
    run
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

/// A description of the machine and the directory's file system, and the
/// file system's type.
fn machine(dir: &Path) -> (String, String) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // The mount with the longest prefix of the directory names its file system.
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
    let described = format!(
        "{cores} cores, kernel {kernel}, {} on {}, directory {}",
        fs.1,
        fs.2,
        dir.display()
    );
    (described, fs.1)
}

struct Row {
    workload: Workload,
    rates: [f64; 3],
    p50: [u32; 3],
    p99: [u32; 3],
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks workloads.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cfg = config();
    let root = tempfile::tempdir_in(&cfg.dir).expect("tempdir");
    let (described, fs_type) = machine(root.path());
    println!("compare: {described}");
    if fs_type == "tmpfs" {
        println!("compare: WARNING: tmpfs makes fdatasync free; set STREAMWAL_BENCH_DIR to a disk");
    }
    println!(
        "compare: {:.1} s per run, {} runs per point, median shown",
        cfg.secs.as_secs_f64(),
        cfg.reps
    );
    let o = streamwal_options();
    println!(
        "compare: streamwal segment_bytes={} preallocate={} prepare_ahead={} sync_policy={:?}",
        o.segment_bytes, o.preallocate, o.prepare_ahead, o.sync_policy
    );

    // The limit's files: big enough that a run rarely wraps around (small
    // records) or fills them (1 MiB records, where filling ends the run).
    let scale = if test_mode() { 16 } else { 1 };
    let small_file_bytes = (256u64 << 20) / scale;
    let big_file_bytes = (2u64 << 30) / scale;
    let mut limit_files: Vec<(u64, Arc<File>)> = Vec::new();
    let mut limit_file = |bytes: u64| -> Arc<File> {
        if let Some((_, f)) = limit_files.iter().find(|(b, _)| *b == bytes) {
            return f.clone();
        }
        let path = root.path().join(format!("limit-{bytes}"));
        let f = Arc::new(preallocated(&path, bytes));
        limit_files.push((bytes, f.clone()));
        f
    };

    let mut rows = Vec::new();
    let mut run_id = 0u64;
    for w in WORKLOADS {
        if let Some(f) = &filter
            && !w.label().contains(f.as_str())
        {
            continue;
        }
        let file_bytes = if w.streaming() {
            big_file_bytes
        } else {
            small_file_bytes
        };
        let file = limit_file(file_bytes);
        let mut runs: [Vec<Run>; 3] = Default::default();
        for rep in 0..cfg.reps {
            for k in 0..SYSTEMS.len() {
                let i = (k + rep) % SYSTEMS.len();
                run_id += 1;
                let dir = root.path().join(format!("run-{run_id}"));
                let run = match SYSTEMS[i] {
                    System::Limit => run_limit(w, &cfg, &file, file_bytes),
                    System::Streamwal => run_streamwal(w, &cfg, &dir),
                    System::Okaywal => run_okaywal(w, &cfg, &dir),
                };
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!(
                    "  {:<12} {:<10} run {}: {:>12.0} records/s",
                    w.label(),
                    SYSTEMS[i].name(),
                    rep + 1,
                    run.records_per_sec()
                );
                runs[i].push(run);
            }
        }
        let mut row = Row {
            workload: w,
            rates: [0.0; 3],
            p50: [0; 3],
            p99: [0; 3],
        };
        for (i, sys_runs) in runs.iter().enumerate() {
            row.rates[i] = median(sys_runs.iter().map(Run::records_per_sec).collect());
            let mut all: Vec<u32> = sys_runs
                .iter()
                .flat_map(|r| r.latencies_us.iter().copied())
                .collect();
            all.sort_unstable();
            row.p50[i] = percentile(&all, 0.50);
            row.p99[i] = percentile(&all, 0.99);
        }
        rows.push(row);
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| workload | unit | limit | streamwal | okaywal | streamwal/limit | streamwal/okaywal |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let w = r.workload;
        let (unit, scale) = if w.streaming() {
            ("MB/s", w.payload as f64 / 1e6)
        } else {
            ("records/s", 1.0)
        };
        let [l, s, o] = r.rates.map(|x| x * scale);
        println!(
            "| {} | {unit} | {l:.0} | {s:.0} | {o:.0} | {:.2} | {:.2} |",
            w.label(),
            s / l,
            s / o
        );
    }
    println!();
    println!(
        "| workload | streamwal p50 / p99 (us) | okaywal p50 / p99 (us) | limit p50 / p99 (us) |"
    );
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} / {} | {} / {} | {} / {} |",
            r.workload.label(),
            r.p50[1],
            r.p99[1],
            r.p50[2],
            r.p99[2],
            r.p50[0],
            r.p99[0]
        );
    }
}
