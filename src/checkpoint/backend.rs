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
    /// Its place in write order, (epoch, write sequence number) from its
    /// name and header (0 for none: a version 1 file; a directory has no
    /// epochs); `None` if its header could not be read or checked.
    pub(crate) order: Option<(u64, u64)>,
}

/// Sort `found` newest first by write order: by (epoch, write sequence
/// number), then batch time, so that a checkpoint written later ranks
/// first even if its batch time is older (SPARK-11267), and checkpoints
/// without a sequence number (version 1 files) rank below every sequenced
/// one of their epoch, by batch time as before. A checkpoint whose header
/// cannot be checked cannot be placed: it ranks first if its batch time is
/// at least that of the newest good one (it may be the newest, so a reader
/// must look at it and report it), last otherwise.
pub(crate) fn rank<T>(found: Vec<T>, key: impl Fn(&T) -> (u64, Option<(u64, u64)>)) -> Vec<T> {
    let (mut good, mut bad): (Vec<T>, Vec<T>) = found.into_iter().partition(|l| key(l).1.is_some());
    good.sort_by_key(|l| {
        let (t, order) = key(l);
        std::cmp::Reverse((order, t))
    });
    bad.sort_by_key(|l| std::cmp::Reverse(key(l).0));
    let newest = good.first().map(|l| key(l).0);
    let (first, last): (Vec<T>, Vec<T>) = bad
        .into_iter()
        .partition(|l| newest.is_none_or(|t| key(l).0 >= t));
    first.into_iter().chain(good).chain(last).collect()
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
    /// The checkpoints that count, newest first (see [`rank`]).
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
