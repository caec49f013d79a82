//! One forwarding [`Storage`] for the tests that act between two of the
//! log's calls: record what was written or synced, count bytes read, fail
//! or hold a call, keep a second image of a file. [`Forwarding`] passes
//! every call to an inner storage unchanged and lets a test's
//! [`StorageHooks`] (and, per open file, [`FileHooks`]) see each call before
//! it is made and after it succeeded. Everything a test does not hook is
//! forwarded, including the calls with defaults in the traits
//! (`allows_background_io`, `allocate`, `data_range`), so wrapping a storage
//! never changes what the log does on it.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use streamwal::storage::{DirEntry, DirLock, OpenMode, Storage, StorageFile};

/// A call to [`Storage`], as the hooks see it.
#[derive(Debug, Clone, Copy)]
pub enum StorageCall<'a> {
    CreateDirAll(&'a Path),
    List(&'a Path),
    Open(&'a Path, OpenMode),
    Rename { from: &'a Path, to: &'a Path },
    Remove(&'a Path),
    SyncDir(&'a Path),
    TryLockDir(&'a Path),
}

/// A call to [`StorageFile`], as the hooks see it.
#[derive(Debug, Clone, Copy)]
pub enum FileCall<'a> {
    ReadAt { offset: u64, len: usize },
    WriteAt { offset: u64, buf: &'a [u8] },
    Len,
    SetLen(u64),
    SyncData,
    SyncAll,
    Allocate(u64),
    DataRange(u64),
}

/// What a successful [`FileCall`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// `write_at`, `set_len`, `sync_data`, `sync_all`: nothing but success.
    Done,
    /// `read_at`: how many bytes were read.
    Read(usize),
    /// `len`.
    Len(u64),
    /// `allocate`: whether the blocks were reserved.
    Allocated(bool),
    /// `data_range`.
    DataRange(Option<(u64, u64)>),
}

/// What a test does around the storage's own calls. Every method defaults
/// to doing nothing.
pub trait StorageHooks: Send + Sync + fmt::Debug {
    /// Before `call` reaches the inner storage. An error is returned in
    /// place of making the call; a panic stands for a storage that panics.
    fn before(&self, call: StorageCall<'_>) -> io::Result<()> {
        let _ = call;
        Ok(())
    }

    /// After `call` succeeded on the inner storage (not after a failure).
    fn after(&self, call: StorageCall<'_>) {
        let _ = call;
    }

    /// The hooks for the file just opened at `path` (called once the inner
    /// open succeeded). `None`: the inner file is handed out as it is.
    fn file(&self, path: &Path, mode: OpenMode) -> Option<Arc<dyn FileHooks>> {
        let _ = (path, mode);
        None
    }
}

/// What a test does around one open file's calls. Every method defaults to
/// doing nothing.
pub trait FileHooks: Send + Sync + fmt::Debug {
    /// Before `call` reaches the inner file. An error is returned in place
    /// of making the call.
    fn before(&self, call: FileCall<'_>) -> io::Result<()> {
        let _ = call;
        Ok(())
    }

    /// After `call` succeeded on the inner file, with what it returned.
    fn after(&self, call: FileCall<'_>, returned: Returned) {
        let _ = (call, returned);
    }
}

/// An inner storage with a test's hooks around every call.
#[derive(Debug, Clone)]
pub struct Forwarding {
    inner: Arc<dyn Storage>,
    hooks: Arc<dyn StorageHooks>,
}

impl Forwarding {
    pub fn new(inner: Arc<dyn Storage>, hooks: Arc<dyn StorageHooks>) -> Forwarding {
        Forwarding { inner, hooks }
    }

    /// `call` made with `op` on the inner storage, between the hooks.
    fn forward<T>(
        &self,
        call: StorageCall<'_>,
        op: impl FnOnce(&dyn Storage) -> io::Result<T>,
    ) -> io::Result<T> {
        self.hooks.before(call)?;
        let value = op(&*self.inner)?;
        self.hooks.after(call);
        Ok(value)
    }
}

impl Storage for Forwarding {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.forward(StorageCall::CreateDirAll(dir), |s| s.create_dir_all(dir))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.forward(StorageCall::List(dir), |s| s.list(dir))
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.forward(StorageCall::Open(path, mode), |s| s.open(path, mode))?;
        Ok(match self.hooks.file(path, mode) {
            Some(hooks) => Arc::new(ForwardingFile { inner, hooks }),
            None => inner,
        })
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.forward(StorageCall::Rename { from, to }, |s| s.rename(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.forward(StorageCall::Remove(path), |s| s.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.forward(StorageCall::SyncDir(dir), |s| s.sync_dir(dir))
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.forward(StorageCall::TryLockDir(dir), |s| s.try_lock_dir(dir))
    }
    fn allows_background_io(&self) -> bool {
        self.inner.allows_background_io()
    }
}

/// A file of a [`Forwarding`] storage whose test asked for hooks on it.
#[derive(Debug)]
struct ForwardingFile {
    inner: Arc<dyn StorageFile>,
    hooks: Arc<dyn FileHooks>,
}

impl ForwardingFile {
    /// `call` made with `op` on the inner file, between the hooks;
    /// `returned` tells the after-hook what it gave.
    fn forward<T: Copy>(
        &self,
        call: FileCall<'_>,
        op: impl FnOnce(&dyn StorageFile) -> io::Result<T>,
        returned: impl FnOnce(T) -> Returned,
    ) -> io::Result<T> {
        self.hooks.before(call)?;
        let value = op(&*self.inner)?;
        self.hooks.after(call, returned(value));
        Ok(value)
    }
}

impl StorageFile for ForwardingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let call = FileCall::ReadAt {
            offset,
            len: buf.len(),
        };
        self.forward(call, |f| f.read_at(buf, offset), Returned::Read)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let call = FileCall::WriteAt { offset, buf };
        self.forward(call, |f| f.write_at(buf, offset), |()| Returned::Done)
    }
    fn len(&self) -> io::Result<u64> {
        self.forward(FileCall::Len, |f| f.len(), Returned::Len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let call = FileCall::SetLen(len);
        self.forward(call, |f| f.set_len(len), |()| Returned::Done)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.forward(FileCall::SyncData, |f| f.sync_data(), |()| Returned::Done)
    }
    fn sync_all(&self) -> io::Result<()> {
        self.forward(FileCall::SyncAll, |f| f.sync_all(), |()| Returned::Done)
    }
    fn allocate(&self, len: u64) -> io::Result<bool> {
        let call = FileCall::Allocate(len);
        self.forward(call, |f| f.allocate(len), Returned::Allocated)
    }
    fn data_range(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let call = FileCall::DataRange(offset);
        self.forward(call, |f| f.data_range(offset), Returned::DataRange)
    }
}
