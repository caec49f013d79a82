//! Segment file naming and creation, and what the open log knows of each
//! segment ([`SegmentInfo`]).

use super::files::SegmentFile;
use super::format::SegmentHeader;
use crate::error::{Error, Result};
use crate::limits::ZERO_CHUNK_BYTES;
use crate::storage::{EntryType, OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of a segment file name.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created; such files are removed on open.
pub const TEMP_SUFFIX: &str = ".wal.tmp";
const SEQ_DIGITS: usize = 20;

/// The file name of segment `seq`: the sequence number in 20 decimal digits,
/// so that a plain `ls` lists segments in log order.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:0SEQ_DIGITS$}{SEGMENT_SUFFIX}")
}

/// What a directory entry is, as far as the log is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A segment with this sequence number.
    Segment(u64),
    /// A half-created segment left by a crash.
    Temp,
    /// Shaped like a segment's name (20 digits, `.wal`) but its number is
    /// beyond `u64::MAX`, so no writer made it: most likely a copied or
    /// renamed segment. Never read; tools report it.
    OutOfRange,
    /// Not ours (`LOCK`, editor backups, `.DS_Store`, ...).
    Foreign,
}

/// Classify a directory entry by its name alone.
pub fn classify(name: &str) -> EntryKind {
    let digits = |suffix: &str| -> Option<&str> {
        let stem = name.strip_suffix(suffix)?;
        (stem.len() == SEQ_DIGITS && stem.bytes().all(|b| b.is_ascii_digit())).then_some(stem)
    };
    if let Some(stem) = digits(SEGMENT_SUFFIX) {
        return match stem.parse() {
            Ok(seq) => EntryKind::Segment(seq),
            Err(_) => EntryKind::OutOfRange,
        };
    }
    if digits(TEMP_SUFFIX).is_some() {
        return EntryKind::Temp;
    }
    EntryKind::Foreign
}

/// Why an entry whose name says segment (or segment being created) is not
/// one, or `None` if it is what its name says. Such an entry is never read
/// or removed; recovery lists it and `streamwal verify` reports it.
pub(crate) fn lookalike_reason(kind: &EntryKind, entry: EntryType) -> Option<&'static str> {
    match (kind, entry) {
        (EntryKind::OutOfRange, _) => Some(
            "named like a segment, but its number exceeds the largest sequence number (2^64 - 1), so no writer made it; not read (a copied or renamed segment?)",
        ),
        (EntryKind::Segment(_) | EntryKind::Temp, EntryType::Dir) => {
            Some("named like a segment, but a directory; not read")
        }
        (EntryKind::Segment(_) | EntryKind::Temp, EntryType::Other) => Some(
            "named like a segment, but not a regular file (a FIFO, socket, device or dangling link); not read",
        ),
        _ => None,
    }
}

/// One segment as the open log knows it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub path: PathBuf,
    pub file: SegmentFile,
    pub header: SegmentHeader,
    /// Offset just past the last written record (salvage: the file length).
    pub end: u64,
    /// Records written in this segment.
    pub records: u64,
    /// Largest record time in the segment (0 if empty).
    pub max_time: u64,
}

impl SegmentInfo {
    /// LSN of the first record after this segment's last.
    pub fn next_lsn(&self) -> u64 {
        self.header.first_lsn + self.records
    }
}

/// How a new segment's blocks are preallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Write zeros over the whole segment: later `fdatasync`s overwrite
    /// written blocks and commit no metadata. Best for small records.
    Zeros,
    /// Allocate the blocks without writing them (`fallocate`) where the
    /// storage can, else write zeros. Best for large records, where writing
    /// every block twice would halve the bandwidth.
    Allocate,
}

/// Create segment file `header.segment_seq` in `dir` durably, on the
/// caller's thread: [`prepare_spare`] (zero-filled) then [`install_spare`].
pub fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    header: &SegmentHeader,
    preallocate_bytes: u64,
) -> Result<(PathBuf, Arc<dyn StorageFile>)> {
    let spare = prepare_spare(
        storage,
        dir,
        header.segment_seq,
        preallocate_bytes,
        Fill::Zeros,
    )?;
    install_spare(storage, dir, header, spare)
}

