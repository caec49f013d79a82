//! The next segment is prepared on a background thread: rollover installs
//! that spare, a failing preparation falls back to the appender (which then
//! reports any error itself), and a closed log leaves no spare file behind.
//! Spares for large records are allocated (`fallocate`), for small records
//! zero-filled.

use crate::common::forwarding::{
    FileCall, FileHooks, Forwarding, Returned, StorageCall, StorageHooks,
};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use streamwal::storage::{OpenMode, StdStorage, Storage};
use streamwal::{Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    }
}

fn record(i: u32) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; 4000];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

const RECORDS: u32 = 100;

/// Append `RECORDS` records, then check every one by handle and, after a
/// reopen, in order.
fn append_and_check(storage: Arc<dyn Storage>, dir: &Path) -> streamwal::WalStats {
    let wal = Wal::open(streamwal::Location::dir_on(storage.clone(), dir), opts()).unwrap();
    let handles: Vec<_> = (0..RECORDS)
        .map(|i| wal.append(&record(i)).unwrap())
        .collect();
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(wal.read(h).unwrap(), record(i as u32));
    }
    let stats = wal.stats();
    wal.close().unwrap();
    let wal = Wal::open(streamwal::Location::dir_on(storage, dir), opts()).unwrap();
    let got: Vec<Vec<u8>> = wal.iter().map(|r| r.unwrap().1).collect();
    assert_eq!(got, (0..RECORDS).map(record).collect::<Vec<_>>());
    drop(wal);
    stats
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn rollover_installs_the_spare_prepared_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let stats = append_and_check(Arc::new(StdStorage::new()), &dir);
    // 100 records of ~4 KiB in 64 KiB segments: several rollovers. The
    // first segment is created by open; every later one is a spare.
    assert!(stats.segments_created >= 5, "{stats:?}");
    assert_eq!(
        stats.segments_prepared_ahead,
        stats.segments_created - 1,
        "{stats:?}"
    );
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn without_prepare_ahead_the_appender_prepares_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(
        &dir,
        WalOptions {
            prepare_ahead: false,
            ..opts()
        },
    )
    .unwrap();
    for i in 0..RECORDS {
        wal.append(&record(i)).unwrap();
    }
    let stats = wal.stats();
    assert!(stats.segments_created >= 5, "{stats:?}");
    assert_eq!(stats.segments_prepared_ahead, 0);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

fn on_preparer_thread() -> bool {
    std::thread::current().name() == Some("streamwal-spare")
}

/// What goes wrong in [`Hooked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Creating a file on the spare thread fails.
    SpareCreate,
    /// Creating a file on the spare thread panics.
    SparePanic,
    /// Syncing a file on the spare thread fails (the file exists by then).
    SpareSync,
    /// Creating any segment file but the first fails, on every thread.
    CreateAfterFirst,
    /// A sync on the spare thread waits until the gate opens.
    SpareSyncWaits,
}

/// Lets a test hold the spare thread inside a sync.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (a sync is waiting, the gate is open)
    cond: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut st = self.state.lock().unwrap();
        st.0 = true;
        self.cond.notify_all();
        while !st.1 {
            st = self.cond.wait(st).unwrap();
        }
    }
    fn wait_for_waiter(&self) {
        let mut st = self.state.lock().unwrap();
        while !st.0 {
            st = self.cond.wait(st).unwrap();
        }
    }
    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cond.notify_all();
    }
}

/// A fault on the real file system, and a count of successful `allocate`
/// calls: the hooks of the storage from [`Hooked::storage`] and of each of
/// its files.
#[derive(Debug, Clone)]
struct Hooked {
    fault: Fault,
    allocated: Arc<AtomicU64>,
    gate: Arc<Gate>,
}

