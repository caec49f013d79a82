//! Defects found by outside testing (issue 13), each pinned by a test that
//! failed before its fix: a FIFO or directory named like one of the crate's
//! files, a forked child dropping its copy of a log, a log of more segments
//! than the descriptor limit allows open, a segment-like name beyond `u64`,
//! and a sparse tail of gigabytes.
#![allow(unsafe_code)] // fork(2) and waitpid(2), in one test

use crate::common::forwarding::{FileCall, FileHooks, Forwarding, Returned, StorageHooks};
use crate::common::test_name;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions, CheckpointStore, checkpoint_file_name};
use streamwal::limits::SEGMENT_HEADER_BYTES;
use streamwal::storage::{OpenMode, StdStorage};
use streamwal::tracker::TrackerState;
use streamwal::wal::format::{FrameHeader, SegmentHeader, encode_frame};
use streamwal::wal::{scan_log, segment_file_name};
use streamwal::{Error, RecoveryMode, Wal, WalOptions};

/// Run `f` on another thread and fail the test if it has not returned
/// within `limit`: what used to block forever in `open` must return at all.
/// The limit only bounds a failure; a passing run returns at once.
fn returns_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the call blocked (a FIFO opened for reading waits for a writer)")
}

const BLOCKED: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

fn salvage() -> WalOptions {
    WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..WalOptions::default()
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4 << 10,
        preallocate: false,
        ..WalOptions::default()
    }
}

fn records(wal: &Wal) -> Vec<Vec<u8>> {
    wal.iter().map(|r| r.expect("record").1).collect()
}

// ------------------------------------------------------------ FIFOs, names

#[test]
fn a_fifo_named_like_a_segment_is_reported_and_never_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    wal.append(b"one").unwrap();
    wal.append(b"two").unwrap();
    drop(wal);
    // After the real segment, so that it would be taken for the last one.
    let fifo_name = segment_file_name(7);
    mkfifo(&dir.join(&fifo_name));

    for opts in [salvage(), small()] {
        let d = dir.clone();
        let wal = returns_within(BLOCKED, move || Wal::open(&d, opts)).expect("open");
        assert_eq!(records(&wal), [b"one".to_vec(), b"two".to_vec()]);
        let report = wal.recovery_report();
        assert!(
            report.lookalike_files.iter().any(|l| l.name == fifo_name),
            "{report:?}"
        );
        assert!(report.ignored_files.contains(&fifo_name));
    }
    let d = dir.clone();
    let scan = returns_within(BLOCKED, move || scan_log(&StdStorage::new(), &d)).unwrap();
    assert_eq!(scan.segments.len(), 1);
    assert_eq!(scan.lookalikes.len(), 1, "{:?}", scan.lookalikes);
    // Nothing was left holding the lock: a writer opens.
    Wal::open(&dir, small()).expect("the writer is not Locked");
}

fn checkpoint(batch_time: u64) -> Checkpoint<Vec<u8>> {
    Checkpoint {
        batch_time,
        batch_interval_ms: 1_000,
        graph: vec![1, 2, 3],
        graph_version: 1,
        pending_batches: Vec::new(),
        journal_lsn: 0,
        tracker: TrackerState::default(),
        source_offsets: BTreeMap::new(),
    }
}

#[test]
fn a_fifo_named_like_the_newest_checkpoint_does_not_block_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let store = CheckpointStore::open(&dir, CheckpointOptions::default()).unwrap();
    store.write(&checkpoint(1_000)).unwrap();
    let fifo_name = checkpoint_file_name(2_000);
    mkfifo(&dir.join(&fifo_name));

    let latest = returns_within(BLOCKED, move || store.latest::<Vec<u8>>()).unwrap();
    let (_, got) = latest.checkpoint.expect("the real checkpoint");
    assert_eq!(got.batch_time, 1_000);
    assert!(
        latest.ignored_files.contains(&fifo_name),
        "{:?}",
        latest.ignored_files
    );
}

