//! Segment file naming and creation.

use super::format::SegmentHeader;
use crate::error::{Error, Result};
use crate::limits::{SEGMENT_HEADER_BYTES, ZERO_CHUNK_BYTES};
use crate::storage::{OpenMode, Storage, StorageFile};
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
    /// Not ours (`LOCK`, editor backups, `.DS_Store`, ...).
    Foreign,
}

/// Classify a directory entry by its name alone.
pub fn classify(name: &str) -> EntryKind {
    let digits_then = |suffix: &str| -> Option<u64> {
        let stem = name.strip_suffix(suffix)?;
        if stem.len() != SEQ_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        stem.parse().ok()
    };
    if let Some(seq) = digits_then(SEGMENT_SUFFIX) {
        return EntryKind::Segment(seq);
    }
    if digits_then(TEMP_SUFFIX).is_some() {
        return EntryKind::Temp;
    }
    EntryKind::Foreign
}

/// Create segment file `header.segment_seq` in `dir` durably:
/// create `NAME.wal.tmp`, write the header, zero-fill up to `preallocate_bytes`
/// (so that later `fdatasync`s overwrite allocated, written blocks and commit
/// no metadata), `fdatasync`, rename to `NAME.wal`, fsync the directory.
/// A crash at any step leaves either no segment or a whole one with a durable
/// header; the temporary file is removed by the next open.
pub fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    header: &SegmentHeader,
    preallocate_bytes: u64,
) -> Result<(PathBuf, Arc<dyn StorageFile>)> {
    let name = segment_file_name(header.segment_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let tmp_name = tmp.clone();
    let result = (|| -> Result<Arc<dyn StorageFile>> {
        match storage.remove(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &tmp, e)),
        }
        let file = storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &tmp, e))?;
        file.write_at(&header.encode(), 0)
            .map_err(|e| Error::io("write", &tmp, e))?;
        if preallocate_bytes > SEGMENT_HEADER_BYTES {
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut off = SEGMENT_HEADER_BYTES;
            while off < preallocate_bytes {
                let n = (preallocate_bytes - off).min(ZERO_CHUNK_BYTES as u64) as usize;
                file.write_at(&zeros[..n], off)
                    .map_err(|e| Error::io("preallocate", &tmp, e))?;
                off += n as u64;
            }
        }
        file.sync_data()
            .map_err(|e| Error::io("sync_data", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", dir, e))?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            // Best effort: the next open removes it anyway.
            let _ = storage.remove(&tmp_name);
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
            "99999999999999999999.wal",
        ] {
            assert_eq!(classify(n), EntryKind::Foreign, "{n}");
        }
        assert_eq!(classify("00000000000000000003.wal.tmp"), EntryKind::Temp);
    }
}
