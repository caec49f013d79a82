//! A read-only look at a log directory, segment by segment, for tools
//! (`streamwal inspect` / `verify` / `dump`): the same scan and the same
//! torn-tail rule as recovery, without changing a byte.

use super::format::SegmentHeader;
use super::reader::{SegmentReader, scan_segment};
use super::recover::check_torn_tail;
use super::segment::{EntryKind, classify, lookalike_reason, segment_file_name};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::SEGMENT_HEADER_BYTES;
use crate::storage::{OpenMode, Storage, read_exact_at};
use std::path::{Path, PathBuf};

/// One segment file as a read-only scan sees it.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// The decoded header, or what is wrong with it.
    pub header: std::result::Result<SegmentHeader, CorruptionKind>,
    /// Valid records in order from the first one.
    pub records: u64,
    /// LSNs of the first and the last of those records.
    pub lsns: Option<(u64, u64)>,
    /// Offset just past the last of those records.
    pub end: u64,
    /// Offset just past the last nonzero byte at or after `end`.
    pub nonzero_end: u64,
    /// Why the records stop at `end` when nonzero bytes follow.
    pub damage: Option<CorruptionKind>,
}

/// The records a torn tail held, as far as their surviving frame headers
/// (each checked by its own checksum) tell. A tail cut off by truncation
/// leaves no headers, so zero proves nothing; two distinct stamps prove
/// that more than the last write was lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TornFrames {
    /// Frame headers found after the last valid record.
    pub records: u64,
    /// Distinct durable stamps among them: a lower bound on the writes they
    /// came from (one group commit stamps its frames alike; frames of two
    /// writes with no sync between them are stamped alike too).
    pub writes: u64,
    /// The smallest and the largest LSN among them.
    pub lsns: Option<(u64, u64)>,
}

/// The result of [`scan_log`].
#[derive(Debug, Clone, Default)]
pub struct LogScan {
    /// Every segment file, in sequence order.
    pub segments: Vec<SegmentScan>,
    /// The damage at the end of the last segment, when recovery's rule says
    /// a crash left it (the next read-write open zeroes it): file, offset,
    /// bytes.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// What the frame headers left in the torn tail say (all zero when there
    /// is no torn tail, or nothing in it checks).
    pub torn_frames: TornFrames,
    /// Entries named like segments that are not (see
    /// [`super::RecoveryReport::lookalike_files`]), with the reason; not read.
    pub lookalikes: Vec<(PathBuf, &'static str)>,
}

/// Scan every segment of the log in `dir` without modifying anything and
/// without taking the directory lock. Reads each segment once, with the same
/// bounded reader recovery uses.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be listed or a file read fails.
/// Damage is never an error here: it is in each segment's `header` and
/// `damage`.
pub fn scan_log(storage: &dyn Storage, dir: &Path) -> Result<LogScan> {
    let mut entries = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = LogScan::default();
    let mut paths = Vec::new();
    for entry in entries {
        let kind = classify(&entry.name);
        if let Some(reason) = lookalike_reason(&kind, entry.kind) {
            out.lookalikes.push((dir.join(&entry.name), reason));
        } else if let EntryKind::Segment(seq) = kind {
            paths.push(dir.join(segment_file_name(seq)));
        }
    }
    // One file open at a time, so that a log of any length can be scanned.
    let count = paths.len();
    for (i, path) in paths.into_iter().enumerate() {
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open", &path, e))?;
        let size = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let mut hb = [0u8; SEGMENT_HEADER_BYTES as usize];
        let whole = read_exact_at(&*file, &mut hb, 0).map_err(|e| Error::io("read", &path, e))?;
        let header = if whole {
            SegmentHeader::decode(&hb)
        } else {
            Err(CorruptionKind::Truncated)
        };
        let mut seg = SegmentScan {
            path: path.clone(),
            size,
            header: header.clone(),
            records: 0,
            lsns: None,
            end: SEGMENT_HEADER_BYTES.min(size),
            nonzero_end: SEGMENT_HEADER_BYTES.min(size),
            damage: None,
        };
        let Ok(header) = header else {
            out.segments.push(seg);
            continue;
        };
        let mut reader = SegmentReader::new(file, &path, &header, size);
        let scan = scan_segment(&mut reader, &header)?;
        seg.records = scan.records;
        seg.lsns = (scan.records > 0).then(|| (header.first_lsn, scan.next_lsn - 1));
        seg.end = scan.end;
        seg.nonzero_end = reader.last_nonzero_end(scan.end)?;
        if seg.nonzero_end > seg.end {
            let kind = scan.problem.unwrap_or(CorruptionKind::UnexpectedData);
            seg.damage = Some(kind.clone());
            let is_last = i + 1 == count;
            if is_last {
                let end = seg.end;
                let verdict = check_torn_tail(
                    &mut reader,
                    &header,
                    end,
                    seg.nonzero_end,
                    scan.next_lsn,
                    kind,
                );
                match verdict {
                    Ok(()) => {
                        out.torn_frames = torn_frames(&mut reader, end, seg.nonzero_end)?;
                        out.torn_tail = Some((path, end, seg.nonzero_end - end));
                    }
                    Err(Error::Corruption { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.segments.push(seg);
    }
    Ok(out)
}

/// What the frame headers in a torn tail `[from, to)` say. The range is
/// within the segment's unsynced window (the torn-tail rule checked that).
fn torn_frames(reader: &mut SegmentReader, from: u64, to: u64) -> Result<TornFrames> {
    let headers = reader.frame_headers(from, to)?;
    let mut stamps: Vec<u64> = headers.iter().map(|h| h.durable_lsn).collect();
    stamps.sort_unstable();
    stamps.dedup();
    let lsns = headers.iter().map(|h| h.lsn);
    Ok(TornFrames {
        records: headers.len() as u64,
        writes: stamps.len() as u64,
        lsns: lsns.clone().min().zip(lsns.max()),
    })
}
