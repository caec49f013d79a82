//! The seam between the public [`super::CheckpointStore`] and where its
//! checkpoints live: a directory of files ([`super::files`]) or, with the
//! `object-store` feature, objects fenced by epochs (implemented with the
//! other object-storage code). The store owns this trait and does the
//! decoding; a backend only puts, lists and gets bytes.

use super::store::EncodedCheckpoint;
use crate::error::Result;
use std::fmt;
use std::path::PathBuf;

/// One checkpoint a listing found.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// The batch time its name says.
    pub(crate) batch_time: u64,
    /// The backend's own name for it (a file name, an object name).
    pub(crate) name: String,
    /// What messages name it by (a path, or an object's URL).
    pub(crate) shown: PathBuf,
}

/// Checkpoints that count, newest first, and the names beside them that
/// are not the store's (sorted; empty where the backend has no such
/// notion).
pub(crate) type Listing = (Vec<Listed>, Vec<String>);

/// What a checkpoint backend does; [`super::CheckpointStore`] documents the
/// promises of each call.
pub(crate) trait CheckpointBackend: Send + Sync + fmt::Debug {
    /// Write `ckpt` durably and atomically, then apply retention; where it
    /// was written.
    fn put(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf>;
    /// The checkpoints that count, newest first, by name alone.
    fn list(&self) -> Result<Listing>;
    /// The whole stored bytes of a listed checkpoint (bounded by header +
    /// [`crate::limits::DECODE_BYTES_MAX`]), or `None` if it vanished since
    /// the listing (another writer's retention).
    fn get(&self, listed: &Listed) -> Result<Option<Vec<u8>>>;
    /// The smallest journal position among the counting checkpoints whose
    /// header checks.
    fn journal_floor(&self) -> Result<Option<u64>>;
    /// The epoch this store writes under, where the backend fences writers
    /// by epochs; `None` otherwise.
    fn epoch(&self) -> Option<u64> {
        None
    }
}