impl Hooked {
    fn new(fault: Fault) -> Hooked {
        Hooked {
            fault,
            allocated: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// The real file system with these hooks.
    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(Forwarding::new(
            Arc::new(StdStorage::new()),
            Arc::new(self.clone()),
        ))
    }

    fn before_sync(&self) -> io::Result<()> {
        match self.fault {
            Fault::SpareSync if on_preparer_thread() => {
                Err(io::Error::other("injected sync failure"))
            }
            Fault::SpareSyncWaits if on_preparer_thread() => {
                self.gate.pass();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl StorageHooks for Hooked {
    fn before(&self, call: StorageCall<'_>) -> io::Result<()> {
        if let StorageCall::Open(path, OpenMode::CreateNew) = call {
            let first = path.ends_with("00000000000000000001.wal.tmp");
            match self.fault {
                Fault::SpareCreate if on_preparer_thread() => {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "injected"));
                }
                Fault::SparePanic if on_preparer_thread() => panic!("injected panic"),
                Fault::CreateAfterFirst if !first => {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "injected"));
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn file(&self, _path: &Path, _mode: OpenMode) -> Option<Arc<dyn FileHooks>> {
        Some(Arc::new(self.clone()))
    }
}

impl FileHooks for Hooked {
    fn before(&self, call: FileCall<'_>) -> io::Result<()> {
        match call {
            FileCall::SyncData | FileCall::SyncAll => self.before_sync(),
            _ => Ok(()),
        }
    }
    fn after(&self, call: FileCall<'_>, returned: Returned) {
        if let (FileCall::Allocate(_), Returned::Allocated(true)) = (call, returned) {
            self.allocated.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Run `f` on its own thread; fail the test if it has not finished within
/// a minute (a hung log would otherwise hang the whole suite).
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the log hung")
}

/// A background failure never reaches the appender: it prepares the
/// segment itself.
#[test]
fn a_failed_background_preparation_falls_back_to_the_appender() {
    for fault in [Fault::SpareCreate, Fault::SpareSync, Fault::SparePanic] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let storage = Hooked::new(fault).storage();
        let d = dir.clone();
        let stats = finishes(move || append_and_check(storage, &d));
        assert!(stats.segments_created >= 5, "{fault:?} {stats:?}");
        assert_eq!(stats.segments_prepared_ahead, 0, "{fault:?} {stats:?}");
        assert_eq!(temp_files(&dir), Vec::<String>::new(), "{fault:?}");
    }
}

/// When the appender's own attempt fails too, the append fails, the log is
/// poisoned, and a reopen finds exactly the records acknowledged before.
#[test]
fn a_segment_that_cannot_be_created_fails_the_append_and_poisons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(
        streamwal::Location::dir_on(Hooked::new(Fault::CreateAfterFirst).storage(), &dir),
        opts(),
    )
    .unwrap();
    let mut acked = Vec::new();
    let failed_at = (0..RECORDS).find(|&i| match wal.append(&record(i)) {
        Ok(_) => {
            acked.push(record(i));
            false
        }
        Err(_) => true,
    });
    assert!(failed_at.is_some(), "rollover never failed");
    assert!(!acked.is_empty());
    assert!(matches!(wal.append(b"x"), Err(streamwal::Error::Poisoned)));
    drop(wal);
    let wal = Wal::open(&dir, opts()).unwrap();
    let got: Vec<Vec<u8>> = wal.iter().map(|r| r.unwrap().1).collect();
    assert_eq!(got, acked);
}

/// Closing while the spare is being prepared waits for it and leaves no
/// temporary file behind.
#[test]
fn closing_during_preparation_leaves_no_spare() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let hooked = Hooked::new(Fault::SpareSyncWaits);
    let gate = hooked.gate.clone();
    let wal = Wal::open(streamwal::Location::dir_on(hooked.storage(), &dir), opts()).unwrap();
    // Fill past half the first segment, not to its end (records of 4,040
    // bytes in 64 KiB): the spare thread starts and stops inside its sync.
    for i in 0..9 {
        wal.append(&record(i)).unwrap();
    }
    assert_eq!(wal.stats().segments_created, 1);
    finishes(move || {
        gate.wait_for_waiter();
        let closer = std::thread::spawn(move || drop(wal));
        gate.open();
        closer.join().unwrap();
    });
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

/// Append `count` records of `len` bytes into 1 MiB segments; return the
/// stats and how many spares were allocated rather than zero-filled.
fn spares_for(len: usize, count: u32) -> (streamwal::WalStats, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let hooked = Hooked::new(Fault::None);
    let storage = hooked.storage();
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        ..WalOptions::default()
    };
    let wal = Wal::open(
        streamwal::Location::dir_on(storage.clone(), &dir),
        opts.clone(),
    )
    .unwrap();
    let data = |i: u32| vec![(i % 253) as u8; len];
    for i in 0..count {
        wal.append(&data(i)).unwrap();
    }
    let stats = wal.stats();
    drop(wal);
    let wal = Wal::open(streamwal::Location::dir_on(storage.clone(), &dir), opts).unwrap();
    let got: Vec<Vec<u8>> = wal.iter().map(|r| r.unwrap().1).collect();
    assert_eq!(got, (0..count).map(data).collect::<Vec<_>>());
    (stats, hooked.allocated.load(Ordering::SeqCst))
}

#[test]
fn spares_for_large_records_are_allocated_not_zero_filled() {
    let (stats, allocated) = spares_for(200 << 10, 40);
    assert!(stats.segments_prepared_ahead >= 3, "{stats:?}");
    // Every installed spare was allocated (plus, maybe, the one prepared
    // for the next segment and removed at close). Linux file systems that
    // lack fallocate (where spares are zero-filled) are not used for tests.
    if cfg!(target_os = "linux") {
        assert!(
            allocated >= stats.segments_prepared_ahead,
            "{allocated} {stats:?}"
        );
    }
}

#[test]
fn spares_for_small_records_are_zero_filled() {
    let (stats, allocated) = spares_for(4 << 10, 1000);
    assert!(stats.segments_prepared_ahead >= 3, "{stats:?}");
    assert_eq!(allocated, 0);
}
