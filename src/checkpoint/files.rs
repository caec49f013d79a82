//! Checkpoints as files in one directory, on any [`Storage`].
//!
//! Files in the directory:
//! - `checkpoint-NNNNNNNNNNNNNNNNNNNN.ckpt`: a checkpoint taken at batch time
//!   `N` (20 decimal digits, so name order is time order);
//! - `checkpoint-NNNNNNNNNNNNNNNNNNNN.ckpt.tmp`: one being written; never
//!   read, removed on open;
//! - anything else (the journal's directory, a `LOCK`, an editor's backup) is
//!   not the store's and is left alone.

use super::backend::{CheckpointBackend, Listed, Listing};
use super::format::{CHECKPOINT_HEADER_BYTES, CheckpointHeader};
use super::store::EncodedCheckpoint;
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile, read_exact_at};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TEMP_SUFFIX: &str = ".ckpt.tmp";
const TIME_DIGITS: usize = 20;

/// The file name of the checkpoint taken at `batch_time`.
pub fn checkpoint_file_name(batch_time: u64) -> String {
    format!("{PREFIX}{batch_time:0TIME_DIGITS$}{SUFFIX}")
}

/// What a directory entry is, by its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Checkpoint(u64),
    Temp,
    Foreign,
}

fn classify(name: &str) -> Entry {
    let time_then = |suffix: &str| -> Option<u64> {
        let digits = name.strip_prefix(PREFIX)?.strip_suffix(suffix)?;
        if digits.len() != TIME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    if let Some(t) = time_then(SUFFIX) {
        Entry::Checkpoint(t)
    } else if time_then(TEMP_SUFFIX).is_some() {
        Entry::Temp
    } else {
        Entry::Foreign
    }
}

/// The checkpoint files of one directory.
#[derive(Debug)]
pub(crate) struct FileCheckpoints {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    keep: usize,
    /// Held by `put`; the next write sequence number once known (learnt
    /// from the headers at the first write).
    write_lock: Mutex<Option<u64>>,
}

impl FileCheckpoints {
    /// Creates `dir` if needed and fsyncs its parent, removes temporary
    /// files a crashed write left, and fsyncs `dir` (so the entries a
    /// crashed predecessor renamed into place are durable before they are
    /// trusted). Reads no checkpoint. `keep` is at least 1.
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, keep: usize) -> Result<Self> {
        crate::storage::create_dir_durably(&*storage, dir)?;
        let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
        // Only regular files: a directory or FIFO named like a temporary file
        // is not ours to remove.
        let temps = names
            .iter()
            .filter(|e| e.is_file() && classify(&e.name) == Entry::Temp);
        for entry in temps {
            remove_if_present(&*storage, &dir.join(&entry.name))?;
        }
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", dir, e))?;
        Ok(FileCheckpoints {
            storage,
            dir: dir.to_path_buf(),
            keep,
            write_lock: Mutex::new(None),
        })
    }

    fn write_temp_and_rename(
        &self,
        tmp: &Path,
        path: &Path,
        (header, body): ([u8; CHECKPOINT_HEADER_BYTES], &[u8]),
    ) -> Result<()> {
        let st = &*self.storage;
        remove_if_present(st, tmp)?;
        let file = st
            .open(tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", tmp, e))?;
        file.write_at(&header, 0)
            .map_err(|e| Error::io("write", tmp, e))?;
        file.write_at(body, CHECKPOINT_HEADER_BYTES as u64)
            .map_err(|e| Error::io("write", tmp, e))?;
        file.sync_data()
            .map_err(|e| Error::io("sync_data", tmp, e))?;
        drop(file);
        st.rename(tmp, path)
            .map_err(|e| Error::io("rename", tmp, e))?;
        st.sync_dir(&self.dir)
            .map_err(|e| Error::io("sync_dir", &self.dir, e))
    }

    /// Remove checkpoint files beyond the newest `keep`, never `just_written`.
    fn retain(&self, just_written: u64) -> Result<()> {
        let (all, _) = self.list()?;
        let mut removed = false;
        for old in all.iter().skip(self.keep) {
            if old.batch_time == just_written {
                continue;
            }
            remove_if_present(&*self.storage, &old.shown)?;
            removed = true;
        }
        if removed {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
        }
        Ok(())
    }

    /// Open a checkpoint file whose name says `batch_time` and check its
    /// header and length.
    fn read_header(
        &self,
        batch_time: u64,
        path: &Path,
    ) -> Result<(Arc<dyn StorageFile>, CheckpointHeader, u64)> {
        let corrupt = |offset: usize, kind| Error::corruption(path, offset as u64, kind);
        let file = self
            .storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open", path, e))?;
        let file_len = file.len().map_err(|e| Error::io("len", path, e))?;
        // A version 1 header is shorter: `decode` reads what it needs.
        let mut head = [0u8; CHECKPOINT_HEADER_BYTES];
        let head_len = (file_len.min(head.len() as u64)) as usize;
        read_all(&*file, &mut head[..head_len], 0, path)?;
        let header = CheckpointHeader::decode(&head[..head_len]).map_err(|k| corrupt(0, k))?;
        if header.batch_time != batch_time {
            return Err(corrupt(
                0,
                CorruptionKind::BadHeader("batch time does not match the file name"),
            ));
        }
        header
            .check_file_len(file_len)
            .map_err(|k| corrupt(header.header_bytes(), k))?;
        Ok((file, header, file_len))
    }
}

impl CheckpointBackend for FileCheckpoints {
    /// Steps: create `NAME.tmp` (removing a stale one), write, `fdatasync`,
    /// rename to `NAME`, fsync the directory; then retention, and another
    /// directory fsync if it removed anything.
    fn put(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf> {
        let mut next = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let seq = match *next {
            Some(seq) => seq,
            None => {
                let (files, _) = self.list()?;
                files
                    .iter()
                    .filter_map(|l| l.order)
                    .map(|(_, seq)| seq)
                    .max()
                    .unwrap_or(0)
                    + 1
            }
        };
        // Used up even if the write fails: a number is never reused for
        // other bytes.
        *next = Some(seq + 1);
        let name = checkpoint_file_name(ckpt.batch_time());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        if let Err(e) = self.write_temp_and_rename(&tmp, &path, ckpt.stamped(seq)) {
            // Best effort: the next open removes it anyway.
            let _ = self.storage.remove(&tmp);
            return Err(e);
        }
        self.retain(ckpt.batch_time())?;
        Ok(path)
    }

    fn list(&self) -> Result<Listing> {
        let names = self
            .storage
            .list(&self.dir)
            .map_err(|e| Error::io("list", &self.dir, e))?;
        let mut found = Vec::new();
        let mut ignored = Vec::new();
        for entry in names {
            // A directory or FIFO named like a checkpoint is not one: never
            // read (a FIFO would block), never ranked, never removed.
            match classify(&entry.name) {
                Entry::Checkpoint(batch_time) if entry.is_file() => {
                    let shown = self.dir.join(&entry.name);
                    let order = self
                        .read_header(batch_time, &shown)
                        .ok()
                        .map(|(_, h, _)| (0, h.write_seq));
                    found.push(Listed {
                        batch_time,
                        shown,
                        name: entry.name,
                        order,
                    })
                }
                Entry::Temp if entry.is_file() => {}
                _ => ignored.push(entry.name),
            }
        }
        ignored.sort();
        Ok((
            super::backend::rank(found, |l| (l.batch_time, l.order)),
            ignored,
        ))
    }

    /// Never `None`: a file that vanished is an [`Error::Io`] (`NotFound`).
    fn get(&self, listed: &Listed) -> Result<Option<Vec<u8>>> {
        let at = &self.dir.join(&listed.name);
        let (file, _, file_len) = self.read_header(listed.batch_time, at)?;
        // `read_header` checked the length against the header, whose body
        // length `decode` bounded by DECODE_BYTES_MAX.
        let len = usize::try_from(file_len).map_err(|_| {
            Error::corruption(
                at,
                0,
                CorruptionKind::LengthOutOfBounds {
                    len: file_len,
                    max: usize::MAX as u64,
                },
            )
        })?;
        let mut bytes = vec![0u8; len];
        read_all(&*file, &mut bytes, 0, at)?;
        Ok(Some(bytes))
    }

    /// A file whose header cannot be read or checked is left out (recovery
    /// cannot use it either). Reads one header per file.
    fn journal_floor(&self) -> Result<Option<u64>> {
        let (files, _) = self.list()?;
        Ok(files
            .iter()
            .filter_map(|l| self.read_header(l.batch_time, &l.shown).ok())
            .map(|(_, h, _)| h.journal_lsn)
            .min())
    }
}

/// Read exactly `buf.len()` bytes at `offset`; a file that ends first (it
/// shrank since its length was read) is truncated.
fn read_all(file: &dyn StorageFile, buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    match read_exact_at(file, buf, offset) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::corruption(path, offset, CorruptionKind::Truncated)),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn remove_if_present(storage: &dyn Storage, path: &Path) -> Result<()> {
    match storage.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_time_order_and_classify_back() {
        let mut names: Vec<String> = [10u64, 9, 0, 100, u64::MAX]
            .iter()
            .map(|&t| checkpoint_file_name(t))
            .collect();
        names.sort();
        let times: Vec<Entry> = names.iter().map(|n| classify(n)).collect();
        assert_eq!(
            times,
            [0, 9, 10, 100, u64::MAX].map(Entry::Checkpoint).to_vec()
        );
        assert_eq!(
            checkpoint_file_name(1_500),
            "checkpoint-00000000000000001500.ckpt"
        );
    }

    #[test]
    fn stray_names_are_foreign() {
        for n in [
            "LOCK",
            ".DS_Store",
            "journal",
            "checkpoint-00000000000000001500.ckpt~",
            "checkpoint-1500.ckpt",
            "checkpoint-0000000000000000150x.ckpt",
            "checkpoint-99999999999999999999.ckpt",
            "Checkpoint-00000000000000001500.ckpt",
            "00000000000000001500.ckpt",
        ] {
            assert_eq!(classify(n), Entry::Foreign, "{n}");
        }
        assert_eq!(
            classify("checkpoint-00000000000000001500.ckpt.tmp"),
            Entry::Temp
        );
    }
}
