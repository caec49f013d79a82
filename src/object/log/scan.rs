//! Names, the object check, and the scan that opening a log runs.

use crate::error::{CorruptionKind, Error, Result};
use crate::limits::{FRAME_HEADER_BYTES, LSN_MAX, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use crate::object::location::ObjectLocation;
use crate::wal::format::{FrameHeader, SegmentHeader, check_frame};
use crate::wal::{Problem, RecoveryReport, WalOptions};
use std::collections::BTreeMap;

/// The suffix of a log object's name.
pub const LOG_OBJECT_SUFFIX: &str = ".wal";
pub(super) const DIGITS: usize = 20;
/// Objects opening fetches at once, and the most bytes (by the listing's
/// sizes) it holds at once, unless one object alone is larger.
pub(super) const PARALLEL_GETS: usize = 16;
pub(super) const WINDOW_BYTES: u64 = 64 << 20;
/// Times opening follows a floor that retention raised while it read.
pub(super) const FLOOR_RISES_MAX: usize = 1_000;

/// The name of log object `seq`.
pub fn log_object_name(seq: u64) -> String {
    format!("{seq:0DIGITS$}{LOG_OBJECT_SUFFIX}")
}

/// Bytes after the header of a claim: a random nonce, so that two writers'
/// claims of the same name never hold the same bytes, and a CRC32 of the
/// header and nonce.
pub(super) const CLAIM_TAIL_BYTES: usize = 12;
pub(super) const FLOOR_PREFIX: &str = "floor-";

/// `floor-NNNN` -> NNNN: retention deleted the log below that object.
pub(super) fn parse_floor(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FLOOR_PREFIX)?;
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub(super) fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(LOG_OBJECT_SUFFIX)?;
    (stem.len() == DIGITS && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// True for a name of the log-object shape whose number does not fit a u64.
fn is_out_of_range_name(name: &str) -> bool {
    name.strip_suffix(LOG_OBJECT_SUFFIX).is_some_and(|stem| {
        stem.len() == DIGITS
            && stem.bytes().all(|b| b.is_ascii_digit())
            && stem.parse::<u64>().is_err()
    })
}

/// What the log knows of one stored object.
#[derive(Debug, Clone, Copy)]
pub(super) struct ObjInfo {
    pub(super) first_lsn: u64,
    pub(super) records: u64,
    pub(super) len: u64,
    pub(super) max_time: u64,
    pub(super) max_record_bytes: u32,
}

impl ObjInfo {
    pub(super) fn next_lsn(&self) -> u64 {
        self.first_lsn + self.records
    }
}

/// One checked object: its summary, the log id it names, and where each
/// record's frame starts.
pub(super) struct Parsed {
    pub(super) info: ObjInfo,
    pub(super) log_id: u64,
    pub(super) frames: Vec<(FrameHeader, usize)>,
}

/// Check every byte of object `seq`: header, the log id (if one is
/// expected), the first LSN (likewise), every frame, and that the frames
/// fill the object exactly. Errors carry the offset of the damage.
pub(super) fn parse_object(
    bytes: &[u8],
    seq: u64,
    log_id: Option<u64>,
    first_lsn: Option<u64>,
) -> std::result::Result<Parsed, (u64, CorruptionKind)> {
    let header = SegmentHeader::decode(bytes).map_err(|k| (0, k))?;
    if header.segment_seq != seq {
        return Err((
            0,
            CorruptionKind::BadHeader("sequence number differs from the object's name"),
        ));
    }
    if log_id.is_some_and(|id| id != header.log_id) {
        return Err((0, CorruptionKind::ForeignSegment));
    }
    if let Some(expected) = first_lsn
        && expected != header.first_lsn
    {
        return Err((
            0,
            CorruptionKind::LsnOutOfOrder {
                expected,
                found: header.first_lsn,
            },
        ));
    }
    let identity = header.identity();
    let mut frames = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    if bytes.len() == pos {
        // Every object is a claim or holds a frame: a bare header is one
        // cut short (accepting it would drop its records unnoticed).
        return Err((pos as u64, CorruptionKind::Truncated));
    }
    if bytes.len() == pos + CLAIM_TAIL_BYTES {
        // A claim: the header, its writer's nonce and a CRC32 (no frame is
        // this short).
        let (body, crc) = bytes.split_at(pos + 8);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        let (expected, actual) = (u32::from_le_bytes(stored), crc32fast::hash(body));
        if expected != actual {
            return Err((
                pos as u64,
                CorruptionKind::ChecksumMismatch { expected, actual },
            ));
        }
        pos = bytes.len();
    }
    let mut lsn = header.first_lsn;
    let mut max_time = 0;
    while pos < bytes.len() {
        let fh = check_frame(&identity, &bytes[pos..], header.max_record_bytes)
            .map_err(|k| (pos as u64, k))?;
        if fh.lsn != lsn {
            return Err((
                pos as u64,
                CorruptionKind::LsnOutOfOrder {
                    expected: lsn,
                    found: fh.lsn,
                },
            ));
        }
        frames.push((fh, pos));
        max_time = max_time.max(fh.time);
        pos += fh.frame_bytes() as usize;
        lsn += 1;
        if lsn > LSN_MAX + 1 {
            return Err((pos as u64, CorruptionKind::BadFrame("LSN out of range")));
        }
    }
    Ok(Parsed {
        info: ObjInfo {
            first_lsn: header.first_lsn,
            records: frames.len() as u64,
            len: bytes.len() as u64,
            max_time,
            max_record_bytes: header.max_record_bytes,
        },
        log_id: header.log_id,
        frames,
    })
}

/// The largest object a reader accepts: one batch of the largest records.
pub(super) fn object_bytes_max(opts: &WalOptions) -> u64 {
    SEGMENT_HEADER_BYTES
        + opts
            .batch_bound_bytes()
            .max(FRAME_HEADER_BYTES + u64::from(RECORD_BYTES_MAX))
}

/// What listing and reading a log found.
pub(super) struct Scan {
    pub(super) report: RecoveryReport,
    pub(super) objects: BTreeMap<u64, ObjInfo>,
    pub(super) log_id: Option<u64>,
    /// The next sequence number and LSN the chain expects.
    pub(super) next_seq: u64,
    pub(super) next_lsn: u64,
}

/// List the log at `loc` and read and check every object from the floor on.
pub(super) fn scan(loc: &ObjectLocation, max: u64, read_only: bool) -> Result<Scan> {
    let mut report = RecoveryReport::default();
    let (mut seqs, mut floor) = list_log(loc, Some(&mut report.ignored_files))?;
    // Shaped like a log object but numbered beyond u64: never read, and
    // reported, as the directory log reports such a segment.
    for name in &report.ignored_files {
        if is_out_of_range_name(name) {
            report.lookalike_files.push(crate::wal::Lookalike {
                name: name.clone(),
                reason: "named like a log object, but its number exceeds the largest sequence number (2^64 - 1), so no writer made it; not read (a copied or renamed object?)",
            });
        }
    }
    let mut objects = BTreeMap::new();
    let mut log_id = None;
    // The chain so far: the next sequence number and LSN it expects.
    let mut want_seq = floor.max(1);
    let mut want_lsn = (floor == 0).then_some(1);
    let mut rises = 0;
    let mut i = 0;
    // Objects are fetched a window at a time, the requests of a window in
    // parallel, and checked in order.
    let mut window: std::collections::VecDeque<(u64, Result<Option<Vec<u8>>>)> =
        std::collections::VecDeque::new();
    loop {
        if window.is_empty() {
            // As many as fit the window's bytes (by the listing's sizes),
            // and at least one.
            let mut end = i;
            let mut bytes = 0u64;
            while let Some(&(_, size)) = seqs.get(end) {
                if end > i && (end - i == PARALLEL_GETS || bytes + size > WINDOW_BYTES) {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let batch: Vec<u64> = seqs[i..end].iter().map(|&(s, _)| s).collect();
            if batch.is_empty() {
                break;
            }
            let names: Vec<String> = batch.iter().map(|&s| log_object_name(s)).collect();
            let fetched = loc.get_many(&names, max)?;
            window.extend(batch.into_iter().zip(fetched));
            i = end;
        }
        let Some((seq, fetched)) = window.pop_front() else {
            break;
        };
        let name = log_object_name(seq);
        let damage = |offset, kind| Error::corruption(loc.display(&name), offset, kind);
        if seq != want_seq {
            let gap = damage(
                0,
                CorruptionKind::MissingSegment {
                    expected: want_seq,
                    found: seq,
                },
            );
            if !read_only {
                return Err(gap);
            }
            if let Error::Corruption { file, offset, kind } = gap {
                report.problems.push(Problem { file, offset, kind });
            }
            want_lsn = None;
        }
        let checked = match fetched {
            Ok(None) => {
                // Deleted since the listing: by a writer's retention, which
                // raised the floor past it first. Go on from that floor
                // with a fresh listing; otherwise it is lost.
                let (now, new_floor) = list_log(loc, None)?;
                if new_floor > seq && rises < FLOOR_RISES_MAX {
                    rises += 1;
                    floor = new_floor;
                    seqs = now;
                    i = 0;
                    window.clear();
                    objects.clear();
                    report.problems.clear();
                    want_seq = floor;
                    want_lsn = None;
                    continue;
                }
                Err(damage(0, CorruptionKind::ObjectVanished))
            }
            Ok(Some(bytes)) => parse_object(&bytes, seq, log_id, want_lsn)
                .map_err(|(offset, kind)| damage(offset, kind)),
            Err(Error::TooLarge { size, max }) => Err(damage(
                0,
                CorruptionKind::LengthOutOfBounds { len: size, max },
            )),
            Err(e) => Err(e),
        };
        want_seq = seq + 1;
        match checked {
            Ok(p) => {
                log_id = Some(p.log_id);
                want_lsn = Some(p.info.next_lsn());
                objects.insert(seq, p.info);
            }
            Err(Error::Corruption { file, offset, kind }) if read_only => {
                // Salvage: list the damage and go on with the next object.
                report.problems.push(Problem { file, offset, kind });
                want_lsn = None;
            }
            Err(e) => return Err(e),
        }
    }
    report.segments = objects.len();
    report.records = objects.values().map(|o| o.records).sum();
    let (next_seq, next_lsn) = match objects.last_key_value() {
        Some((&seq, o)) => (seq + 1, o.next_lsn()),
        // A floor with nothing at or after it: the log's objects are gone.
        None if floor > 0 => {
            let gone = Error::corruption(
                loc.display(&log_object_name(floor)),
                0,
                CorruptionKind::ObjectVanished,
            );
            match gone {
                Error::Corruption { file, offset, kind } if read_only => {
                    report.problems.push(Problem { file, offset, kind });
                    (want_seq, want_lsn.unwrap_or(1))
                }
                gone => return Err(gone),
            }
        }
        None => (want_seq, want_lsn.unwrap_or(1)),
    };
    Ok(Scan {
        report,
        objects,
        log_id,
        next_seq,
        next_lsn,
    })
}

/// The log's objects at or above the newest floor as (sequence number,
/// size), sorted, and that floor (0 if none). Other names go to `ignored`.
pub(super) fn list_log(
    loc: &ObjectLocation,
    mut ignored: Option<&mut Vec<String>>,
) -> Result<(Vec<(u64, u64)>, u64)> {
    let mut seqs = Vec::new();
    let mut floor = 0;
    for (name, size) in loc.list_sized("")? {
        match (parse_name(&name), parse_floor(&name)) {
            (Some(seq), _) => seqs.push((seq, size)),
            (None, Some(f)) => floor = floor.max(f),
            (None, None) => {
                if let Some(v) = ignored.as_deref_mut() {
                    v.push(name);
                }
            }
        }
    }
    // Below the floor: retention's leftovers and old claims, kept only so
    // that fenced writers keep colliding with them.
    seqs.retain(|&(s, _)| s >= floor);
    seqs.sort_unstable();
    if let Some(v) = ignored {
        v.sort();
    }
    Ok((seqs, floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_header_is_a_truncated_object() {
        let header = SegmentHeader {
            log_id: 7,
            segment_seq: 3,
            first_lsn: 5,
            unsynced_window_bytes: 0,
            max_record_bytes: 1024,
        };
        let bytes = header.encode();
        assert!(matches!(
            parse_object(&bytes, 3, None, None),
            Err((64, CorruptionKind::Truncated))
        ));
    }

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(parse_name(&log_object_name(42)), Some(42));
        assert_eq!(parse_name("42.wal"), None);
        assert_eq!(parse_name(&format!("{}.tmp", "0".repeat(20))), None);
        assert_eq!(parse_name(&log_object_name(u64::MAX)), Some(u64::MAX));
    }
}
