//! Proves the log's lifecycle contract on the real file system: exclusive locking (in this process and from another process), fail-stop poisoning after an injected EIO or ENOSPC with every acknowledged record surviving reopen, the record-size bound, rollover across many small segments, retention by LSN and by time across reopen, the sync policies, stray and temporary files, missing and foreign segments, and read-only salvage mode.

use crate::common::test_name;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::{Duration, Instant};

use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::storage::{FaultPlan, FaultyStorage, StdStorage};
use streamwal::wal::format::SegmentHeader;
use streamwal::wal::segment_file_name;
use streamwal::{CorruptionKind, Error, RecordHandle, RecoveryMode, SyncPolicy, Wal, WalOptions};

type Records = Vec<(RecordHandle, Vec<u8>)>;

// ---------------------------------------------------------------- helpers

/// 4 KiB segments: the smallest allowed, so a few records roll over.
fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    }
}

/// 64 KiB segments: every test append of these files fits in one.
fn mid(preallocate: bool) -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        preallocate,
        ..WalOptions::default()
    }
}

/// Deterministic payload `i` of `len` bytes, all nonzero.
fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|j| ((i.wrapping_mul(131) + j * 7) % 251) as u8 + 1)
        .collect()
}

fn all_records(wal: &Wal) -> Records {
    wal.iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("iterating the log")
}

/// Segment files in `dir`, sorted by file name, with the sequence number
/// their name carries.
fn segment_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| {
            let stem = name.strip_suffix(".wal")?;
            (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (name.clone(), stem.parse().unwrap()))
        })
        .collect();
    out.sort();
    out
}

fn segment_seqs(dir: &Path) -> Vec<u64> {
    segment_files(dir).into_iter().map(|(_, s)| s).collect()
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_file_name(seq))
}

fn read_header(path: &Path) -> SegmentHeader {
    let bytes = std::fs::read(path).unwrap();
    SegmentHeader::decode(&bytes[..SEGMENT_HEADER_BYTES as usize]).unwrap()
}

/// Every file (with its bytes) and directory under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn open_faulty(dir: &Path, opts: WalOptions) -> (Wal, Arc<FaultPlan>) {
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(
        Arc::new(StdStorage::new()),
        plan.clone(),
    ));
    let wal = Wal::open_with_storage(storage, dir, opts).expect("open on faulty storage");
    (wal, plan)
}

fn append_all(wal: &Wal, payloads: impl IntoIterator<Item = Vec<u8>>) -> Records {
    payloads
        .into_iter()
        .map(|p| (wal.append(&p).expect("append"), p))
        .collect()
}

fn assert_reads(wal: &Wal, records: &Records) {
    for (h, p) in records {
        assert_eq!(&wal.read(h).expect("read by handle"), p, "lsn {}", h.lsn());
    }
}

fn is_poisoned_err<T: std::fmt::Debug>(r: streamwal::Result<T>) -> bool {
    matches!(r, Err(Error::Poisoned))
}

/// Tests that start child processes run alone; every other test holds a
/// read guard, so that lock tests see only the holders they set up.
///
/// `StdStorage` locks with `flock`, whose lock belongs to the open file
/// description, which a child forked by any thread shares until it execs.
/// The process that took the lock therefore releases it explicitly on drop
/// (a forked child only closes its copy); the test
/// `reopen_is_not_locked_while_another_thread_spawns_processes` guards that.
static PROCESS_SPAWN: RwLock<()> = RwLock::new(());

fn no_spawns() -> RwLockReadGuard<'static, ()> {
    PROCESS_SPAWN.read().unwrap_or_else(|e| e.into_inner())
}

fn spawning() -> RwLockWriteGuard<'static, ()> {
    PROCESS_SPAWN.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- locking

#[test]
fn second_open_in_this_process_is_locked_until_the_first_is_dropped() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let first = Wal::open(&dir, WalOptions::default()).unwrap();
    first.append(b"one").unwrap();

    match Wal::open(&dir, WalOptions::default()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    // A read-only salvage open is excluded too.
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..WalOptions::default()
    };
    assert!(matches!(
        Wal::open(&dir, salvage),
        Err(Error::Locked { .. })
    ));
    // The failed opens did not disturb the holder.
    first.append(b"two").unwrap();
    drop(first);

    let second = Wal::open(&dir, WalOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = all_records(&second).into_iter().map(|r| r.1).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    second.append(b"three").unwrap();
}

const HOLDER_ENV: &str = "STREAMWAL_LIFECYCLE_HOLD_LOCK_DIR";
const HOLDER_TEST: &str = "lock_held_by_another_wal_process_excludes_open";
const HELD: &str = "streamwal-lifecycle-lock-held";

/// A child process holding the directory's lock until its stdin closes.
struct Holder {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn spawn(mut cmd: Command) -> Holder {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lock holder");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Holder { child, stdout }
    }

    /// Block until the child says it holds the lock.
    fn wait_until_held(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            if n == 0 {
                let status = self.child.wait().unwrap();
                panic!("lock holder exited ({status}) before taking the lock");
            }
            if line.contains(HELD) {
                return;
            }
        }
    }

    /// Close its stdin, drain its output, and check it exited cleanly.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "lock holder failed: {status}; {rest}");
    }
}

