//! The next segment is prepared on a background thread: rollover installs
//! that spare, a failing preparation falls back to the appender (which then
//! reports any error itself), and a closed log leaves no spare file behind.

use std::io;
use std::path::Path;
use std::sync::Arc;
use streamwal::storage::{DirLock, OpenMode, StdStorage, Storage, StorageFile};
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
    let wal = Wal::open_with_storage(storage.clone(), dir, opts()).unwrap();
    let handles: Vec<_> = (0..RECORDS)
        .map(|i| wal.append(&record(i)).unwrap())
        .collect();
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(wal.read(h).unwrap(), record(i as u32));
    }
    let stats = wal.stats();
    wal.close().unwrap();
    let wal = Wal::open_with_storage(storage, dir, opts()).unwrap();
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

/// The real file system, except that creating a file fails on the
/// background preparer's thread.
#[derive(Debug)]
struct NoBackgroundCreate(StdStorage);

fn on_preparer_thread() -> bool {
    std::thread::current().name() == Some("streamwal-spare")
}

impl Storage for NoBackgroundCreate {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if mode == OpenMode::CreateNew && on_preparer_thread() {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected"));
        }
        self.0.open(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.0.try_lock_dir(dir)
    }
}

#[test]
fn a_failed_background_preparation_falls_back_to_the_appender() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let stats = append_and_check(Arc::new(NoBackgroundCreate(StdStorage::new())), &dir);
    assert!(stats.segments_created >= 5, "{stats:?}");
    assert_eq!(stats.segments_prepared_ahead, 0, "{stats:?}");
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}