#[test]
fn a_directory_named_like_a_checkpoint_is_not_listed_and_does_not_stop_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let store = CheckpointStore::open(&dir, CheckpointOptions { keep: 2 }).unwrap();
    // Older than every checkpoint to come: it would be the first removed.
    let planted = dir.join(checkpoint_file_name(500));
    std::fs::create_dir(&planted).unwrap();
    for t in [1_000, 2_000, 3_000, 4_000] {
        store.write(&checkpoint(t)).expect("write and clean up");
    }
    let times: Vec<u64> = store.list().unwrap().iter().map(|&(t, _)| t).collect();
    assert_eq!(times, [4_000, 3_000]);
    assert!(planted.is_dir(), "left alone");
}

#[test]
fn a_segment_copied_under_a_number_beyond_u64_is_reported_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let wal = Wal::open(&real, small()).unwrap();
    wal.append(b"kept").unwrap();
    drop(wal);
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let name = "99999999999999999999.wal";
    std::fs::copy(real.join(segment_file_name(1)), copy.join(name)).unwrap();

    let wal = Wal::open(&copy, salvage()).unwrap();
    let report = wal.recovery_report();
    assert_eq!(report.segments, 0);
    let found: Vec<&str> = report
        .lookalike_files
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(found, [name], "{report:?}");
    let scan = scan_log(&StdStorage::new(), &copy).unwrap();
    assert_eq!(scan.lookalikes.len(), 1);
}

// ------------------------------------------------------------------- fork

/// A child forked without exec that drops its inherited `Wal` must not
/// release the parent's lock: a third opener would then write beside the
/// parent.
#[test]
fn a_forked_child_dropping_its_copy_leaves_the_parent_holding_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // No background threads (none would exist in the child).
    let opts = WalOptions {
        prepare_ahead: false,
        ..small()
    };
    let mut wal = Some(Wal::open(&dir, opts.clone()).unwrap());
    wal.as_ref().unwrap().append(b"before fork").unwrap();

    // SAFETY: the child runs only the drop of its copy of the log and
    // `_exit`; it returns to nothing of the test harness.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(wal.take())));
        // SAFETY: ends the child at once, without running exit handlers.
        unsafe { libc::_exit(if dropped.is_ok() { 0 } else { 1 }) };
    }
    assert!(pid > 0, "fork failed: {}", io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);

    match Wal::open(&dir, opts.clone()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("a third opener must be refused while the parent holds the log: {other:?}"),
    }
    let wal = wal.take().unwrap();
    wal.append(b"after the child").unwrap();
    drop(wal);
    let reopened = Wal::open(&dir, opts).unwrap();
    assert_eq!(
        records(&reopened),
        [b"before fork".to_vec(), b"after the child".to_vec()]
    );
}

// ---------------------------------------------------- descriptors per log

const MANY_SEGMENTS: u64 = 1_500;
const FD_LIMIT: u32 = 128;
const FD_CHILD_ENV: &str = "STREAMWAL_FD_CHILD_DIR";

/// Write a log of `MANY_SEGMENTS` one-record segments by hand (fast: no
/// syncs), as a writer with tiny segments would leave it.
fn write_many_segments(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for seq in 1..=MANY_SEGMENTS {
        let h = SegmentHeader {
            log_id: 42,
            segment_seq: seq,
            first_lsn: seq,
            unsynced_window_bytes: 1 << 20,
            max_record_bytes: 1 << 16,
        };
        let mut bytes = h.encode().to_vec();
        let payload = format!("record {seq}");
        let fh = FrameHeader {
            payload_len: payload.len() as u32,
            lsn: seq,
            time: seq,
            durable_lsn: seq - 1,
            crc: 0,
        };
        encode_frame(&h.identity(), &fh, payload.as_bytes(), &mut bytes);
        std::fs::write(dir.join(segment_file_name(seq)), bytes).unwrap();
    }
}

