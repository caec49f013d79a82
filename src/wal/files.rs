//! Segment files opened on demand, with a bound on how many sealed ones stay
//! open, so that the descriptors a log holds do not grow with the log (a log
//! of thousands of segments must open under `ulimit -n 1024`).
//!
//! The tail segment, which the writer appends to, is pinned open. A sealed
//! segment is opened (read-only) when a read or an iterator reaches it and
//! stays open until [`OPEN_SEALED_SEGMENTS_MAX`] others have been opened
//! after it. A reader that already holds the file keeps it past eviction:
//! eviction only drops the cache's reference.

use crate::limits::OPEN_SEALED_SEGMENTS_MAX;
use crate::storage::{OpenMode, Storage, StorageFile};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The open sealed segments of one log, oldest opened first.
pub(crate) struct FileCache {
    storage: Arc<dyn Storage>,
    cap: usize,
    open: Mutex<VecDeque<Weak<Slot>>>,
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache").field("cap", &self.cap).finish()
    }
}

impl FileCache {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Arc<FileCache> {
        Self::with_capacity(storage, OPEN_SEALED_SEGMENTS_MAX)
    }

    pub(crate) fn with_capacity(storage: Arc<dyn Storage>, cap: usize) -> Arc<FileCache> {
        Arc::new(FileCache {
            storage,
            cap: cap.max(1),
            open: Mutex::new(VecDeque::new()),
        })
    }

    /// Count `slot` as open; close the oldest beyond the bound.
    fn admit(&self, slot: &Arc<Slot>) {
        let mut victims = Vec::new();
        if let Ok(mut open) = self.open.lock() {
            open.retain(|w| w.strong_count() > 0);
            open.push_back(Arc::downgrade(slot));
            while open.len() > self.cap {
                if let Some(w) = open.pop_front() {
                    victims.push(w);
                }
            }
        }
        // Outside the list's lock: a slot's lock is taken only on its own
        // or here, never while waiting for the list.
        for w in victims {
            if let Some(victim) = w.upgrade()
                && let Ok(mut file) = victim.file.lock()
            {
                *file = None;
            }
        }
    }
}

#[derive(Debug)]
struct Slot {
    path: PathBuf,
    file: Mutex<Option<Arc<dyn StorageFile>>>,
    /// `None` while pinned (the tail): never counted, never evicted.
    cache: Mutex<Option<Arc<FileCache>>>,
}

/// One segment's file: open now (pinned), or opened when first needed.
/// Clones share the file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile(Arc<Slot>);

impl SegmentFile {
    /// The tail segment, already open: stays open until [`Self::unpin`].
    pub(crate) fn pinned(path: &Path, file: Arc<dyn StorageFile>) -> Self {
        SegmentFile(Arc::new(Slot {
            path: path.to_path_buf(),
            file: Mutex::new(Some(file)),
            cache: Mutex::new(None),
        }))
    }

    /// A sealed segment, opened read-only through `cache` when needed.
    pub(crate) fn lazy(path: &Path, cache: &Arc<FileCache>) -> Self {
        SegmentFile(Arc::new(Slot {
            path: path.to_path_buf(),
            file: Mutex::new(None),
            cache: Mutex::new(Some(cache.clone())),
        }))
    }

    /// The segment was sealed: from now on its file counts against the
    /// cache's bound and may be closed.
    pub(crate) fn unpin(&self, cache: &Arc<FileCache>) {
        let Ok(mut c) = self.0.cache.lock() else {
            return;
        };
        if c.is_none() {
            *c = Some(cache.clone());
            drop(c);
            let open = self.0.file.lock().map(|f| f.is_some()).unwrap_or(false);
            if open {
                cache.admit(&self.0);
            }
        }
    }

    /// The open file, opening it if the cache closed it (or never opened it).
    ///
    /// # Errors
    /// What the storage's `open` returns (`NotFound` once retention removed
    /// the segment).
    pub(crate) fn get(&self) -> io::Result<Arc<dyn StorageFile>> {
        let poisoned = || io::Error::other("segment file slot poisoned");
        let cache = self.0.cache.lock().map_err(|_| poisoned())?.clone();
        let mut file = self.0.file.lock().map_err(|_| poisoned())?;
        if let Some(f) = &*file {
            return Ok(f.clone());
        }
        let Some(cache) = cache else {
            return Err(io::Error::other("pinned segment file was closed"));
        };
        let f = cache.storage.open(&self.0.path, OpenMode::Read)?;
        *file = Some(f.clone());
        drop(file);
        cache.admit(&self.0);
        Ok(f)
    }

    /// True if the file is open now (tests of the bound).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.0.file.lock().map(|f| f.is_some()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn at_most_cap_sealed_files_stay_open_and_a_closed_one_reopens() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        let cache = FileCache::with_capacity(storage.clone(), 3);
        let files: Vec<SegmentFile> = (0..10)
            .map(|i| {
                let path = dir.join(format!("{i}"));
                let f = storage.open(&path, OpenMode::CreateNew).unwrap();
                f.write_at(&[i as u8], 0).unwrap();
                SegmentFile::lazy(&path, &cache)
            })
            .collect();
        for (i, f) in files.iter().enumerate() {
            let mut b = [0u8];
            f.get().unwrap().read_at(&mut b, 0).unwrap();
            assert_eq!(b[0], i as u8);
        }
        let open: Vec<bool> = files.iter().map(SegmentFile::is_open).collect();
        assert_eq!(open.iter().filter(|&&o| o).count(), 3, "{open:?}");
        assert!(
            open[7] && open[8] && open[9],
            "the newest opened stay: {open:?}"
        );
        // The first was closed; it opens again and reads the same byte.
        let mut b = [9u8];
        files[0].get().unwrap().read_at(&mut b, 0).unwrap();
        assert_eq!(b[0], 0);
    }

    #[test]
    fn a_pinned_file_is_never_evicted_until_unpinned() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        let cache = FileCache::with_capacity(storage.clone(), 1);
        let tail_path = dir.join("tail");
        let tail = SegmentFile::pinned(
            &tail_path,
            storage.open(&tail_path, OpenMode::CreateNew).unwrap(),
        );
        let others: Vec<SegmentFile> = (0..3)
            .map(|i| {
                let path = dir.join(format!("{i}"));
                storage.open(&path, OpenMode::CreateNew).unwrap();
                SegmentFile::lazy(&path, &cache)
            })
            .collect();
        for f in &others {
            f.get().unwrap();
        }
        assert!(tail.is_open());
        tail.unpin(&cache);
        others[0].get().unwrap();
        assert!(!tail.is_open(), "an unpinned file counts against the bound");
    }
}
