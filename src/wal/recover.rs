//! Opening a log directory: find the segments, check every header, record
//! and link, tell a torn tail from corruption, and repair the torn tail.
//!
//! The rule (docs/DESIGN.md has the reasoning): every segment but the last was
//! synced whole before its successor was created, so any damage in it is
//! corruption. In the last segment, the records after the last sync may have
//! landed in any shape. Let `end` be the offset just past the last valid
//! record, expecting LSN `x` next. The damage is a torn tail if and only if
//! 1. every nonzero byte after `end` lies within the segment's recorded
//!    unsynced window of `end`, and
//! 2. no valid frame after `end` claims (through its `durable_lsn`) that
//!    LSN `x` was already durable when it was written.
//!
//! Otherwise it is corruption of durable data, and the open fails.

use super::files::{FileCache, SegmentFile};
use super::format::SegmentHeader;
use super::options::Lookalike;
use super::options::{Problem, RecoveryMode, RecoveryReport, WalOptions};
use super::reader::{FrameAt, SegmentReader, scan_segment};
use super::segment::{EntryKind, SegmentInfo, classify, lookalike_reason};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::{SEGMENT_HEADER_BYTES, ZERO_CHUNK_BYTES};
use crate::storage::{OpenMode, Storage, StorageFile, read_exact_at};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub(crate) struct Recovered {
    pub log_id: Option<u64>,
    pub segments: BTreeMap<u64, SegmentInfo>,
    pub next_lsn: u64,
    pub report: RecoveryReport,
}

/// Strict mode fails on the first problem; salvage mode writes it down.
struct Problems {
    salvage: bool,
    found: Vec<Problem>,
}

impl Problems {
    fn note(&mut self, file: &Path, offset: u64, kind: CorruptionKind) -> Result<()> {
        if self.salvage {
            self.found.push(Problem {
                file: file.to_path_buf(),
                offset,
                kind,
            });
            Ok(())
        } else {
            Err(Error::corruption(file, offset, kind))
        }
    }
}

pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    opts: &WalOptions,
    cache: &Arc<FileCache>,
) -> Result<Recovered> {
    let salvage = opts.recovery_mode == RecoveryMode::Salvage;
    let mut report = RecoveryReport::default();
    let mut problems = Problems {
        salvage,
        found: Vec::new(),
    };

    // Make what a crashed predecessor left in the page cache durable before
    // trusting it: the directory first, each segment below.
    if !salvage {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", dir, e))?;
    }
    let mut entries = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seqs = Vec::new();
    for entry in entries {
        let kind = classify(&entry.name);
        if let Some(reason) = lookalike_reason(&kind, entry.kind) {
            report.lookalike_files.push(Lookalike {
                name: entry.name.clone(),
                reason,
            });
            report.ignored_files.push(entry.name);
            continue;
        }
        match kind {
            EntryKind::Segment(seq) => seqs.push(seq),
            EntryKind::Temp if !salvage => {
                let path = dir.join(&entry.name);
                storage
                    .remove(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                report.removed_temp_files.push(entry.name);
            }
            _ => report.ignored_files.push(entry.name),
        }
    }
    if !report.removed_temp_files.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", dir, e))?;
    }
    seqs.sort_unstable();

    let mut segments: BTreeMap<u64, SegmentInfo> = BTreeMap::new();
    let mut log_id = None;
    let mut next_lsn = 1;
    let mode = if salvage {
        OpenMode::Read
    } else {
        OpenMode::ReadWrite
    };
    // One segment open at a time: the descriptors recovery holds do not grow
    // with the log. Only the last stays open, for the writer.
    let count = seqs.len();
    for (i, seq) in seqs.into_iter().enumerate() {
        let path = dir.join(super::segment::segment_file_name(seq));
        let file = storage
            .open(&path, mode)
            .map_err(|e| Error::io("open", &path, e))?;
        if !salvage {
            file.sync_data()
                .map_err(|e| Error::io("sync_data", &path, e))?;
        }
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let mut hb = [0u8; SEGMENT_HEADER_BYTES as usize];
        let whole = read_exact_at(&*file, &mut hb, 0).map_err(|e| Error::io("read", &path, e))?;
        let header = if !whole {
            Err(CorruptionKind::Truncated)
        } else {
            SegmentHeader::decode(&hb)
        };
        let header = match header {
            Ok(h) => h,
            Err(k) => {
                problems.note(&path, 0, k)?;
                continue;
            }
        };
        if header.segment_seq != seq {
            problems.note(
                &path,
                24,
                CorruptionKind::BadHeader("sequence number does not match the file name"),
            )?;
            continue;
        }
        match log_id {
            None => log_id = Some(header.log_id),
            Some(id) if id != header.log_id => {
                problems.note(&path, 16, CorruptionKind::ForeignSegment)?;
                continue;
            }
            Some(_) => {}
        }
        if let Some((&prev_seq, _)) = segments.last_key_value() {
            if seq != prev_seq + 1 {
                problems.note(
                    &path,
                    0,
                    CorruptionKind::MissingSegment {
                        expected: prev_seq + 1,
                        found: seq,
                    },
                )?;
            } else if header.first_lsn != next_lsn {
                problems.note(
                    &path,
                    32,
                    CorruptionKind::LsnOutOfOrder {
                        expected: next_lsn,
                        found: header.first_lsn,
                    },
                )?;
            }
        }
        let mut reader = SegmentReader::new(file.clone(), &path, &header, len);
        let is_last = i + 1 == count;
        let info = if salvage {
            salvage_segment(&mut reader, &header, &mut problems)?
        } else {
            let scan = scan_segment(&mut reader, &header)?;
            let z = reader.last_nonzero_end(scan.end)?;
            if z > scan.end {
                let kind = scan.problem.unwrap_or(CorruptionKind::UnexpectedData);
                if !is_last {
                    return Err(Error::corruption(&path, scan.end, kind));
                }
                check_torn_tail(&mut reader, &header, scan.end, z, scan.next_lsn, kind)?;
                zero_range(&*file, &path, scan.end, z)?;
                report.torn_bytes += z - scan.end;
                report.torn_at = Some((path.clone(), scan.end));
            }
            if is_last && scan.records > 0 {
                rewrite_unproven(&mut reader, &*file, scan.unproven_from, scan.end)?;
            }
            SegmentScanned {
                end: scan.end,
                records: scan.records,
                max_time: scan.max_time,
            }
        };
        report.records += info.records;
        let file = if is_last && !salvage {
            SegmentFile::pinned(&path, file)
        } else {
            SegmentFile::lazy(&path, cache)
        };
        let seg = SegmentInfo {
            path,
            file,
            header,
            end: info.end,
            records: info.records,
            max_time: info.max_time,
        };
        next_lsn = seg.next_lsn().max(next_lsn);
        if report.first_lsn.is_none() {
            report.first_lsn = Some(header.first_lsn);
        }
        segments.insert(seq, seg);
    }
    report.segments = segments.len();
    if report.records == 0 {
        report.first_lsn = None;
    } else {
        report.last_lsn = Some(next_lsn - 1);
    }
    report.problems = problems.found;
    Ok(Recovered {
        log_id,
        segments,
        next_lsn,
        report,
    })
}

struct SegmentScanned {
    end: u64,
    records: u64,
    max_time: u64,
}

