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

mod growth;
mod locking;
mod poisoning;
mod policies;

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
    let wal =
        Wal::open(streamwal::Location::dir_on(storage, dir), opts).expect("open on faulty storage");
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
