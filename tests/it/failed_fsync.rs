//! After a failed fsync the kernel may mark the dirty pages clean without writing them; a log reopened without a reboot then reads the record from the page cache, and a sync returns Ok without writing it. Recovery must rewrite what no later record proves durable, so that after a later power loss every record acknowledged after the reopen is still there.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use streamwal::storage::{DirLock, MemStorage, OpenMode, Storage, StorageFile};
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

#[derive(Debug)]
struct DiskFile {
    inode: Arc<Inode>,
    fail_next_sync: Arc<AtomicBool>,
    cache: Arc<dyn StorageFile>,
}

impl Disk {
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

impl Storage for Disk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.cache.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<streamwal::storage::DirEntry>> {
        self.cache.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let cache = self.cache.open(path, mode)?;
        let inode = self
            .inodes
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        Ok(Arc::new(DiskFile {
            inode,
            fail_next_sync: self.fail_next_sync.clone(),
            cache,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.cache.rename(from, to)?;
        let mut inodes = self.inodes.lock().unwrap();
        if let Some(inode) = inodes.remove(from) {
            inodes.insert(to.to_path_buf(), inode);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inodes.lock().unwrap().remove(path);
        self.cache.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.cache.sync_dir(dir)
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.cache.try_lock_dir(dir)
    }
}

impl StorageFile for DiskFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.cache.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.cache.write_at(buf, offset)?;
        self.inode
            .dirty
            .lock()
            .unwrap()
            .push((offset, buf.to_vec()));
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.cache.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.cache.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
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
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
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
        streamwal::Location::dir_on(Arc::new(disk.clone()), dir),
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
        streamwal::Location::dir_on(Arc::new(disk.clone()), dir),
        opts.clone(),
    )
    .unwrap();
    let unknown_kept = wal.recovery_report().records == 4;
    for i in 10..13u8 {
        acked.push((wal.append(&[i; 5000]).unwrap(), vec![i; 5000]));
    }
    drop(wal);

    let after = disk.after_power_loss();
    let wal = Wal::open(streamwal::Location::dir_on(Arc::new(after), dir), opts)
        .unwrap_or_else(|e| panic!("acknowledged records became unrecoverable: {e}"));
    for (h, payload) in &acked {
        assert_eq!(&wal.read(h).unwrap(), payload, "record {}", h.lsn());
    }
    assert!(
        unknown_kept,
        "the reopen saw the unknown record in the cache"
    );
}