/// Prepare the file that will become segment `seq`: create `NAME.wal.tmp`
/// (replacing a stale one), preallocate it to `bytes` as `fill` says, and
/// sync it. Meant to run ahead of need, off the append path. A crash leaves
/// only a temporary file, which the next open removes.
///
/// # Errors
/// [`Error::Io`] (the temporary file is removed, best effort).
pub fn prepare_spare(
    storage: &dyn Storage,
    dir: &Path,
    seq: u64,
    bytes: u64,
    fill: Fill,
) -> Result<Arc<dyn StorageFile>> {
    let tmp = dir.join(format!("{}.tmp", segment_file_name(seq)));
    let result = (|| -> Result<Arc<dyn StorageFile>> {
        match storage.remove(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &tmp, e)),
        }
        let file = storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &tmp, e))?;
        if fill == Fill::Allocate
            && bytes > 0
            && file
                .allocate(bytes)
                .map_err(|e| Error::io("allocate", &tmp, e))?
        {
            // The new extents and length are metadata: `fsync`, not
            // `fdatasync`.
            file.sync_all()
                .map_err(|e| Error::io("sync_all", &tmp, e))?;
            return Ok(file);
        }
        let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(usize::try_from(bytes).unwrap_or(usize::MAX))];
        let mut off = 0;
        while off < bytes {
            let n = (bytes - off).min(zeros.len() as u64) as usize;
            file.write_at(&zeros[..n], off)
                .map_err(|e| Error::io("preallocate", &tmp, e))?;
            off += n as u64;
        }
        file.sync_data()
            .map_err(|e| Error::io("sync_data", &tmp, e))?;
        Ok(file)
    })();
    if result.is_err() {
        // Best effort: the next open removes it anyway.
        let _ = storage.remove(&tmp);
    }
    result
}

/// Turn a spare from [`prepare_spare`] into segment `header.segment_seq`:
/// write the header, `fdatasync`, rename `NAME.wal.tmp` to `NAME.wal`, fsync
/// the directory. A crash at any step leaves either no segment or a whole
/// one with a durable header.
///
/// # Errors
/// [`Error::Io`] (the temporary file is removed, best effort).
pub fn install_spare(
    storage: &dyn Storage,
    dir: &Path,
    header: &SegmentHeader,
    spare: Arc<dyn StorageFile>,
) -> Result<(PathBuf, Arc<dyn StorageFile>)> {
    let name = segment_file_name(header.segment_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| -> Result<()> {
        spare
            .write_at(&header.encode(), 0)
            .map_err(|e| Error::io("write", &tmp, e))?;
        spare
            .sync_data()
            .map_err(|e| Error::io("sync_data", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", dir, e))
    })();
    match result {
        Ok(()) => Ok((path, spare)),
        Err(e) => {
            let _ = storage.remove(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_classify_back() {
        let mut names: Vec<String> = [10u64, 9, 1, 100, u64::MAX]
            .iter()
            .map(|&s| segment_file_name(s))
            .collect();
        names.sort();
        let seqs: Vec<EntryKind> = names.iter().map(|n| classify(n)).collect();
        assert_eq!(
            seqs,
            [1, 9, 10, 100, u64::MAX].map(EntryKind::Segment).to_vec()
        );
    }

    #[test]
    fn stray_names_are_foreign() {
        for n in [
            "LOCK",
            ".DS_Store",
            "00000000000000000001.wal~",
            "1.wal",
            "0000000000000000000x.wal",
        ] {
            assert_eq!(classify(n), EntryKind::Foreign, "{n}");
        }
        // One past u64::MAX, and the largest 20-digit number.
        for n in ["18446744073709551616.wal", "99999999999999999999.wal"] {
            assert_eq!(classify(n), EntryKind::OutOfRange, "{n}");
        }
        assert_eq!(classify("00000000000000000003.wal.tmp"), EntryKind::Temp);
    }
}
