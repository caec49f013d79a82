//! The operating system's file system.

use super::{DirLock, OpenMode, Storage, StorageFile};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// [`Storage`] on the real file system, through `std::fs` (Unix only).
///
/// `sync_data` is `fdatasync`, `sync_all` is `fsync`, `sync_dir` opens the
/// directory and `fsync`s it, and `try_lock_dir` takes an exclusive `flock` on
/// a file named `LOCK` inside the directory (creating it if needed).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

impl StdStorage {
    /// The real file system.
    pub fn new() -> Self {
        StdStorage
    }
}

/// Name of the lock file [`StdStorage::try_lock_dir`] creates in a directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

#[derive(Debug)]
struct StdFile(File);

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl DirLock for StdLock {}

impl Drop for StdLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than rely on close: a child process forked
        // by another thread shares this open file description until it execs,
        // and the flock lives as long as any descriptor of it. An explicit
        // unlock releases it at once for every sharer.
        let _ = self.0.unlock();
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 cannot be ours; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
        };
        let file = opts.open(path)?;
        // A read-only open of a directory succeeds on Linux; a directory is
        // never one of our files.
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        Ok(Arc::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(StdLock(file)))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    #[cfg(target_os = "linux")]
    fn allocate(&self, len: u64) -> io::Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        loop {
            return match fallocate(&self.0, FallocateFlags::empty(), 0, len) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                // The file system has no fallocate: the caller writes zeros.
                Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
    }
}
