//! The checkpoint store: durable atomic writes, retention, newest-valid reads.
//!
//! Files in the directory:
//! - `checkpoint-NNNNNNNNNNNNNNNNNNNN.ckpt`: a checkpoint taken at batch time
//!   `N` (20 decimal digits, so name order is time order);
//! - `checkpoint-NNNNNNNNNNNNNNNNNNNN.ckpt.tmp`: one being written; never
//!   read, removed on open;
//! - anything else (the journal's directory, a `LOCK`, an editor's backup) is
//!   not the store's and is left alone.

use super::Checkpoint;
use super::format::{self, CHECKPOINT_HEADER_BYTES, CheckpointHeader};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::CHECKPOINTS_KEPT_DEFAULT;
use crate::storage::{OpenMode, StdStorage, Storage, StorageFile, read_exact_at};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cmp::Reverse;
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

/// Checkpoint files (batch time, path), newest first; foreign names, sorted.
type Listing = (Vec<(u64, PathBuf)>, Vec<String>);

/// Options for [`CheckpointStore::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// How many checkpoint files to keep (the newest by batch time); at
    /// least 1. Default [`CHECKPOINTS_KEPT_DEFAULT`] (10).
    pub keep: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            keep: CHECKPOINTS_KEPT_DEFAULT,
        }
    }
}

/// A checkpoint encoded by [`CheckpointStore::encode`], ready for
/// [`CheckpointStore::write_encoded`]. Holds the whole file's bytes; only
/// the encoder makes one, so its bytes are always a valid checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCheckpoint {
    batch_time: u64,
    bytes: Vec<u8>,
}

impl EncodedCheckpoint {
    /// The checkpoint's batch time.
    pub fn batch_time(&self) -> u64 {
        self.batch_time
    }

    /// The file's bytes (header and body).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A checkpoint file [`CheckpointStore::latest`] passed over, and why.
#[derive(Debug)]
pub struct SkippedCheckpoint {
    /// The file.
    pub file: PathBuf,
    /// Why it was skipped: [`Error::Corruption`] (torn, truncated, bit rot,
    /// a newer format version), [`Error::Decode`] (the graph type changed),
    /// or [`Error::Io`] (the file could not be opened or read).
    pub reason: Error,
}

/// What [`CheckpointStore::latest`] found.
#[derive(Debug)]
pub struct LatestCheckpoint<G> {
    /// The newest checkpoint that passed every check, with its file; `None`
    /// if there is none.
    pub checkpoint: Option<(PathBuf, Checkpoint<G>)>,
    /// Newer checkpoint files that were skipped, newest first.
    pub skipped: Vec<SkippedCheckpoint>,
    /// Names of directory entries that are not the store's (ignored).
    pub ignored_files: Vec<String>,
}

/// Checkpoints in one directory, written atomically and durably, read
/// newest-valid-first.
///
/// All I/O goes through a [`Storage`]. One store per directory at a time:
/// the store takes no lock, and [`CheckpointStore::open`] removes temporary
/// files another writer may be using. Writes through one store are
/// serialized; reads may run beside them. With the `object-store` feature,
/// [`CheckpointStore::open_at`] opens the same API over checkpoints on
/// object storage (one object each, fenced by epochs).
#[derive(Debug)]
pub struct CheckpointStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    keep: usize,
    write_lock: Mutex<()>,
    /// Set for a store on object storage: every method goes there, and the
    /// fields above are not used (`dir` names the location).
    #[cfg(feature = "object-store")]
    remote: Option<Box<crate::object::ObjectCheckpointStore>>,
}

/// Answer from the object-storage store, if this is one.
macro_rules! remote {
    ($self:ident, $r:ident => $call:expr) => {
        #[cfg(feature = "object-store")]
        if let Some($r) = &$self.remote {
            return $call;
        }
    };
}

impl CheckpointStore {
    /// Open (or create) the store in `dir` on the real file system. See
    /// [`CheckpointStore::open_with_storage`].
    ///
    /// # Errors
    /// As [`CheckpointStore::open_with_storage`].
    pub fn open(dir: impl AsRef<Path>, opts: CheckpointOptions) -> Result<CheckpointStore> {
        Self::open_with_storage(Arc::new(StdStorage::new()), dir, opts)
    }