/// util-linux `flock` on `DIR/LOCK`, if the tool exists.
fn flock_holder(dir: &Path) -> Option<Holder> {
    let available = Command::new("flock")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        return None;
    }
    let mut cmd = Command::new("flock");
    cmd.arg("-n")
        .arg("-x")
        .arg(dir.join("LOCK"))
        .arg("-c")
        .arg(format!("echo {HELD}; read x; exit 0"));
    Some(Holder::spawn(cmd))
}

/// This test binary, re-run so that [`HOLDER_TEST`] opens the log and waits.
fn wal_holder(dir: &Path) -> Holder {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        &test_name(module_path!(), HOLDER_TEST),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HOLDER_ENV, dir);
    Holder::spawn(cmd)
}

/// The child side of [`HOLDER_TEST`]: open, say so, wait for stdin to close.
fn hold_lock_as_child(dir: &Path) {
    let wal = Wal::open(dir, WalOptions::default()).expect("child: open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{HELD}").unwrap();
    out.flush().unwrap();
    drop(out);
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    drop(wal);
}

/// `Wal::open`, turned into a failure if it blocks instead of failing at once.
fn open_or_fail_fast(dir: &Path, opts: WalOptions) -> streamwal::Result<Wal> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Wal::open(&dir, opts));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("Wal::open blocked on a held lock instead of failing at once")
}

fn cross_process_lock(spawn: impl Fn(&Path) -> Holder) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, WalOptions::default()).unwrap();
        wal.append(b"written before the other process").unwrap();
    }
    let mut holder = spawn(&dir);
    holder.wait_until_held();
    for _ in 0..2 {
        match open_or_fail_fast(&dir, WalOptions::default()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir),
            other => panic!("expected Error::Locked while another process holds it, got {other:?}"),
        }
    }
    holder.release();

    let wal = Wal::open(&dir, WalOptions::default()).expect("open after the holder exited");
    let got: Vec<Vec<u8>> = all_records(&wal).into_iter().map(|r| r.1).collect();
    assert_eq!(got, vec![b"written before the other process".to_vec()]);
    assert_eq!(wal.append(b"after").unwrap().lsn(), 2);
}

#[test]
fn lock_held_by_another_wal_process_excludes_open() {
    if let Some(dir) = std::env::var_os(HOLDER_ENV) {
        hold_lock_as_child(Path::new(&dir));
        return;
    }
    let _spawning = spawning();
    cross_process_lock(wal_holder);
}

#[test]
fn lock_held_by_flock_process_excludes_open() {
    let _spawning = spawning();
    cross_process_lock(|dir| flock_holder(dir).unwrap_or_else(|| wal_holder(dir)));
}