/// Run in a child under `ulimit -n FD_LIMIT` by the test below: open the
/// log, read it whole in order and by handle, append, reopen read-only.
#[test]
fn fd_child_opens_a_long_log_under_a_low_descriptor_limit() {
    let Some(dir) = std::env::var_os(FD_CHILD_ENV) else {
        return; // only meaningful as the child of the test below
    };
    let dir = PathBuf::from(dir);
    let wal = Wal::open(&dir, small()).expect("open under the descriptor limit");
    let all: Vec<_> = wal.iter().map(|r| r.expect("iterate")).collect();
    assert_eq!(all.len() as u64, MANY_SEGMENTS);
    for (h, payload) in all.iter().step_by(7) {
        assert_eq!(&wal.read(h).expect("read by handle"), payload);
    }
    wal.append(b"appended under the limit").expect("append");
    drop(wal);
    let wal = Wal::open(&dir, salvage()).expect("salvage open");
    assert_eq!(wal.iter().count() as u64, MANY_SEGMENTS + 1);
}

fn under_fd_limit(program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(program)
        .args(args);
    cmd
}

#[test]
fn a_log_of_more_segments_than_descriptors_opens_reads_and_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    write_many_segments(&dir);
    let exe = std::env::current_exe().unwrap();
    let out = under_fd_limit(
        &exe,
        &[
            "--exact",
            &test_name(
                module_path!(),
                "fd_child_opens_a_long_log_under_a_low_descriptor_limit",
            ),
            "--test-threads=1",
            "--nocapture",
        ],
    )
    .env(FD_CHILD_ENV, &dir)
    .output()
    .unwrap();
    assert!(out.status.success(), "child: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the test: {out:?}"
    );
}

// ----------------------------------------------------------- sparse tails

/// Counts the bytes read through every file of a storage.
#[derive(Debug, Clone, Default)]
struct BytesRead(Arc<AtomicU64>);

impl StorageHooks for BytesRead {
    fn file(&self, _path: &Path, _mode: OpenMode) -> Option<Arc<dyn FileHooks>> {
        Some(Arc::new(self.clone()))
    }
}

impl FileHooks for BytesRead {
    fn after(&self, call: FileCall<'_>, returned: Returned) {
        if let (FileCall::ReadAt { .. }, Returned::Read(n)) = (call, returned) {
            self.0.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

const HOLE_BYTES: u64 = 8 << 30;

/// A log whose last segment was extended by an 8 GiB hole.
fn log_with_sparse_tail(dir: &Path) -> PathBuf {
    let wal = Wal::open(dir, small()).unwrap();
    for i in 0..3 {
        wal.append(format!("record {i}").as_bytes()).unwrap();
    }
    drop(wal);
    let tail = dir.join(segment_file_name(1));
    let f = std::fs::OpenOptions::new().write(true).open(&tail).unwrap();
    f.set_len(HOLE_BYTES).unwrap();
    tail
}

#[test]
fn a_sparse_tail_is_skipped_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    log_with_sparse_tail(&dir);
    let read = BytesRead::default();
    let storage = Forwarding::new(Arc::new(StdStorage::new()), Arc::new(read.clone()));
    let wal = Wal::open(
        streamwal::Location::dir_on(Arc::new(storage), &dir),
        small(),
    )
    .unwrap();
    assert_eq!(records(&wal).len(), 3);
    let bytes = read.0.load(Ordering::Relaxed);
    assert!(
        bytes < 64 << 20,
        "read {bytes} bytes of a log holding a few hundred and an {HOLE_BYTES}-byte hole"
    );
}

#[test]
fn data_far_past_a_hole_is_still_found_and_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let tail = log_with_sparse_tail(&dir);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&tail).unwrap();
    let far = HOLE_BYTES / 2;
    f.write_all_at(b"not a hole", far).unwrap();
    drop(f);
    match Wal::open(&dir, small()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, tail);
            assert!(offset >= SEGMENT_HEADER_BYTES && offset < far, "{offset}");
        }
        other => panic!("nonzero bytes beyond the unsynced window are corruption: {other:?}"),
    }
}
