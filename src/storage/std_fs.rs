//! The operating system's file system.

use super::{DirEntry, DirLock, EntryType, OpenMode, Storage, StorageFile};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
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

/// An entry that is neither a regular file nor a directory (a FIFO, a
/// socket, a device), refused by [`StdStorage::open`] so that nothing blocks
/// on it. Carried inside the `io::Error`; see [`super::is_not_a_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegularFile {
    /// What it is instead: "a FIFO", "a socket", "a device", "not a regular file".
    pub what: &'static str,
}

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, not a regular file", self.what)
    }
}

impl std::error::Error for NotRegularFile {}

fn not_regular(ft: fs::FileType) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let what = if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile { what })
}

/// The held `flock`, with the process that took it.
#[derive(Debug)]
struct StdLock {
    file: File,
    owner_pid: u32,
}

impl DirLock for StdLock {}

impl Drop for StdLock {
    fn drop(&mut self) {
        // The flock belongs to the open file description, which a forked
        // child shares. In the process that took the lock, unlock explicitly:
        // a child being spawned by another thread holds a copy of the
        // descriptor until it execs, and a plain close would leave the log
        // locked for that moment. In a forked child (another pid) only close
        // the descriptor: an unlock there would release the parent's lock,
        // and a third process could then open the log beside the parent.
        if std::process::id() == self.owner_pid {
            let _ = self.file.unlock();
        }
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 cannot be ours; skip them.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let mut ft = entry.file_type()?;
            if ft.is_symlink() {
                // What the link points at, as `open` would see it.
                match fs::metadata(entry.path()) {
                    Ok(meta) => ft = meta.file_type(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        out.push(DirEntry::new(name, EntryType::Other));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let kind = if ft.is_file() {
                EntryType::File
            } else if ft.is_dir() {
                EntryType::Dir
            } else {
                EntryType::Other
            };
            out.push(DirEntry::new(name, kind));
        }
        Ok(out)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
        };
        // Non-blocking, so that a FIFO (or a device) put where a segment or
        // checkpoint should be is refused below instead of blocking the open
        // forever with the directory lock held. On a regular file the flag
        // changes nothing.
        opts.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
        let file = opts.open(path)?;
        let ft = file.metadata()?.file_type();
        // A read-only open of a directory succeeds on Linux; a directory is
        // never one of our files.
        if ft.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        if !ft.is_file() {
            return Err(not_regular(ft));
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
            Ok(()) => Ok(Some(Box::new(StdLock {
                file,
                owner_pid: std::process::id(),
            }))),
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
    fn data_range(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        use rustix::fs::{SeekFrom, seek};
        use rustix::io::Errno;
        // The seeks move this descriptor's offset, which nothing here uses:
        // every read and write is positional.
        let start = match seek(&self.0, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // Only a hole (or nothing) from `offset` to the end.
            Err(Errno::NXIO) => return Ok(None),
            // The file system cannot say: treat everything as data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((offset, u64::MAX))),
            Err(e) => return Err(e.into()),
        };
        let end = seek(&self.0, SeekFrom::Hole(start))?;
        Ok(Some((start, end.max(start))))
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