/// Dropping a `Wal` releases its directory lock at once, even while a child
/// process forked by another thread still holds a copy of the descriptor
/// (before it execs): an immediate reopen is never `Error::Locked`.
#[test]
fn reopen_is_not_locked_while_another_thread_spawns_processes() {
    let _spawning = spawning();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                Command::new("true").status().expect("run `true`");
            }
        })
    };
    let mut locked = 0;
    for _ in 0..300 {
        for _ in 0..2 {
            match Wal::open(&dir, mid(true)) {
                Ok(wal) => drop(wal),
                Err(Error::Locked { .. }) => locked += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    assert_eq!(
        locked, 0,
        "opens refused right after the only holder was dropped"
    );
}

// ---------------------------------------------------------------- poisoning

/// What one poisoning scenario leaves behind for scenario-specific checks.
struct PoisonOutcome {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    acked: Records,
    reopened: streamwal::RecoveryReport,
    fresh: RecordHandle,
}

/// Append acknowledged records (singly, then as a batch), inject a fault,
/// append `doomed` (which must fail with an error `check` accepts), then
/// check fail-stop while the fault is lifted, reopen on clean storage, and
/// check that every acknowledged record is there and the log accepts appends.
/// `may_reappear`: the doomed record reached the file (only its sync failed),
/// so it may be found after reopen, at the next LSN, byte for byte.
fn poison_case(
    opts: WalOptions,
    sizes: &[usize],
    doomed_len: usize,
    inject: &dyn Fn(&FaultPlan),
    check: &dyn Fn(&Error),
    may_reappear: bool,
) -> PoisonOutcome {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let half = sizes.len() / 2;
    let mut acked = append_all(
        &wal,
        sizes[..half]
            .iter()
            .enumerate()
            .map(|(i, &n)| payload(i as u64, n)),
    );
    let batch: Vec<Vec<u8>> = sizes[half..]
        .iter()
        .enumerate()
        .map(|(i, &n)| payload((half + i) as u64, n))
        .collect();
    let handles = wal.append_batch(&batch).expect("append_batch");
    acked.extend(handles.into_iter().zip(batch));
    let last_acked = acked.last().map_or(0, |r| r.0.lsn());

    let doomed = payload(999, doomed_len);
    inject(&plan);
    let err = wal
        .append(&doomed)
        .expect_err("the append that hits the fault must fail");
    check(&err);
    assert!(wal.is_poisoned(), "a failed write or sync must poison");

    // The storage works again (as a kernel reports success after a failed
    // fsync); the log must still refuse, and must not touch the disk.
    plan.clear();
    let (writes, syncs) = (plan.writes(), plan.file_syncs());
    assert!(is_poisoned_err(wal.append(b"after the fault")));
    assert!(is_poisoned_err(wal.append_at(b"after the fault", 5)));
    assert!(is_poisoned_err(wal.append_batch(&[b"x", b"y"])));
    assert!(is_poisoned_err(wal.sync()));
    assert!(is_poisoned_err(wal.append(b"still refused")));
    assert!(is_poisoned_err(wal.purge_before_lsn(u64::MAX)));
    assert_eq!(plan.writes(), writes, "a poisoned log wrote");
    assert_eq!(plan.file_syncs(), syncs, "a poisoned log synced");
    assert!(wal.is_poisoned());
    // Still readable: exactly what was acknowledged.
    assert_reads(&wal, &acked);
    assert_eq!(all_records(&wal), acked);
    assert!(is_poisoned_err(wal.close()));

    let wal = Wal::open(&dir, opts.clone()).expect("reopen after poisoning");
    let reopened = wal.recovery_report().clone();
    let mut got = all_records(&wal);
    assert!(got.len() >= acked.len(), "acknowledged records lost");
    let extra = got.split_off(acked.len());
    assert_eq!(got, acked, "acknowledged records changed");
    if may_reappear {
        assert!(
            extra.len() <= 1,
            "records that were never appended: {extra:?}"
        );
        if let Some((h, p)) = extra.first() {
            assert_eq!(h.lsn(), last_acked + 1);
            assert_eq!(p, &doomed, "the unknown record came back different");
        }
    } else {
        assert!(extra.is_empty(), "a failed write left a record: {extra:?}");
    }
    let next = last_acked + 1 + extra.len() as u64;
    let fresh = wal.append(b"after reopen").expect("append after reopen");
    assert_eq!(fresh.lsn(), next);
    assert_eq!(wal.read(&fresh).unwrap(), b"after reopen");
    drop(wal);

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(
        wal.recovery_report().torn_bytes,
        0,
        "the first reopen's repair left damage behind"
    );
    let all = all_records(&wal);
    assert_eq!(all.len(), acked.len() + extra.len() + 1);
    assert_eq!(&all[..acked.len()], &acked[..]);
    assert_eq!(all.last().unwrap(), &(fresh, b"after reopen".to_vec()));
    PoisonOutcome {
        _tmp: tmp,
        dir,
        acked,
        reopened,
        fresh,
    }
}

const SIZES: &[usize] = &[10, 200, 0, 77, 1000, 33, 64, 5];

#[test]
fn failed_fsync_poisons_and_acknowledged_records_survive() {
    let _no_spawns = no_spawns();
    poison_case(
        mid(true),
        SIZES,
        300,
        &|plan| plan.fail_file_sync_after(1),
        &|e| {
            assert!(
                matches!(
                    e,
                    Error::Io {
                        op: "sync_data",
                        ..
                    }
                ),
                "expected the sync's Io error, got {e:?}"
            )
        },
        true,
    );
}

#[test]
fn failed_fsync_of_a_sealing_segment_poisons() {
    let _no_spawns = no_spawns();
    // Three 1000-byte records fill a 4 KiB segment; the doomed fourth rolls
    // over, and the sync that seals the full segment fails.
    poison_case(
        small(),
        &[1000, 1000, 1000],
        1000,
        &|plan| plan.fail_file_sync_after(1),
        &|e| assert!(matches!(e, Error::Io { .. }), "got {e:?}"),
        true,
    );
}

#[test]
fn failed_write_poisons_and_acknowledged_records_survive() {
    let _no_spawns = no_spawns();
    for preallocate in [true, false] {
        poison_case(
            mid(preallocate),
            SIZES,
            300,
            &|plan| plan.fail_write_after(1),
            &|e| match e {
                Error::Io {
                    op: "write",
                    source,
                    ..
                } => assert_ne!(source.kind(), std::io::ErrorKind::StorageFull),
                other => panic!("expected the write's Io error, got {other:?}"),
            },
            false,
        );
    }
}

#[test]
fn failed_write_of_a_new_segment_poisons() {
    let _no_spawns = no_spawns();
    poison_case(
        small(),
        &[1000, 1000, 1000],
        1000,
        &|plan| plan.fail_write_after(1),
        &|e| assert!(matches!(e, Error::Io { .. }), "got {e:?}"),
        false,
    );
}

#[test]
fn enospc_mid_record_poisons_and_reopen_shows_no_partial_record() {
    let _no_spawns = no_spawns();
    let doomed_len = 300usize;
    let frame = FRAME_HEADER_BYTES;
    // Cuts inside the frame header (from the nonzero kind byte on), at its
    // end, and inside the payload.
    let cuts = [5, 17, 39, frame, frame + 1, frame + 150, frame + 299];
    for preallocate in [true, false] {
        for cut in cuts {
            let out = poison_case(
                mid(preallocate),
                SIZES,
                doomed_len,
                &|plan| plan.set_write_budget(cut),
                &|e| match e {
                    Error::Io {
                        op: "write",
                        source,
                        ..
                    } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
                    other => panic!("expected ENOSPC, got {other:?}"),
                },
                false,
            );
            // The partial frame was found as a torn tail, where the doomed
            // record was to go, and zeroed.
            let last = out.acked.last().unwrap().0;
            let at = last.offset() + frame + u64::from(last.len());
            assert_eq!(
                out.reopened.torn_at,
                Some((seg_path(&out.dir, last.segment()), at)),
                "cut {cut}, preallocate {preallocate}"
            );
            // ... and zeroed for good: past the record appended after
            // reopen, nothing of the partial frame is left.
            let bytes = std::fs::read(seg_path(&out.dir, last.segment())).unwrap();
            let fresh_end = out.fresh.offset() + frame + u64::from(out.fresh.len());
            assert_eq!(out.fresh.offset(), at);
            if at + cut > fresh_end {
                let rest = &bytes[fresh_end as usize..(at + cut) as usize];
                assert!(rest.iter().all(|&b| b == 0), "cut {cut}: torn bytes left");
            }
            let torn = out.reopened.torn_bytes;
            if cut > frame {
                assert_eq!(torn, cut, "cut {cut}, preallocate {preallocate}");
            } else {
                assert!((5..=cut).contains(&torn), "cut {cut}: torn {torn}");
            }
        }
    }
}

#[test]
fn failed_fsync_in_sync_call_poisons_under_never() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let written = append_all(&wal, (0..10).map(|i| payload(i, 50)));
    plan.fail_file_sync_after(1);
    let err = wal.sync().expect_err("sync must report the failed fsync");
    assert!(
        matches!(
            err,
            Error::Io {
                op: "sync_data",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(wal.is_poisoned());
    assert!(is_poisoned_err(wal.sync()));
    assert!(is_poisoned_err(wal.append(b"z")));
    assert!(is_poisoned_err(wal.append_batch(&[b"z"])));
    drop(wal);
    // Under Never, appends were acknowledged once written: the page cache
    // still has them.
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), written);
    assert_eq!(wal.append(b"again").unwrap().lsn(), 11);
}

#[test]
fn concurrent_appenders_fail_stop_after_one_failed_fsync() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, mid(true));
    let wal = Arc::new(wal);
    plan.fail_file_sync_after(20);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let p = payload(t * 1000 + i, 64);
                        wal.append(&p).map(|h| (h, p))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<_>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut acked = Vec::new();
    let mut io_errors = 0;
    for per_thread in results {
        let mut failed = false;
        for r in per_thread {
            match r {
                Ok(rec) => {
                    assert!(!failed, "an append succeeded after one failed");
                    acked.push(rec);
                }
                Err(Error::Io { .. }) => {
                    assert!(!failed, "a second Io error after poisoning");
                    failed = true;
                    io_errors += 1;
                }
                Err(Error::Poisoned) => failed = true,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert!(failed, "every thread must see the failure");
    }
    assert_eq!(
        io_errors, 1,
        "exactly the leader of the failed sync reports Io"
    );
    assert!(acked.len() >= 19, "19 syncs succeeded, so >= 19 acks");
    assert!(wal.is_poisoned());
    drop(wal);

    let wal = Wal::open(&dir, mid(true)).unwrap();
    let all = all_records(&wal);
    for (i, (h, _)) in all.iter().enumerate() {
        assert_eq!(h.lsn(), i as u64 + 1, "LSNs after recovery must be dense");
    }
    let by_lsn: BTreeMap<u64, &Vec<u8>> = all.iter().map(|(h, p)| (h.lsn(), p)).collect();
    for (h, p) in &acked {
        assert_eq!(by_lsn.get(&h.lsn()), Some(&p), "acked lsn {} lost", h.lsn());
        assert_eq!(&wal.read(h).unwrap(), p);
    }
}

#[test]
fn a_panicking_storage_fails_the_other_appenders_instead_of_hanging_them() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (wal, plan) = open_faulty(&dir, mid(true));
    let wal = Arc::new(wal);
    let first = wal.append(b"before").unwrap();
    plan.panic_file_sync_after(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut appenders = Vec::new();
    for t in 0..4u64 {
        let (wal, tx) = (wal.clone(), tx.clone());
        appenders.push(std::thread::spawn(move || {
            let results: Vec<bool> = (0..20u64)
                .map(|i| {
                    let p = payload(t * 1000 + i, 64);
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wal.append(&p)));
                    matches!(r, Ok(Ok(_)))
                })
                .collect();
            tx.send(results).unwrap();
        }));
    }
    for _ in 0..4 {
        let results = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an appender hung after the leader's storage panicked");
        assert!(
            results.iter().all(|ok| !ok),
            "nothing syncs after the panic"
        );
    }
    // Each appender has answered; wait until each has also dropped its
    // handle on the log, so that the drop below closes it (its lock too).
    for a in appenders {
        a.join().unwrap();
    }
    assert!(wal.is_poisoned());
    plan.clear();
    drop(wal);
    let wal = Wal::open(&dir, mid(true)).unwrap();
    assert_eq!(wal.read(&first).unwrap(), b"before");
}

