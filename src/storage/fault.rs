//! A storage wrapper that injects failures and counts operations.

use super::{DirLock, OpenMode, Storage, StorageFile};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which failures a [`FaultyStorage`] injects, and what it has counted so far.
///
/// Shared through an `Arc`: a test keeps one handle and changes the plan while
/// the log runs. Counts start at zero; "the Nth" is 1-based; 0 means never.
#[derive(Debug, Default)]
pub struct FaultPlan {
    fail_file_sync_nth: AtomicU64,
    panic_file_sync_nth: AtomicU64,
    fail_write_nth: AtomicU64,
    write_budget_bytes: AtomicU64,
    file_syncs: AtomicU64,
    dir_syncs: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
}

impl FaultPlan {
    /// A plan that injects nothing.
    pub fn new() -> Arc<Self> {
        let plan = FaultPlan::default();
        plan.write_budget_bytes.store(u64::MAX, Ordering::SeqCst);
        Arc::new(plan)
    }

    /// Fail the `n`-th file sync (`sync_data` or `sync_all`) from now on
    /// with EIO, counting from the syncs already done. Later syncs succeed
    /// again, as a kernel that dropped the dirty pages would let them.
    pub fn fail_file_sync_after(&self, n: u64) {
        let done = self.file_syncs.load(Ordering::SeqCst);
        self.fail_file_sync_nth.store(done + n, Ordering::SeqCst);
    }

    /// Panic in the `n`-th file sync from now on (a `Storage` with a bug):
    /// the log must fail its appenders, not hang them.
    pub fn panic_file_sync_after(&self, n: u64) {
        let done = self.file_syncs.load(Ordering::SeqCst);
        self.panic_file_sync_nth.store(done + n, Ordering::SeqCst);
    }

    /// Fail the `n`-th write from now on with EIO, writing nothing.
    pub fn fail_write_after(&self, n: u64) {
        let done = self.writes.load(Ordering::SeqCst);
        self.fail_write_nth.store(done + n, Ordering::SeqCst);
    }

    /// Allow `bytes` more bytes to be written, then fail writes with ENOSPC
    /// (`io::ErrorKind::StorageFull`). The write that crosses the budget
    /// writes the prefix that fits, then fails, like a full disk.
    pub fn set_write_budget(&self, bytes: u64) {
        let done = self.bytes_written.load(Ordering::SeqCst);
        self.write_budget_bytes
            .store(done.saturating_add(bytes), Ordering::SeqCst);
    }

    /// Lift every injected failure.
    pub fn clear(&self) {
        self.fail_file_sync_nth.store(0, Ordering::SeqCst);
        self.panic_file_sync_nth.store(0, Ordering::SeqCst);
        self.fail_write_nth.store(0, Ordering::SeqCst);
        self.write_budget_bytes.store(u64::MAX, Ordering::SeqCst);
    }

    /// File syncs (`sync_data` + `sync_all`) attempted so far.
    pub fn file_syncs(&self) -> u64 {
        self.file_syncs.load(Ordering::SeqCst)
    }

    /// Directory syncs attempted so far.
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs.load(Ordering::SeqCst)
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn on_file_sync(&self) -> io::Result<()> {
        let n = self.file_syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.panic_file_sync_nth.load(Ordering::SeqCst) {
            panic!("injected panic in a file sync");
        }
        if n == self.fail_file_sync_nth.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO on sync"));
        }
        Ok(())
    }
}

/// A [`Storage`] that forwards to another and injects the failures its
/// [`FaultPlan`] asks for.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<FaultPlan>,
}

impl FaultyStorage {
    /// Wrap `inner`, injecting what `plan` asks for.
    pub fn new(inner: Arc<dyn Storage>, plan: Arc<FaultPlan>) -> Self {
        FaultyStorage { inner, plan }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    plan: Arc<FaultPlan>,
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<super::DirEntry>> {
        self.inner.list(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(FaultyFile {
            inner,
            plan: self.plan.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.dir_syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_dir(dir)
    }

    /// Calls must happen in a reproducible order on the caller's threads.
    fn allows_background_io(&self) -> bool {
        false
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.inner.try_lock_dir(dir)
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let plan = &self.plan;
        let n = plan.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == plan.fail_write_nth.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO on write"));
        }
        let len = buf.len() as u64;
        let before = plan.bytes_written.fetch_add(len, Ordering::SeqCst);
        let budget = plan.write_budget_bytes.load(Ordering::SeqCst);
        if before.saturating_add(len) > budget {
            let fits = budget.saturating_sub(before);
            // `fits < len`, and `len` came from a slice length.
            let fits = usize::try_from(fits).unwrap_or(0).min(buf.len());
            if fits > 0 {
                self.inner.write_at(&buf[..fits], offset)?;
            }
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected ENOSPC",
            ));
        }
        self.inner.write_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.plan.on_file_sync()?;
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.plan.on_file_sync()?;
        self.inner.sync_all()
    }

    fn allocate(&self, len: u64) -> io::Result<bool> {
        self.inner.allocate(len)
    }

    fn data_range(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.data_range(offset)
    }
}
