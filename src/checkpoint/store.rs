//! The checkpoint store: durable atomic writes, retention, newest-valid
//! reads, over whichever backend its location names.

use super::Checkpoint;
use super::backend::{CheckpointBackend, Listed};
use super::format::{self, CheckpointHeader, GraphEncoding};
use crate::Location;
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::CHECKPOINTS_KEPT_DEFAULT;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// How often `latest` lists again when a listed checkpoint vanished before
/// it was read (another store's retention removed it meanwhile).
const RELIST_ATTEMPTS: usize = 3;

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
    /// The header with write sequence number `seq`, and the body: what a
    /// backend writes.
    pub(crate) fn stamped(&self, seq: u64) -> ([u8; format::CHECKPOINT_HEADER_BYTES], &[u8]) {
        (
            format::stamped_header(&self.bytes, seq),
            &self.bytes[format::CHECKPOINT_HEADER_BYTES..],
        )
    }

    /// The checkpoint's batch time.
    pub fn batch_time(&self) -> u64 {
        self.batch_time
    }

    /// The file's bytes (header and body), with write sequence number 0:
    /// the store stamps the next one into the header when it writes them.
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

/// Checkpoints at one location, written atomically and durably, read
/// newest-valid-first.
///
/// In a directory (on the real file system or any [`crate::storage::Storage`])
/// each checkpoint is a file written to a temporary name, synced and renamed
/// into place; on object storage (feature `object-store`) each is one object,
/// and opening takes a new epoch that fences the stores opened before (see
/// the object-storage module). One store per location at a time: the directory store
/// takes no lock, and [`CheckpointStore::open`] removes temporary files
/// another writer may be using (a [`crate::recovery::StreamingContext`]
/// locks its whole directory before it opens its store). Writes through one store are serialized;
/// reads may run beside them.
#[derive(Debug)]
pub struct CheckpointStore {
    backend: Box<dyn CheckpointBackend>,
    location: Location,
}

impl CheckpointStore {
    /// Open (or create) the store at `location`: a path (a directory on the
    /// real file system), a [`Location`] on another storage, or a parsed
    /// object-storage location.
    ///
    /// In a directory: creates it if needed and fsyncs its parent, removes
    /// temporary files a crashed write left, and fsyncs it (so the entries a
    /// crashed predecessor renamed into place are durable before they are
    /// trusted). On object storage: takes a new epoch and seals the older
    /// ones. Reads no checkpoint.
    ///
    /// # Errors
    /// - [`Error::InvalidOptions`] if `opts.keep` is 0.
    /// - [`Error::Io`] if creating, listing, removing or syncing fails;
    ///   [`Error::Remote`] if a request to object storage fails.
    pub fn open(location: impl Into<Location>, opts: CheckpointOptions) -> Result<CheckpointStore> {
        if opts.keep == 0 {
            return Err(Error::InvalidOptions("checkpoint keep must be at least 1"));
        }
        let location = location.into();
        let backend = location.open_checkpoints(&opts)?;
        Ok(CheckpointStore { backend, location })
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The epoch this store writes under, on object storage; `None` in a
    /// directory.
    pub fn epoch(&self) -> Option<u64> {
        self.backend.epoch()
    }

    /// Encode `ckpt` into a checkpoint file's bytes, with no I/O, the graph
    /// in CBOR ([`GraphEncoding::Cbor`]: fields by name, so a graph type
    /// that gains a `#[serde(default)]` field or loses one still decodes).
    /// The graph is serialized now: later changes to it do not reach the
    /// bytes.
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

    /// [`CheckpointStore::encode`] with the graph in `encoding`; readers
    /// learn it from the header. [`GraphEncoding::Bincode`] is smaller and
    /// faster for a large body whose type never changes (the keyed state's
    /// snapshots).
    ///
    /// # Errors
    /// As [`CheckpointStore::encode`].
    pub fn encode_with<G: Serialize>(
        ckpt: &Checkpoint<G>,
        encoding: GraphEncoding,
    ) -> Result<EncodedCheckpoint> {
        Ok(EncodedCheckpoint {
            batch_time: ckpt.batch_time,
            bytes: format::encode_file_with(ckpt, encoding)?,
        })
    }

    /// Encode `ckpt` (graph in CBOR) and write it durably; see
    /// [`CheckpointStore::write_encoded`]. Blocks for the whole write.
    ///
    /// # Errors
    /// As [`CheckpointStore::encode`] and [`CheckpointStore::write_encoded`].
    pub fn write<G: Serialize>(&self, ckpt: &Checkpoint<G>) -> Result<PathBuf> {
        self.write_encoded(&Self::encode(ckpt)?)
    }

    /// [`CheckpointStore::write`] with the graph in `encoding` (see
    /// [`CheckpointStore::encode_with`]).
    ///
    /// # Errors
    /// As [`CheckpointStore::write`].
    pub fn write_with<G: Serialize>(
        &self,
        ckpt: &Checkpoint<G>,
        encoding: GraphEncoding,
    ) -> Result<PathBuf> {
        self.write_encoded(&Self::encode_with(ckpt, encoding)?)
    }

    /// Write an encoded checkpoint durably and atomically, then apply
    /// retention. Blocks until done; returns the checkpoint file's path.
    ///
    /// The header gets the store's next write sequence number (one more
    /// than the largest among the files in the directory, counted once per
    /// store), which ranks it first in [`Self::latest`] even if its batch
    /// time is older than another file's.
    ///
    /// Steps: create `NAME.tmp` (removing a stale one), write, `fdatasync`,
    /// rename to `NAME`, fsync the directory. The rename is atomic: a crash
    /// at any step leaves either no new file or a whole, synced one, and a
    /// write for a batch time that already has a checkpoint replaces it, a
    /// crash leaving the old or the new file, both valid. When `Ok` returns
    /// the checkpoint is durable. Then every checkpoint file beyond the
    /// newest `keep` (in the order of [`Self::list`]) is removed, except the one
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
        self.backend.put(ckpt)
    }

