//! The file-system seam.
//!
//! Every byte the log reads or writes goes through [`Storage`] and
//! [`StorageFile`]. The seam is deliberately narrow (open, positional read and
//! write, length, sync, rename, remove, list, directory sync, lock) so that a
//! simulated file system, a fault-injecting wrapper or an object-store backend
//! can stand in for the real one and exercise the production code paths.
//!
//! Implementations in this crate:
//! - [`StdStorage`]: the operating system's file system (Unix).
//! - [`MemStorage`]: in memory, nothing ever lost; for fast tests and fuzzing.
//! - [`FaultyStorage`]: wraps another storage and injects failures (EIO on a
//!   chosen sync, ENOSPC after a byte budget) and counts syncs.

mod fault;
mod mem;
mod std_fs;

pub use fault::{FaultPlan, FaultyStorage};
pub use mem::MemStorage;
pub use std_fs::NotRegularFile;
pub use std_fs::StdStorage;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create a new file for reading and writing; fail if it exists.
    CreateNew,
}

/// What a directory entry is, as [`Storage::list`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// A regular file, or a symbolic link to one.
    File,
    /// A directory, or a symbolic link to one.
    Dir,
    /// Anything else: a FIFO, a socket, a device, a dangling link. Never one
    /// of the crate's files; opening one could block, so nothing does.
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// The entry's name (not its path).
    pub name: String,
    /// What the entry is.
    pub kind: EntryType,
}

impl DirEntry {
    /// An entry named `name` of kind `kind`.
    pub fn new(name: impl Into<String>, kind: EntryType) -> Self {
        DirEntry {
            name: name.into(),
            kind,
        }
    }

    /// True if the entry is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == EntryType::File
    }
}

/// True if `e` says the path is a directory or another non-regular file
/// (what [`Storage::open`] returns for them): an entry that merely looks like
/// one of ours.
pub fn is_not_a_file(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::IsADirectory
        || e.get_ref()
            .is_some_and(|inner| inner.is::<NotRegularFile>())
}

/// A file system the log runs on.
///
/// Paths are plain paths; an implementation decides what they mean. Nothing
/// here promises durability unless it says so: a created, renamed or removed
/// entry is durable only after [`Storage::sync_dir`] on its directory.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Create `dir` and its missing parents. Not durable until the parent is
    /// synced with [`Storage::sync_dir`].
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The entries of `dir` (names, not paths, and what each is), in no
    /// particular order. Names that are not UTF-8 are left out: they cannot
    /// be the crate's.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Open the file at `path`. Never blocks on a FIFO or device: an entry
    /// that is not a regular file is refused with an error for which
    /// [`is_not_a_file`] is true (`IsADirectory` for a directory).
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically rename `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Make the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take an exclusive advisory lock on `dir`. Returns `Ok(None)` at once if
    /// another holder (in this process or another) has it. The lock is held
    /// until the returned guard is dropped.
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>>;
    /// Whether the log may call this storage from a background thread of its
    /// own (to prepare the next segment ahead of need). A storage whose
    /// operations must happen in a reproducible order on the caller's threads
    /// (a simulator counting steps, a fault plan counting calls) returns
    /// false. Default true. A wrapper around another storage should forward
    /// this (and [`StorageFile::allocate`]), or it silently changes what the
    /// log does on the wrapped storage.
    fn allows_background_io(&self) -> bool {
        true
    }
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Read into `buf` from `offset`, returning how many bytes were read; fewer
    /// than `buf.len()` only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write all of `buf` at `offset`, extending the file if needed. Not
    /// durable until [`StorageFile::sync_data`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Set the file's length (truncate or extend with zeros). Not durable until
    /// [`StorageFile::sync_all`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make the file's data, and the metadata needed to read it back (its
    /// size), durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Make the file's data and all of its metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Reserve disk blocks for the file's first `len` bytes without writing
    /// them (Linux `fallocate`; the range reads as zeros and the length
    /// becomes at least `len`), so that later writes there need no block
    /// allocation. Returns `Ok(false)` if this storage cannot do it, in which
    /// case the caller writes zeros instead. Not durable until
    /// [`StorageFile::sync_all`]. The default cannot.
    fn allocate(&self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
    /// The next range `[start, end)` at or after `offset` that may hold
    /// data; everything between `offset` and `start` is a hole and reads as
    /// zeros (Linux `SEEK_DATA` / `SEEK_HOLE`). `Ok(None)` if only holes
    /// follow. Lets a scan for nonzero bytes skip the holes of a sparse file
    /// instead of reading gigabytes of zeros. The default knows of no holes:
    /// `[offset, u64::MAX)`. A wrapper around another storage's file should
    /// forward this, or scans through it read every byte.
    fn data_range(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        Ok(Some((offset, u64::MAX)))
    }
}

/// A held directory lock; dropping it releases the lock.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// Read exactly `buf.len()` bytes at `offset`, or report how many were there.
/// Returns `Ok(false)` if the file ends first.
pub(crate) fn read_exact_at(
    file: &dyn StorageFile,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Ok(false);
        }
        done += n;
    }
    Ok(true)
}

/// Create `dir` and any missing ancestors so that they survive a power loss:
/// after creating, fsync the parent of every level that was created (top
/// down), and always the parent of `dir` itself.
///
/// # Errors
/// [`crate::Error::Io`] naming the directory that failed.
pub(crate) fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> crate::Result<()> {
    let parent_of = |d: &Path| match d.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut missing = Vec::new();
    let mut level = Some(dir);
    while let Some(d) = level {
        // The root, the empty path, or an existing directory: stop.
        if d.parent().is_none() || d.as_os_str().is_empty() || storage.list(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        level = d.parent();
    }
    storage
        .create_dir_all(dir)
        .map_err(|e| crate::Error::io("create_dir", dir, e))?;
    let mut to_sync: Vec<std::path::PathBuf> = missing.iter().rev().map(|d| parent_of(d)).collect();
    let own_parent = parent_of(dir);
    if !to_sync.contains(&own_parent) {
        to_sync.push(own_parent);
    }
    for p in to_sync {
        storage
            .sync_dir(&p)
            .map_err(|e| crate::Error::io("sync_dir", &p, e))?;
    }
    Ok(())
}
