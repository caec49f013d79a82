//! Directories the crate creates are durable: opening a log or a checkpoint store under missing parents fsyncs the parent of every level it created, so a power loss cannot take the whole log away with an unsynced ancestor.

use crate::common::forwarding::{Forwarding, StorageCall, StorageHooks};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use streamwal::checkpoint::{CheckpointOptions, CheckpointStore};
use streamwal::storage::{MemStorage, Storage};
use streamwal::{Wal, WalOptions};

/// Every directory `sync_dir` was called on, in call order.
#[derive(Debug, Clone, Default)]
struct SyncedDirs(Arc<Mutex<Vec<PathBuf>>>);

impl SyncedDirs {
    fn recorded(&self) -> Vec<PathBuf> {
        self.0.lock().unwrap().clone()
    }
}

impl StorageHooks for SyncedDirs {
    fn before(&self, call: StorageCall<'_>) -> io::Result<()> {
        if let StorageCall::SyncDir(dir) = call {
            self.0.lock().unwrap().push(dir.to_path_buf());
        }
        Ok(())
    }
}

/// A `MemStorage` holding `/data`, and the storage the test opens on it,
/// which records every `sync_dir`.
fn recording_storage() -> (Arc<Forwarding>, SyncedDirs) {
    let mem = MemStorage::new();
    mem.create_dir_all(Path::new("/data")).unwrap();
    let synced = SyncedDirs::default();
    let storage = Forwarding::new(Arc::new(mem), Arc::new(synced.clone()));
    (Arc::new(storage), synced)
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
    let (storage, synced) = recording_storage();
    let wal = Wal::open(
        streamwal::Location::dir_on(storage, "/data/app/engine/wal"),
        WalOptions {
            segment_bytes: 4096,
            ..WalOptions::default()
        },
    )
    .unwrap();
    wal.append(b"x").unwrap();
    let synced = synced.recorded();
    assert_each_level_synced(&synced, "/data", &["app", "engine", "wal"]);
}

#[test]
fn a_checkpoint_store_under_missing_parents_syncs_every_created_level() {
    let (storage, synced) = recording_storage();
    CheckpointStore::open(
        streamwal::Location::dir_on(storage, "/data/app/ckpt"),
        CheckpointOptions::default(),
    )
    .unwrap();
    let synced = synced.recorded();
    assert_each_level_synced(&synced, "/data", &["app", "ckpt"]);
}