// ---------------------------------------------------------------- record size

#[test]
fn record_size_bound_and_records_larger_than_a_segment() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let max = 10_000u32;
    let opts = WalOptions {
        max_record_bytes: max,
        ..small()
    };
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let a = wal.append(&payload(1, 100)).unwrap();

    match wal.append(&vec![7u8; max as usize + 1]) {
        Err(Error::TooLarge { size, max: m }) => {
            assert_eq!((size, m), (u64::from(max) + 1, u64::from(max)));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!wal.is_poisoned(), "TooLarge must not poison");
    // One oversized payload fails the whole batch before anything is written.
    let bad_batch = [payload(2, 10), vec![1u8; max as usize + 1]];
    assert!(matches!(
        wal.append_batch(&bad_batch),
        Err(Error::TooLarge { .. })
    ));
    assert!(!wal.is_poisoned());

    let b = wal.append(&payload(2, 100)).unwrap();
    assert_eq!(b.lsn(), a.lsn() + 1, "a rejected append consumed an LSN");
    let empty = wal.append(b"").unwrap();
    assert_eq!(wal.read(&empty).unwrap(), b"");

    // Exactly the maximum: larger than a 4 KiB segment, so it gets its own.
    let big_payload = payload(3, max as usize);
    let big = wal.append(&big_payload).unwrap();
    assert_eq!(wal.read(&big).unwrap(), big_payload);
    assert_eq!(big.segment(), empty.segment() + 1);
    assert_eq!(big.offset(), SEGMENT_HEADER_BYTES);
    let c = wal.append(&payload(4, 100)).unwrap();
    assert_eq!(
        c.segment(),
        big.segment() + 1,
        "the big record's segment is its own"
    );
    let big_file = std::fs::metadata(seg_path(&dir, big.segment())).unwrap();
    assert!(big_file.len() >= SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + u64::from(max));
    drop(wal);

    let expect = vec![
        (a, payload(1, 100)),
        (b, payload(2, 100)),
        (empty, Vec::new()),
        (big, big_payload.clone()),
        (c, payload(4, 100)),
    ];
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), expect);
    assert_reads(&wal, &expect);
    drop(wal);

    // A writer with a smaller bound still reads records its predecessor
    // wrote under a larger one, and enforces its own bound on append.
    let smaller = WalOptions {
        max_record_bytes: 100,
        ..small()
    };
    let wal = Wal::open(&dir, smaller).unwrap();
    assert_eq!(wal.read(&big).unwrap(), big_payload);
    assert_eq!(all_records(&wal), expect);
    assert!(matches!(
        wal.append(&[0u8; 101]),
        Err(Error::TooLarge {
            size: 101,
            max: 100
        })
    ));
    wal.append(&[9u8; 100]).unwrap();
}

