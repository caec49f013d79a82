//! An in-memory file system: fast, deterministic, no crash semantics.

use super::{DirEntry, DirLock, EntryType, OpenMode, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A [`Storage`] kept in memory. Every write is immediately "durable" and
/// nothing is ever lost: use it for fast tests and fuzzing of the log's
/// logic, not for crash testing (the crash simulator is a separate storage).
///
/// Files are shared by path: opening the same path twice gives two handles on
/// one content, as on a real file system. A removed file stays readable
/// through handles opened before the removal.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    inner: Arc<Mutex<MemFs>>,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<PathBuf, Arc<RwLock<Vec<u8>>>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// Put `bytes` at `path` as a whole file (creating its directory), for
    /// tests and fuzzing that start from given contents.
    pub fn insert_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut fs = self.fs();
        if let Some(parent) = path.parent() {
            fs.dirs.insert(parent.to_path_buf());
        }
        fs.files
            .insert(path.to_path_buf(), Arc::new(RwLock::new(bytes)));
    }

    /// A copy of the file at `path`, if it exists.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let fs = self.fs();
        let f = fs.files.get(path)?;
        let data = f.read().unwrap_or_else(|e| e.into_inner());
        Some(data.clone())
    }

    fn fs(&self) -> MutexGuard<'_, MemFs> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct MemFile {
    data: Arc<RwLock<Vec<u8>>>,
    writable: bool,
}

#[derive(Debug)]
struct MemLock {
    fs: Arc<Mutex<MemFs>>,
    dir: PathBuf,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut fs = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        fs.locks.remove(&self.dir);
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file or directory")
}

impl Storage for MemStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        for d in dir.ancestors() {
            fs.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let fs = self.fs();
        if !fs.dirs.contains(dir) {
            return Err(not_found());
        }
        let files = fs.files.keys().map(|p| (p, EntryType::File));
        let dirs = fs.dirs.iter().map(|p| (p, EntryType::Dir));
        let mut out = Vec::new();
        for (path, kind) in files.chain(dirs) {
            if path.parent() == Some(dir)
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                out.push(DirEntry::new(name, kind));
            }
        }
        Ok(out)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut fs = self.fs();
        let data = match (mode, fs.files.get(path)) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            (OpenMode::CreateNew, None) => {
                if !path.parent().is_some_and(|p| fs.dirs.contains(p)) {
                    return Err(not_found());
                }
                let data = Arc::new(RwLock::new(Vec::new()));
                fs.files.insert(path.to_path_buf(), data.clone());
                data
            }
            (_, Some(d)) => d.clone(),
            (_, None) => return Err(not_found()),
        };
        Ok(Arc::new(MemFile {
            data,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        let data = fs.files.remove(from).ok_or_else(not_found)?;
        fs.files.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.fs()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(not_found)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fs().dirs.contains(dir) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let mut fs = self.fs();
        if !fs.dirs.contains(dir) {
            return Err(not_found());
        }
        if !fs.locks.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock {
            fs: self.inner.clone(),
            dir: dir.to_path_buf(),
        })))
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let Ok(off) = usize::try_from(offset) else {
            return Ok(0);
        };
        if off >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        let off = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = off
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("offset too large"))?;
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        if data.len() < end {
            data.resize(end, 0);
        }
        data[off..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        self.data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }
}