    /// The checkpoint files, newest first in write order: by the write
    /// sequence number in each header, then batch time; files without one
    /// (written by version 1 of the format) rank below every file with
    /// one, by batch time; a file whose header does not check ranks first
    /// if its batch time is at least that of the newest good file (it may
    /// be the newest), last otherwise. Reads each file's header (64 bytes),
    /// nothing more.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let (listed, _) = self.backend.list()?;
        Ok(listed
            .into_iter()
            .map(|l| (l.batch_time, l.shown))
            .collect())
    }

    /// The newest checkpoint that passes every check, trying files in the
    /// order of [`Self::list`] (write order). Torn, truncated, corrupted,
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
        self.latest_by(|_, header, raw| {
            header.graph_encoding.decode(&raw.graph, "checkpoint graph")
        })
    }

    /// [`Self::latest`] with the graph decoded by `decode`, which gets the
    /// file, its header and the checkpoint with the graph's stored bytes;
    /// a file for which it fails is skipped with its error.
    pub(crate) fn latest_by<G>(
        &self,
        mut decode: impl FnMut(&std::path::Path, &CheckpointHeader, &Checkpoint<Vec<u8>>) -> Result<G>,
    ) -> Result<LatestCheckpoint<G>> {
        let mut attempt = 0;
        'relist: loop {
            attempt += 1;
            let (listed, ignored_files) = self.backend.list()?;
            let mut skipped = Vec::new();
            for entry in listed {
                let read = self.read(&entry).and_then(|got| {
                    got.map(|(header, raw)| {
                        let graph = decode(&entry.shown, &header, &raw)?;
                        Ok(raw.with_graph(graph))
                    })
                    .transpose()
                });
                match read {
                    Ok(Some(ckpt)) => {
                        return Ok(LatestCheckpoint {
                            checkpoint: Some((entry.shown, ckpt)),
                            skipped,
                            ignored_files,
                        });
                    }
                    Ok(None) if attempt < RELIST_ATTEMPTS => continue 'relist,
                    Ok(None) => {
                        let reason =
                            Error::corruption(&entry.shown, 0, CorruptionKind::ObjectVanished);
                        skipped.push(SkippedCheckpoint {
                            file: entry.shown,
                            reason,
                        })
                    }
                    Err(reason) => skipped.push(SkippedCheckpoint {
                        file: entry.shown,
                        reason,
                    }),
                }
            }
            return Ok(LatestCheckpoint {
                checkpoint: None,
                skipped,
                ignored_files,
            });
        }
    }

    /// One listed checkpoint, decoded and checked against its name; `None`
    /// if it vanished.
    fn read(&self, entry: &Listed) -> Result<Option<(CheckpointHeader, Checkpoint<Vec<u8>>)>> {
        let Some(bytes) = self.backend.get(entry)? else {
            return Ok(None);
        };
        let (header, ckpt) = format::decode_file_stored(&entry.shown, &bytes)?;
        if ckpt.batch_time != entry.batch_time {
            return Err(Error::corruption(
                &entry.shown,
                0,
                CorruptionKind::BadHeader("batch time does not match the name"),
            ));
        }
        Ok(Some((header, ckpt)))
    }

    /// The smallest journal position among the checkpoint files whose
    /// header checks: the journal must keep every event after it, so that
    /// recovery from any kept checkpoint finds the events it needs. `None`
    /// if no file has a valid header. Reads one header per file.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed. A file whose header
    /// cannot be read or checked is left out (recovery cannot use it either).
    pub fn journal_floor(&self) -> Result<Option<u64>> {
        self.backend.journal_floor()
    }
}