// ---------------------------------------------------------------- rollover

#[test]
fn rollover_across_dozens_of_small_segments() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let n = 600u64;
    let wal = Wal::open(&dir, small()).unwrap();
    let records = append_all(
        &wal,
        (0..n).map(|i| payload(i, 20 + (i as usize * 37) % 300)),
    );
    assert_reads(&wal, &records);
    drop(wal);

    for (i, (h, _)) in records.iter().enumerate() {
        assert_eq!(h.lsn(), i as u64 + 1);
    }
    let files = segment_files(&dir);
    let seqs: Vec<u64> = files.iter().map(|f| f.1).collect();
    assert!(seqs.len() >= 24, "only {} segments", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // File-name order is log order: headers carry the sequence number and
    // first LSNs that increase with it, matching the handles.
    let mut first_of: BTreeMap<u64, u64> = BTreeMap::new();
    for (h, _) in &records {
        first_of.entry(h.segment()).or_insert(h.lsn());
    }
    let mut prev_first = 0;
    for (name, seq) in &files {
        assert_eq!(name, &segment_file_name(*seq));
        assert_eq!(name.len(), 24);
        let header = read_header(&dir.join(name));
        assert_eq!(header.segment_seq, *seq);
        assert!(header.first_lsn > prev_first);
        prev_first = header.first_lsn;
        assert_eq!(Some(&header.first_lsn), first_of.get(seq), "segment {seq}");
    }
    for w in records.windows(2) {
        let (x, y) = (w[0].0, w[1].0);
        assert!(
            y.segment() == x.segment() && y.offset() > x.offset()
                || y.segment() == x.segment() + 1 && y.offset() == SEGMENT_HEADER_BYTES
        );
    }

    let wal = Wal::open(&dir, small()).unwrap();
    let report = wal.recovery_report();
    assert_eq!(report.segments, seqs.len());
    assert_eq!(report.records, n);
    assert_eq!((report.first_lsn, report.last_lsn), (Some(1), Some(n)));
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(all_records(&wal), records);
    assert_reads(&wal, &records);
    // A handle survives serialization.
    let json = serde_json::to_string(&records[300].0).unwrap();
    let h: RecordHandle = serde_json::from_str(&json).unwrap();
    assert_eq!(wal.read(&h).unwrap(), records[300].1);

    // iter_from starts exactly at the asked LSN around every boundary.
    for &first in first_of.values() {
        for lsn in [first - 1, first, first + 1] {
            if lsn == 0 || lsn > n {
                continue;
            }
            let got: Records = wal.iter_from(lsn).map(|r| r.unwrap()).collect();
            assert_eq!(got, records[lsn as usize - 1..], "iter_from({lsn})");
        }
    }
    assert_eq!(wal.iter_from(n + 1).count(), 0);
    assert_eq!(wal.iter_from(n + 100).count(), 0);
    let next = wal.append(b"next").unwrap();
    assert_eq!(next.lsn(), n + 1);
}

// ---------------------------------------------------------------- retention

