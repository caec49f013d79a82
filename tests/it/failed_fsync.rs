//! After a failed fsync the kernel may mark the dirty pages clean without writing them; a log reopened without a reboot then reads the record from the page cache, and a sync returns Ok without writing it. Recovery must rewrite what no later record proves durable, so that after a later power loss every record acknowledged after the reopen is still there.

use crate::common::forwarding::{
    FileCall, FileHooks, Forwarding, Returned, StorageCall, StorageHooks,
};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use streamwal::storage::{MemStorage, OpenMode, Storage};
use streamwal::{Error, Wal, WalOptions};

/// A disk under a page cache. The cache is a `MemStorage`; each file (an
/// inode, followed across renames) also has a durable image that
/// `sync_data` updates with the writes made since the last sync. A failed
/// sync drops those writes from the sync's view (marked clean) while the
/// cache keeps showing them. Directory entries are always durable here;
/// this test is about file data.
#[derive(Debug, Clone, Default)]
struct Disk {
    cache: MemStorage,
    inodes: Arc<Mutex<BTreeMap<PathBuf, Arc<Inode>>>>,
    fail_next_sync: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Inode {
    durable: Mutex<Vec<u8>>,
    dirty: Mutex<Vec<(u64, Vec<u8>)>>,
}

/// The hooks on one open file: its inode, and the disk's sync failure.
#[derive(Debug)]
struct DiskFile {
    inode: Arc<Inode>,
    fail_next_sync: Arc<AtomicBool>,
}

impl Disk {
    /// The storage a log opens on this disk: the cache, with the hooks that
    /// keep the durable images.
    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(Forwarding::new(
            Arc::new(self.cache.clone()),
            Arc::new(self.clone()),
        ))
    }

    /// Power loss: a new disk whose cache holds only the durable images.
    fn after_power_loss(&self) -> Disk {
        let next = Disk::default();
        next.cache.create_dir_all(Path::new("/d/wal")).unwrap();
        for (path, inode) in self.inodes.lock().unwrap().iter() {
            let bytes = inode.durable.lock().unwrap().clone();
            next.cache.insert_file(path, bytes.clone());
            let fresh = Inode {
                durable: Mutex::new(bytes),
                dirty: Mutex::default(),
            };
            next.inodes
                .lock()
                .unwrap()
                .insert(path.clone(), Arc::new(fresh));
        }
        next
    }
}

impl StorageHooks for Disk {
    fn before(&self, call: StorageCall<'_>) -> io::Result<()> {
        if let StorageCall::Remove(path) = call {
            self.inodes.lock().unwrap().remove(path);
        }
        Ok(())
    }
    fn after(&self, call: StorageCall<'_>) {
        if let StorageCall::Rename { from, to } = call {
            let mut inodes = self.inodes.lock().unwrap();
            if let Some(inode) = inodes.remove(from) {
                inodes.insert(to.to_path_buf(), inode);
            }
        }
    }
    fn file(&self, path: &Path, _mode: OpenMode) -> Option<Arc<dyn FileHooks>> {
        let inode = self
            .inodes
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        Some(Arc::new(DiskFile {
            inode,
            fail_next_sync: self.fail_next_sync.clone(),
        }))
    }
}

impl DiskFile {
    /// `sync_data` and `sync_all` alike: the writes since the last sync
    /// reach the durable image, or, on an injected failure, never will.
    fn sync(&self) -> io::Result<()> {
        let writes = std::mem::take(&mut *self.inode.dirty.lock().unwrap());
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            // EIO, and the pages are now clean: those writes never land.
            return Err(io::Error::other("injected EIO; pages marked clean"));
        }
        let mut img = self.inode.durable.lock().unwrap();
        for (off, bytes) in writes {
            let (off, end) = (off as usize, off as usize + bytes.len());
            if img.len() < end {
                img.resize(end, 0);
            }
            img[off..end].copy_from_slice(&bytes);
        }
        Ok(())
    }
}

impl FileHooks for DiskFile {
    /// The cache's own sync (a `MemStorage`'s does nothing) runs after this.
    fn before(&self, call: FileCall<'_>) -> io::Result<()> {
        match call {
            FileCall::SyncData | FileCall::SyncAll => self.sync(),
            _ => Ok(()),
        }
    }
    fn after(&self, call: FileCall<'_>, _returned: Returned) {
        if let FileCall::WriteAt { offset, buf } = call {
            self.inode
                .dirty
                .lock()
                .unwrap()
                .push((offset, buf.to_vec()));
        }
    }
}

#[test]
fn records_acknowledged_after_a_failed_fsync_and_reopen_survive_power_loss() {
    let dir = Path::new("/d/wal");
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        preallocate: false,
        ..WalOptions::default()
    };
    let disk = Disk::default();
    let wal = Wal::open(
        streamwal::Location::dir_on(disk.storage(), dir),
        opts.clone(),
    )
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..3u8 {
        acked.push((wal.append(&[i; 5000]).unwrap(), vec![i; 5000]));
    }
    disk.fail_next_sync.store(true, Ordering::SeqCst);
    let failed = wal.append(&[9; 5000]);
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    drop(wal);

    // Reopen without a reboot: the page cache still shows the record.
    let wal = Wal::open(
        streamwal::Location::dir_on(disk.storage(), dir),
        opts.clone(),
    )
    .unwrap();
    let unknown_kept = wal.recovery_report().records == 4;
    for i in 10..13u8 {
        acked.push((wal.append(&[i; 5000]).unwrap(), vec![i; 5000]));
    }
    drop(wal);

    let after = disk.after_power_loss();
    let wal = Wal::open(streamwal::Location::dir_on(after.storage(), dir), opts)
        .unwrap_or_else(|e| panic!("acknowledged records became unrecoverable: {e}"));
    for (h, payload) in &acked {
        assert_eq!(&wal.read(h).unwrap(), payload, "record {}", h.lsn());
    }
    assert!(
        unknown_kept,
        "the reopen saw the unknown record in the cache"
    );
}