/// Decide whether the damage in `[end, z)` of the last segment is a torn tail
/// (returns `Ok`) or corruption (returns the error).
pub(super) fn check_torn_tail(
    reader: &mut SegmentReader,
    header: &SegmentHeader,
    end: u64,
    z: u64,
    expected_lsn: u64,
    kind: CorruptionKind,
) -> Result<()> {
    let path = reader.path().to_path_buf();
    if z - end > header.unsynced_window_bytes {
        return Err(Error::corruption(&path, end, kind));
    }
    let mut pos = end + 1;
    while let Some((off, h)) = reader.find_valid_frame(pos, z)? {
        if h.lsn < expected_lsn {
            return Err(Error::corruption(
                &path,
                off,
                CorruptionKind::LsnOutOfOrder {
                    expected: expected_lsn,
                    found: h.lsn,
                },
            ));
        }
        if h.durable_lsn >= expected_lsn {
            return Err(Error::corruption(
                &path,
                end,
                CorruptionKind::DurableRecordDamaged {
                    proven_by_lsn: h.lsn,
                },
            ));
        }
        pos = off + h.frame_bytes();
    }
    Ok(())
}

/// Rewrite, with the bytes just read, the records of the last segment from
/// `pos` (the first record no later record proves durable) to `end`, then
/// sync them.
///
/// A predecessor whose `fdatasync` failed may have left those records in the
/// page cache, marked clean but never written: a sync now would return Ok
/// without writing them, and reading them proves nothing. Writing the same
/// bytes again dirties the pages so the sync really writes them. Every record
/// before `pos` was durable before a later frame was written, so at most the
/// last write of the predecessor (under `SyncPolicy::Always`) is redone.
fn rewrite_unproven(
    reader: &mut SegmentReader,
    file: &dyn StorageFile,
    pos: u64,
    end: u64,
) -> Result<()> {
    let path = reader.path().to_path_buf();
    if pos >= end {
        return Ok(());
    }
    let mut off = pos;
    while off < end {
        let n = (end - off).min(ZERO_CHUNK_BYTES as u64) as usize;
        let chunk = reader.bytes(off, n)?.to_vec();
        if chunk.len() != n {
            return Err(Error::corruption(&path, off, CorruptionKind::Truncated));
        }
        file.write_at(&chunk, off)
            .map_err(|e| Error::io("write", &path, e))?;
        off += n as u64;
    }
    file.sync_data()
        .map_err(|e| Error::io("sync_data", &path, e))
}

/// Overwrite `[from, to)` with zeros and make it durable.
fn zero_range(file: &dyn StorageFile, path: &Path, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min((to - from) as usize)];
    let mut off = from;
    while off < to {
        let n = (to - off).min(zeros.len() as u64) as usize;
        file.write_at(&zeros[..n], off)
            .map_err(|e| Error::io("write", path, e))?;
        off += n as u64;
    }
    file.sync_data()
        .map_err(|e| Error::io("sync_data", path, e))
}

/// Salvage scan: every valid frame in the segment, skipping damage, each
/// problem written down. Modifies nothing.
fn salvage_segment(
    reader: &mut SegmentReader,
    header: &SegmentHeader,
    problems: &mut Problems,
) -> Result<SegmentScanned> {
    let path = reader.path().to_path_buf();
    let limit = reader.limit();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut records = 0;
    let mut max_time = 0;
    let mut expected = header.first_lsn;
    while pos < limit {
        match reader.frame_at(pos)? {
            FrameAt::Record(h) => {
                if h.lsn != expected {
                    problems.note(
                        &path,
                        pos,
                        CorruptionKind::LsnOutOfOrder {
                            expected,
                            found: h.lsn,
                        },
                    )?;
                }
                records += 1;
                max_time = max_time.max(h.time);
                expected = h.lsn + 1;
                pos += h.frame_bytes();
            }
            FrameAt::End => {
                let z = reader.last_nonzero_end(pos)?;
                if z == pos {
                    break;
                }
                problems.note(&path, pos, CorruptionKind::UnexpectedData)?;
                match reader.find_valid_frame(pos + 1, limit)? {
                    Some((off, _)) => pos = off,
                    None => break,
                }
            }
            FrameAt::Bad(k) => {
                problems.note(&path, pos, k)?;
                match reader.find_valid_frame(pos + 1, limit)? {
                    Some((off, _)) => pos = off,
                    None => break,
                }
            }
        }
    }
    Ok(SegmentScanned {
        end: limit,
        records,
        max_time,
    })
}