/// Check a log whose records before `first` were purged.
fn assert_retained(wal: &Wal, records: &Records, first: u64) {
    let kept = &records[first as usize - 1..];
    assert_eq!(wal.first_lsn(), Some(first));
    assert_eq!(all_records(wal), kept);
    assert_reads(wal, &kept.to_vec());
    for (h, _) in &records[..first as usize - 1] {
        match wal.read(h) {
            Err(Error::NotFound { lsn, segment }) => {
                assert_eq!((lsn, segment), (h.lsn(), h.segment()));
            }
            other => panic!("read of purged lsn {}: {other:?}", h.lsn()),
        }
    }
    for lsn in [1, first - 1] {
        if lsn == 0 || lsn >= first {
            continue;
        }
        let mut it = wal.iter_from(lsn);
        match it.next() {
            Some(Err(Error::NotFound { lsn: l, .. })) => assert_eq!(l, lsn),
            other => panic!("iter_from(purged {lsn}) gave {other:?}"),
        }
    }
    let got: Records = wal.iter_from(first).map(|r| r.unwrap()).collect();
    assert_eq!(got, kept);
}

#[test]
fn purge_before_lsn_removes_only_whole_sealed_segments() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    // A 1000-byte payload makes a 1040-byte frame: three fit in a 4 KiB
    // segment after its 64-byte header.
    let records = append_all(&wal, (0..30).map(|i| payload(i, 1000)));
    for (i, (h, _)) in records.iter().enumerate() {
        assert_eq!(h.segment(), i as u64 / 3 + 1, "lsn {}", h.lsn());
    }
    assert_eq!(segment_seqs(&dir), (1..=10).collect::<Vec<_>>());

    // LSN 11 is the middle record of segment 4: segments 1..=3 go.
    assert_eq!(wal.purge_before_lsn(11).unwrap(), 3);
    assert_eq!(segment_seqs(&dir), (4..=10).collect::<Vec<_>>());
    assert_retained(&wal, &records, 10);
    assert_eq!(wal.purge_before_lsn(11).unwrap(), 0);
    assert_eq!(wal.purge_before_lsn(12).unwrap(), 0);
    // LSN 13 is the first of segment 5: segment 4 (10..=12) goes.
    assert_eq!(wal.purge_before_lsn(13).unwrap(), 1);
    assert_eq!(segment_seqs(&dir), (5..=10).collect::<Vec<_>>());
    assert_retained(&wal, &records, 13);
    assert_eq!(wal.stats().segments_removed, 4);
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(segment_seqs(&dir), (5..=10).collect::<Vec<_>>());
    let report = wal.recovery_report();
    assert_eq!((report.first_lsn, report.last_lsn), (Some(13), Some(30)));
    assert_eq!(report.records, 18);
    assert_retained(&wal, &records, 13);

    // Everything before a far LSN: every sealed segment, never the active one.
    assert_eq!(wal.purge_before_lsn(u64::MAX).unwrap(), 5);
    assert_eq!(segment_seqs(&dir), vec![10]);
    assert_retained(&wal, &records, 28);
    assert_eq!(wal.purge_before_lsn(u64::MAX).unwrap(), 0);
    let mut records = records;
    let h = wal.append(b"after purge").unwrap();
    assert_eq!(h.lsn(), 31);
    records.push((h, b"after purge".to_vec()));
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert_retained(&wal, &records, 28);
}

#[test]
fn purge_before_time_goes_in_order_and_stops_at_the_first_newer_segment() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    // Three records per segment (see above); segment 2 holds one late record.
    let times = [1, 2, 3, 4, 50, 6, 7, 8, 9, 10, 11, 12, 13];
    let records: Records = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let p = payload(i as u64, 1000);
            (wal.append_at(&p, t).unwrap(), p)
        })
        .collect();
    assert_eq!(records.last().unwrap().0.segment(), 5);
    assert_eq!(segment_seqs(&dir), vec![1, 2, 3, 4, 5]);

    assert_eq!(wal.purge_before_time(30).unwrap(), 1);
    assert_eq!(segment_seqs(&dir), vec![2, 3, 4, 5]);
    // Segment 3 (times 7..=9) would qualify, but segment 2 (max 50) is older
    // and does not, so nothing more goes.
    assert_eq!(wal.purge_before_time(30).unwrap(), 0);
    assert_eq!(wal.purge_before_time(50).unwrap(), 0, "time < T is strict");
    assert_eq!(segment_seqs(&dir), vec![2, 3, 4, 5]);
    assert_retained(&wal, &records, 4);
    drop(wal);

    // After reopen the segments' times come from disk.
    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(wal.purge_before_time(50).unwrap(), 0);
    // Segment 5 is active: kept although its only record has time 13.
    assert_eq!(wal.purge_before_time(51).unwrap(), 3);
    assert_eq!(segment_seqs(&dir), vec![5]);
    assert_retained(&wal, &records, 13);
    drop(wal);
    let wal = Wal::open(&dir, small()).unwrap();
    assert_retained(&wal, &records, 13);
}

// ---------------------------------------------------------------- sync policies

#[test]
fn never_policy_syncs_only_when_asked() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let base = plan.file_syncs();
    assert_eq!(wal.stats().data_syncs, 0);
    let mut records = append_all(&wal, (0..40).map(|i| payload(i, 100)));
    let batch: Vec<Vec<u8>> = (40..43).map(|i| payload(i, 100)).collect();
    records.extend(wal.append_batch(&batch).unwrap().into_iter().zip(batch));
    assert_eq!(wal.stats().records_appended, 43);
    assert_eq!(wal.stats().data_syncs, 0, "Never synced on append");
    assert_eq!(plan.file_syncs(), base, "Never synced on append");
    assert_reads(&wal, &records);

    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 1);
    assert_eq!(plan.file_syncs(), base + 1);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 1, "nothing new to sync");
    records.extend(append_all(&wal, [payload(43, 10)]));
    assert_eq!(wal.stats().data_syncs, 1);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 2);
    drop(wal);

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), records);
    assert_eq!(wal.recovery_report().torn_bytes, 0);
    assert_eq!(wal.append(b"more").unwrap().lsn(), 45);
}