    /// Open (or create) the store in `dir` on `storage`.
    ///
    /// Creates `dir` if needed and fsyncs its parent, removes temporary files
    /// a crashed write left, and fsyncs `dir` (so the entries a crashed
    /// predecessor renamed into place are durable before they are trusted).
    /// Reads no checkpoint.
    ///
    /// # Errors
    /// - [`Error::InvalidOptions`] if `opts.keep` is 0.
    /// - [`Error::Io`] if creating, listing, removing or syncing fails.
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: CheckpointOptions,
    ) -> Result<CheckpointStore> {
        if opts.keep == 0 {
            return Err(Error::InvalidOptions("checkpoint keep must be at least 1"));
        }
        let dir = dir.as_ref().to_path_buf();
        crate::storage::create_dir_durably(&*storage, &dir)?;
        let names = storage.list(&dir).map_err(|e| Error::io("list", &dir, e))?;
        // Only regular files: a directory or FIFO named like a temporary file
        // is not ours to remove.
        let temps = names
            .iter()
            .filter(|e| e.is_file() && classify(&e.name) == Entry::Temp);
        for entry in temps {
            let path = dir.join(&entry.name);
            remove_if_present(&*storage, &path)?;
        }
        storage
            .sync_dir(&dir)
            .map_err(|e| Error::io("sync_dir", &dir, e))?;
        Ok(CheckpointStore {
            storage,
            dir,
            keep: opts.keep,
            write_lock: Mutex::new(()),
            #[cfg(feature = "object-store")]
            remote: None,
        })
    }

    /// The store on object storage at `location` (cargo feature
    /// `object-store`): an [`ObjectCheckpointStore`](crate::object::ObjectCheckpointStore)
    /// behind this type, so that [`crate::recovery`] and
    /// [`super::CheckpointWriter`] work on it unchanged. Opening takes a new
    /// epoch and fences the stores opened before (see [`crate::object`]);
    /// `dir` is the location's URL; `latest` lists no ignored files and
    /// skips damaged objects as it skips damaged files.
    ///
    /// # Errors
    /// As [`ObjectCheckpointStore::open_at`](crate::object::ObjectCheckpointStore::open_at).
    #[cfg(feature = "object-store")]
    pub fn open_at(
        location: crate::object::ObjectLocation,
        opts: CheckpointOptions,
    ) -> Result<CheckpointStore> {
        let dir = PathBuf::from(location.url());
        let keep = opts.keep;
        let remote = crate::object::ObjectCheckpointStore::open_at(location, opts)?;
        Ok(CheckpointStore {
            storage: Arc::new(StdStorage::new()),
            dir,
            keep,
            write_lock: Mutex::new(()),
            remote: Some(Box::new(remote)),
        })
    }

    /// The object-storage store behind this one, if it is on object storage.
    #[cfg(feature = "object-store")]
    pub fn object_store(&self) -> Option<&crate::object::ObjectCheckpointStore> {
        self.remote.as_deref()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Encode `ckpt` into a checkpoint file's bytes, with no I/O. The graph
    /// is serialized now: later changes to it do not reach the bytes.
    ///
    /// # Errors
    /// - [`Error::Encode`] if the graph refuses to serialize.
    /// - [`Error::TooLarge`] if the encoding exceeds
    ///   [`crate::limits::DECODE_BYTES_MAX`].
    pub fn encode<G: Serialize>(ckpt: &Checkpoint<G>) -> Result<EncodedCheckpoint> {
        Ok(EncodedCheckpoint {
            batch_time: ckpt.batch_time,
            bytes: format::encode_file(ckpt)?,
        })
    }

    /// Encode `ckpt` and write it durably; see
    /// [`CheckpointStore::write_encoded`]. Blocks for the whole write.
    ///
    /// # Errors
    /// As [`CheckpointStore::encode`] and [`CheckpointStore::write_encoded`].
    pub fn write<G: Serialize>(&self, ckpt: &Checkpoint<G>) -> Result<PathBuf> {
        self.write_encoded(&Self::encode(ckpt)?)
    }

    /// Write an encoded checkpoint durably and atomically, then apply
    /// retention. Blocks until done; returns the checkpoint file's path.
    ///
    /// Steps: create `NAME.tmp` (removing a stale one), write, `fdatasync`,
    /// rename to `NAME`, fsync the directory. The rename is atomic: a crash
    /// at any step leaves either no new file or a whole, synced one, and a
    /// write for a batch time that already has a checkpoint replaces it, a
    /// crash leaving the old or the new file, both valid. When `Ok` returns
    /// the checkpoint is durable. Then every checkpoint file beyond the
    /// newest `keep` (by batch time in the name) is removed, except the one
    /// just written, and the directory is fsynced again.
    ///
    /// # Errors
    /// [`Error::Io`] if a step fails (`op` names it). The temporary file is
    /// removed (best effort) and earlier checkpoints are untouched, so
    /// [`Self::latest`] still returns a valid one. After any error, treat
    /// this checkpoint as not durable (do not retire the journal it covers)
    /// and write a newer one later: if the error came from the directory
    /// fsync or from retention, the new file is already in place and whole,
    /// but may not survive a power loss. The store is not poisoned: each
    /// write proves its own durability with its own syncs.
    pub fn write_encoded(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf> {
        remote!(self, r => r.write_encoded(ckpt));
        let _serial = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let name = checkpoint_file_name(ckpt.batch_time);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        if let Err(e) = self.write_temp_and_rename(&tmp, &path, &ckpt.bytes) {
            // Best effort: the next open removes it anyway.
            let _ = self.storage.remove(&tmp);
            return Err(e);
        }
        self.retain(ckpt.batch_time)?;
        Ok(path)
    }

    fn write_temp_and_rename(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
        let st = &*self.storage;
        remove_if_present(st, tmp)?;
        let file = st
            .open(tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", tmp, e))?;
        file.write_at(bytes, 0)
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
        let (all, _) = self.scan()?;
        let mut removed = false;
        for &(time, ref path) in all.iter().skip(self.keep) {
            if time == just_written {
                continue;
            }
            remove_if_present(&*self.storage, path)?;
            removed = true;
        }
        if removed {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
        }
        Ok(())
    }

    /// The checkpoint files in the directory, newest (largest batch time)
    /// first, by name alone: nothing is opened or checked.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        remote!(self, r => r.list_paths());
        Ok(self.scan()?.0)
    }

    /// The checkpoint files, newest first, and the names that are not ours.
    fn scan(&self) -> Result<Listing> {
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
                Entry::Checkpoint(t) if entry.is_file() => {
                    found.push((t, self.dir.join(&entry.name)))
                }
                Entry::Temp if entry.is_file() => {}
                _ => ignored.push(entry.name),
            }
        }
        found.sort_unstable_by_key(|&(t, _)| Reverse(t));
        ignored.sort();
        Ok((found, ignored))
    }

    /// The newest checkpoint that passes every check, trying files from the
    /// newest batch time to the oldest. Torn, truncated, corrupted,
    /// unreadable or undecodable files are skipped and listed with the
    /// reason; no valid checkpoint at all is `Ok` with `checkpoint: None`.
    /// Reads files (each at most header + [`crate::limits::DECODE_BYTES_MAX`]
    /// bytes); writes nothing.
    ///
    /// A checkpoint whose graph no longer decodes as `G` is skipped too
    /// (reason [`Error::Decode`]); an engine that changed its graph type
    /// should look at `skipped` before starting fresh.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed. Problems with one
    /// file are never errors: they are in `skipped`.
    pub fn latest<G: DeserializeOwned>(&self) -> Result<LatestCheckpoint<G>> {
        remote!(self, r => r.latest().map(|l| LatestCheckpoint {
            checkpoint: l.checkpoint,
            skipped: l
                .skipped
                .into_iter()
                .map(|s| SkippedCheckpoint {
                    file: s.object,
                    reason: s.reason,
                })
                .collect(),
            ignored_files: Vec::new(),
        }));
        let (files, ignored_files) = self.scan()?;
        let mut skipped = Vec::new();
        for (time, path) in files {
            match self.read_file(time, &path) {
                Ok(ckpt) => {
                    return Ok(LatestCheckpoint {
                        checkpoint: Some((path, ckpt)),
                        skipped,
                        ignored_files,
                    });
                }
                Err(reason) => skipped.push(SkippedCheckpoint { file: path, reason }),
            }
        }
        Ok(LatestCheckpoint {
            checkpoint: None,
            skipped,
            ignored_files,
        })
    }

    /// The smallest journal position among the checkpoint files whose
    /// header checks: the journal must keep every event after it, so that
    /// recovery from any kept checkpoint finds the events it needs. `None`
    /// if no file has a valid header. Reads 48 bytes per file.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed. A file whose header
    /// cannot be read or checked is left out (recovery cannot use it either).
    pub fn journal_floor(&self) -> Result<Option<u64>> {
        remote!(self, r => r.journal_floor());
        let (files, _) = self.scan()?;
        Ok(files
            .iter()
            .filter_map(|(time, path)| self.read_header(*time, path).ok())
            .map(|(_, h, _)| h.journal_lsn)
            .min())
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
            .map_err(|k| corrupt(CHECKPOINT_HEADER_BYTES, k))?;
        Ok((file, header, file_len))
    }

    /// Read and check one checkpoint file whose name says `batch_time`.
    fn read_file<G: DeserializeOwned>(
        &self,
        batch_time: u64,
        path: &Path,
    ) -> Result<Checkpoint<G>> {
        let corrupt = |offset: usize, kind| Error::corruption(path, offset as u64, kind);
        let (file, header, _) = self.read_header(batch_time, path)?;
        // `decode` bounded body_len by DECODE_BYTES_MAX, and the file holds
        // exactly that many bytes after the header.
        let body_len = usize::try_from(header.body_len).map_err(|_| {
            corrupt(
                CHECKPOINT_HEADER_BYTES,
                CorruptionKind::LengthOutOfBounds {
                    len: header.body_len,
                    max: usize::MAX as u64,
                },
            )
        })?;
        let mut body = vec![0u8; body_len];
        read_all(&*file, &mut body, CHECKPOINT_HEADER_BYTES as u64, path)?;
        format::decode_body(path, &header, &body)
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
