//! Directories the crate creates are durable: opening a log or a checkpoint store under missing parents fsyncs the parent of every level it created, so a power loss cannot take the whole log away with an unsynced ancestor.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use streamwal::checkpoint::{CheckpointOptions, CheckpointStore};
use streamwal::storage::{DirLock, MemStorage, OpenMode, Storage, StorageFile};
use streamwal::{Wal, WalOptions};

/// MemStorage that records every `sync_dir`.
#[derive(Debug, Clone, Default)]
struct Recording {
    inner: MemStorage,
    synced: Arc<Mutex<Vec<PathBuf>>>,
}

impl Storage for Recording {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<streamwal::storage::DirEntry>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.synced.lock().unwrap().push(dir.to_path_buf());
        self.inner.sync_dir(dir)
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.inner.try_lock_dir(dir)
    }
}

fn assert_each_level_synced(synced: &[PathBuf], root: &str, levels: &[&str]) {
    let mut parent = PathBuf::from(root);
    for level in levels {
        assert!(
            synced.contains(&parent),
            "{} was created inside {} but {} was never synced: {synced:?}",
            level,
            parent.display(),
            parent.display()
        );
        parent = parent.join(level);
    }
}

#[test]
fn a_log_under_missing_parents_syncs_every_created_level() {
    let storage = Recording::default();
    storage.inner.create_dir_all(Path::new("/data")).unwrap();
    let wal = Wal::open(
        streamwal::Location::dir_on(Arc::new(storage.clone()), "/data/app/engine/wal"),
        WalOptions {
            segment_bytes: 4096,
            ..WalOptions::default()
        },
    )
    .unwrap();
    wal.append(b"x").unwrap();
    let synced = storage.synced.lock().unwrap().clone();
    assert_each_level_synced(&synced, "/data", &["app", "engine", "wal"]);
}

#[test]
fn a_checkpoint_store_under_missing_parents_syncs_every_created_level() {
    let storage = Recording::default();
    storage.inner.create_dir_all(Path::new("/data")).unwrap();
    CheckpointStore::open(
        streamwal::Location::dir_on(Arc::new(storage.clone()), "/data/app/ckpt"),
        CheckpointOptions::default(),
    )
    .unwrap();
    let synced = storage.synced.lock().unwrap().clone();
    assert_each_level_synced(&synced, "/data", &["app", "ckpt"]);
}