#[test]
fn periodic_policy_syncs_by_bytes_on_request_and_at_close() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let zero = WalOptions {
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::ZERO,
            max_unsynced_bytes: 1,
        },
        ..mid(true)
    };
    assert!(matches!(
        Wal::open(&dir, zero),
        Err(Error::InvalidOptions(_))
    ));

    let max_unsynced = 4096u64;
    let opts = WalOptions {
        // Long enough that the background thread never fires in this test.
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::from_secs(3600),
            max_unsynced_bytes: max_unsynced,
        },
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let mut records = Vec::new();
    let (mut unsynced, mut expected_syncs) = (0u64, 0u64);
    for i in 0..100 {
        let p = payload(i, 100);
        records.push((wal.append(&p).unwrap(), p));
        unsynced += FRAME_HEADER_BYTES + 100;
        if unsynced >= max_unsynced {
            expected_syncs += 1;
            unsynced = 0;
        }
        assert_eq!(wal.stats().data_syncs, expected_syncs, "after append {i}");
    }
    assert!(expected_syncs >= 3);
    assert!(unsynced > 0);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, expected_syncs + 1);
    records.extend(append_all(&wal, (100..105).map(|i| payload(i, 100))));
    assert_eq!(wal.stats().data_syncs, expected_syncs + 1);
    assert_reads(&wal, &records);
    let before_close = plan.file_syncs();
    drop(wal);
    assert_eq!(plan.file_syncs(), before_close + 1, "close must sync");

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), records);
    wal.append(b"more").unwrap();
}

#[test]
fn periodic_policy_background_thread_syncs() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::from_millis(2),
            max_unsynced_bytes: u64::MAX,
        },
        ..mid(true)
    };
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let h = wal.append(b"synced by the flusher").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().data_syncs == 0 {
        assert!(
            Instant::now() < deadline,
            "the periodic flusher never synced"
        );
        std::thread::yield_now();
    }
    drop(wal);
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(
        all_records(&wal),
        vec![(h, b"synced by the flusher".to_vec())]
    );
}

// ---------------------------------------------------------------- stray files

#[test]
fn stray_files_are_ignored_and_temp_segments_removed() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    let mut records = append_all(&wal, (0..10).map(|i| payload(i, 500)));
    drop(wal);
    let last_seq = *segment_seqs(&dir).last().unwrap();
    assert!(last_seq >= 2);

    let seg1 = std::fs::read(seg_path(&dir, 1)).unwrap();
    let strays: Vec<(String, Vec<u8>)> = vec![
        (format!("{}~", segment_file_name(1)), seg1.clone()),
        (format!("#{}#", segment_file_name(1)), seg1.clone()),
        (format!("{}.bak", segment_file_name(1)), seg1),
        (".DS_Store".into(), b"\0\0\0\x01Bud1 garbage".to_vec()),
        ("notes.txt".into(), b"not a segment".to_vec()),
        ("1.wal".into(), vec![0xff; 100]),
        ("00000000000000000000000001.wal".into(), vec![1; 64]),
    ];
    for (name, bytes) in &strays {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::create_dir(dir.join("subdir")).unwrap();
    std::fs::write(dir.join("subdir").join(segment_file_name(1)), b"x").unwrap();
    let temps = vec![
        format!("{}.tmp", segment_file_name(last_seq + 1)),
        format!("{}.tmp", segment_file_name(99)),
    ];
    std::fs::write(dir.join(&temps[0]), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join(&temps[1]), b"half a header").unwrap();

    let wal = Wal::open(&dir, small()).expect("stray files must not break open");
    let report = wal.recovery_report().clone();
    for (name, _) in &strays {
        assert!(report.ignored_files.contains(name), "{name} not listed");
    }
    assert!(report.ignored_files.contains(&"subdir".to_string()));
    for seq in segment_seqs(&dir) {
        assert!(!report.ignored_files.contains(&segment_file_name(seq)));
    }
    let mut removed = report.removed_temp_files.clone();
    removed.sort();
    assert_eq!(removed, temps);
    for t in &temps {
        assert!(!dir.join(t).exists(), "{t} was not removed");
    }
    assert_eq!(report.segments as u64, last_seq);
    assert_eq!(all_records(&wal), records);
    // Stray files are left alone.
    for (name, bytes) in &strays {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    assert!(dir.join("subdir").is_dir());
    // The log keeps working beside them, creating new segments.
    records.extend(append_all(&wal, (10..20).map(|i| payload(i, 1000))));
    assert!(*segment_seqs(&dir).last().unwrap() > last_seq + 1);
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert!(wal.recovery_report().removed_temp_files.is_empty());
    assert!(
        wal.recovery_report()
            .ignored_files
            .contains(&"notes.txt".to_string())
    );
    assert_eq!(all_records(&wal), records);
}

// ---------------------------------------------------------------- damaged chain

#[test]
fn missing_middle_segment_is_corruption() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, small()).unwrap();
        append_all(&wal, (0..20).map(|i| payload(i, 1000)));
    }
    assert_eq!(segment_seqs(&dir), (1..=7).collect::<Vec<_>>());
    std::fs::remove_file(seg_path(&dir, 3)).unwrap();
    let before = snapshot(&dir);

    match Wal::open(&dir, small()) {
        Err(Error::Corruption { file, kind, .. }) => {
            assert_eq!(
                kind,
                CorruptionKind::MissingSegment {
                    expected: 3,
                    found: 4
                }
            );
            assert_eq!(file, seg_path(&dir, 4));
        }
        other => panic!("expected MissingSegment corruption, got {other:?}"),
    }
    // The failed open changed nothing (the lock file aside, already there).
    assert_eq!(snapshot(&dir), before);

    // Salvage mode opens it and lists the gap.
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..small()
    };
    let wal = Wal::open(&dir, salvage).unwrap();
    assert!(
        wal.recovery_report()
            .problems
            .iter()
            .any(|p| matches!(p.kind, CorruptionKind::MissingSegment { expected: 3, .. })),
        "{:?}",
        wal.recovery_report().problems
    );
}

#[test]
fn segment_from_another_log_is_corruption() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let a_records = {
        let wal = Wal::open(&a, small()).unwrap();
        append_all(&wal, (0..6).map(|i| payload(i, 1000)))
    };
    {
        let wal = Wal::open(&b, small()).unwrap();
        append_all(&wal, (0..12).map(|i| payload(100 + i, 1000)));
    }
    assert_eq!(segment_seqs(&a), vec![1, 2]);
    assert_eq!(segment_seqs(&b), vec![1, 2, 3, 4]);
    // B's segment 3 even starts at the LSN A's segment 3 would.
    assert_eq!(read_header(&seg_path(&b, 3)).first_lsn, 7);
    std::fs::copy(seg_path(&b, 3), seg_path(&a, 3)).unwrap();

    match Wal::open(&a, small()) {
        Err(Error::Corruption { file, kind, .. }) => {
            assert_eq!(kind, CorruptionKind::ForeignSegment);
            assert_eq!(file, seg_path(&a, 3));
        }
        other => panic!("expected ForeignSegment corruption, got {other:?}"),
    }
    std::fs::remove_file(seg_path(&a, 3)).unwrap();
    let wal = Wal::open(&a, small()).unwrap();
    assert_eq!(all_records(&wal), a_records);
}

// ---------------------------------------------------------------- salvage

#[test]
fn salvage_mode_is_read_only_and_modifies_nothing() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let records = {
        let wal = Wal::open(&dir, small()).unwrap();
        append_all(&wal, (0..20).map(|i| payload(i, 300 + i as usize)))
    };
    let last_seq = *segment_seqs(&dir).last().unwrap();
    let temp = format!("{}.tmp", segment_file_name(last_seq + 1));
    std::fs::write(dir.join(&temp), b"half-created segment").unwrap();
    let before = snapshot(&dir);

    let opts = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..small()
    };
    let (wal, plan) = open_faulty(&dir, opts);
    assert!(matches!(wal.append(b"x"), Err(Error::ReadOnly)));
    assert!(matches!(wal.append_at(b"x", 1), Err(Error::ReadOnly)));
    assert!(matches!(wal.append_batch(&[b"x"]), Err(Error::ReadOnly)));
    assert!(matches!(wal.sync(), Err(Error::ReadOnly)));
    assert!(matches!(
        wal.purge_before_lsn(u64::MAX),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        wal.purge_before_time(u64::MAX),
        Err(Error::ReadOnly)
    ));
    assert!(!wal.is_poisoned());
    assert_eq!(all_records(&wal), records);
    assert_reads(&wal, &records);
    let report = wal.recovery_report();
    assert!(report.removed_temp_files.is_empty());
    assert!(report.ignored_files.contains(&temp));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    wal.close().unwrap();
    assert_eq!(plan.writes(), 0, "salvage mode wrote");
    assert_eq!(plan.file_syncs(), 0, "salvage mode synced a file");
    assert_eq!(plan.dir_syncs(), 0, "salvage mode synced the directory");
    assert_eq!(
        snapshot(&dir),
        before,
        "salvage mode modified the directory"
    );

    // A strict open afterwards is unaffected, and cleans the temp file.
    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(wal.recovery_report().removed_temp_files, vec![temp]);
    assert_eq!(all_records(&wal), records);
}

#[test]
fn directories_named_like_segments_or_temp_files_are_ignored() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, WalOptions::default()).unwrap();
        wal.append(b"kept").unwrap();
    }
    let as_temp = dir.join("00000000000000000009.wal.tmp");
    let as_segment = dir.join("00000000000000000000.wal");
    std::fs::create_dir(&as_temp).unwrap();
    std::fs::create_dir(&as_segment).unwrap();
    let wal = Wal::open(&dir, WalOptions::default()).unwrap();
    let ignored = &wal.recovery_report().ignored_files;
    assert!(
        ignored.iter().any(|n| n == "00000000000000000009.wal.tmp"),
        "{ignored:?}"
    );
    assert!(
        ignored.iter().any(|n| n == "00000000000000000000.wal"),
        "{ignored:?}"
    );
    assert!(as_temp.is_dir() && as_segment.is_dir());
    let got: Vec<Vec<u8>> = wal.iter().map(|r| r.unwrap().1).collect();
    assert_eq!(got, vec![b"kept".to_vec()]);
}
