//! Reading frames out of a segment file: a buffered positional reader, the
//! sequential scan used by recovery and iteration, and the byte-by-byte search
//! for valid frames that tells a torn tail from corruption.

use super::format::{self, FrameHeader, FrameHeaderError, SegmentHeader};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::{FRAME_HEADER_BYTES, RECORD_BYTES_MAX, SCAN_CHUNK_BYTES};
use crate::storage::StorageFile;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FRAME_HDR: usize = FRAME_HEADER_BYTES as usize;

/// What lies at a frame position.
#[derive(Debug)]
pub enum FrameAt {
    /// A whole, checked frame: header, and the payload's range in the reader's buffer.
    Record(FrameHeader),
    /// 40 zero bytes, or fewer than 40 bytes left that are all zero: no more records here.
    End,
    /// Something that is not a valid frame.
    Bad(CorruptionKind),
}

/// A positional reader over one segment file with a read-ahead buffer.
/// Never reads at or past `limit`, and never allocates more than
/// `limit - offset` bytes, so a lying length cannot make it allocate.
#[derive(Debug)]
pub struct SegmentReader {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    identity: [u8; 16],
    max_payload: u32,
    limit: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl SegmentReader {
    /// Read `header`'s segment from `file` up to byte `limit`.
    pub fn new(
        file: Arc<dyn StorageFile>,
        path: &Path,
        header: &SegmentHeader,
        limit: u64,
    ) -> Self {
        SegmentReader {
            file,
            path: path.to_path_buf(),
            identity: header.identity(),
            max_payload: header.max_record_bytes.min(RECORD_BYTES_MAX),
            limit,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The file's path, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte this reader never reads at or past.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The `n` bytes at `off`, or fewer if `limit` comes first.
    pub fn bytes(&mut self, off: u64, n: usize) -> Result<&[u8]> {
        let avail = self.limit.saturating_sub(off);
        let n = n.min(usize::try_from(avail).unwrap_or(usize::MAX));
        let buf_end = self.buf_start + self.buf.len() as u64;
        if off < self.buf_start || off + n as u64 > buf_end {
            let want = n.max(SCAN_CHUNK_BYTES);
            let want = want.min(usize::try_from(avail).unwrap_or(usize::MAX));
            self.buf.clear();
            self.buf.resize(want, 0);
            let mut got = 0;
            while got < want {
                let r = self
                    .file
                    .read_at(&mut self.buf[got..], off + got as u64)
                    .map_err(|e| Error::io("read", &self.path, e))?;
                if r == 0 {
                    break;
                }
                got += r;
            }
            self.buf.truncate(got);
            self.buf_start = off;
        }
        let start = (off - self.buf_start) as usize;
        let end = (start + n).min(self.buf.len());
        Ok(&self.buf[start..end])
    }

    /// Decode the frame at `off`. A valid frame's payload is then available
    /// through [`SegmentReader::payload`].
    pub fn frame_at(&mut self, off: u64) -> Result<FrameAt> {
        let identity = self.identity;
        let max_payload = self.max_payload;
        let limit = self.limit;
        let hb = self.bytes(off, FRAME_HDR)?;
        let Some(h) = hb.first_chunk::<FRAME_HDR>() else {
            return Ok(if hb.iter().all(|&b| b == 0) {
                FrameAt::End
            } else {
                FrameAt::Bad(CorruptionKind::Truncated)
            });
        };
        let h = *h;
        let header = match format::decode_frame_header(&identity, &h, max_payload) {
            Ok(header) => header,
            Err(FrameHeaderError::Zero) => return Ok(FrameAt::End),
            Err(FrameHeaderError::Invalid(k)) => return Ok(FrameAt::Bad(k.into())),
        };
        if off.saturating_add(header.frame_bytes()) > limit {
            return Ok(FrameAt::Bad(CorruptionKind::Truncated));
        }
        let total = header.frame_bytes() as usize;
        let frame = self.bytes(off, total)?;
        if frame.len() < total {
            return Ok(FrameAt::Bad(CorruptionKind::Truncated));
        }
        match format::check_payload(&identity, &h, &header, &frame[FRAME_HDR..]) {
            Ok(()) => Ok(FrameAt::Record(header)),
            Err(k) => Ok(FrameAt::Bad(k)),
        }
    }

    /// The payload of the frame at `off` that [`SegmentReader::frame_at`] just
    /// returned as a record.
    pub fn payload(&mut self, off: u64, header: &FrameHeader) -> Result<&[u8]> {
        let total = header.frame_bytes() as usize;
        let frame = self.bytes(off, total)?;
        Ok(&frame[FRAME_HDR.min(frame.len())..])
    }

    /// The offset just past the last nonzero byte in `[from, limit)`, or
    /// `from` if the range is all zero.
    ///
    /// Holes of a sparse file are skipped, not read (see
    /// [`StorageFile::data_range`]): a tail of gigabytes of holes costs a few
    /// seeks.
    pub fn last_nonzero_end(&mut self, from: u64) -> Result<u64> {
        let mut end = from;
        let mut off = from;
        while off < self.limit {
            let range = self
                .file
                .data_range(off)
                .map_err(|e| Error::io("seek", &self.path, e))?;
            let Some((start, stop)) = range else { break };
            // A range that does not move forward is not trusted to skip
            // anything: scan from here to the limit.
            let start = start.max(off);
            let stop = if stop > start {
                stop.min(self.limit)
            } else {
                self.limit
            };
            off = start;
            while off < stop {
                let want = usize::try_from(stop - off)
                    .map_or(SCAN_CHUNK_BYTES, |n| n.min(SCAN_CHUNK_BYTES));
                let chunk = self.bytes(off, want)?;
                if chunk.is_empty() {
                    return Ok(end);
                }
                if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
                    end = off + i as u64 + 1;
                }
                off += chunk.len() as u64;
            }
        }
        Ok(end)
    }

    /// Every frame header in `[from, to)` whose own checksum holds, whether or
    /// not its payload does, in order: what a damaged tail still says about
    /// the records it held. A header that checks is skipped whole (the
    /// writer put a frame of that length there); elsewhere the search moves
    /// byte by byte. The caller bounds `to - from`.
    pub fn frame_headers(&mut self, from: u64, to: u64) -> Result<Vec<FrameHeader>> {
        let identity = self.identity;
        let max_payload = self.max_payload;
        let mut found = Vec::new();
        let mut off = from;
        while off < to {
            let hb = self.bytes(off, FRAME_HDR)?;
            let header = match hb.first_chunk::<FRAME_HDR>() {
                Some(h) if h[4] == format::KIND_FULL => {
                    format::decode_frame_header(&identity, h, max_payload).ok()
                }
                Some(_) => None,
                None => break,
            };
            match header {
                Some(h) => {
                    off = off.saturating_add(h.frame_bytes());
                    found.push(h);
                }
                None => off += 1,
            }
        }
        Ok(found)
    }

    /// Search `[from, to)` byte by byte for the first offset holding a whole,
    /// valid frame (both checksums good, within `limit`). A frame whose
    /// header checks but whose payload does not is skipped whole: its header
    /// checksum says the writer put a frame of that length there, so no
    /// frame it wrote starts inside it. That also keeps the search linear:
    /// each byte is hashed as payload at most once.
    pub fn find_valid_frame(&mut self, from: u64, to: u64) -> Result<Option<(u64, FrameHeader)>> {
        let identity = self.identity;
        let max_payload = self.max_payload;
        let mut off = from;
        while off < to {
            let hb = self.bytes(off, FRAME_HDR)?;
            // Cheap prefilter on the kind byte before the header checksum.
            let header = match hb.first_chunk::<FRAME_HDR>() {
                Some(h) if h[4] == format::KIND_FULL => {
                    format::decode_frame_header(&identity, h, max_payload).ok()
                }
                _ => None,
            };
            let Some(h) = header else {
                off += 1;
                continue;
            };
            if let FrameAt::Record(h) = self.frame_at(off)? {
                return Ok(Some((off, h)));
            }
            off = off.saturating_add(h.frame_bytes());
        }
        Ok(None)
    }
}

/// The outcome of scanning one segment's records from its header onward.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Records found before the first problem.
    pub records: u64,
    /// LSN the next record must carry.
    pub next_lsn: u64,
    /// Offset just past the last valid record.
    pub end: u64,
    /// Largest record time seen (0 if none).
    pub max_time: u64,
    /// The first problem at `end`, if records stop for a reason other than a
    /// clean zero tail.
    pub problem: Option<CorruptionKind>,
    /// Offset of the first record that no later record's `durable_lsn`
    /// proves durable (`end` if every record is proven): the start of the
    /// writer's last write.
    pub unproven_from: u64,
}

/// Scan the records of a segment in order from its first record, stopping at
/// the first frame that is not the valid next record.
pub fn scan_segment(reader: &mut SegmentReader, header: &SegmentHeader) -> Result<ScanOutcome> {
    let mut out = ScanOutcome {
        records: 0,
        next_lsn: header.first_lsn,
        end: crate::limits::SEGMENT_HEADER_BYTES,
        max_time: 0,
        problem: None,
        unproven_from: crate::limits::SEGMENT_HEADER_BYTES,
    };
    // Records not yet proven durable, oldest first: (LSN, offset). Stamps
    // never decrease, so these are always a suffix of the records seen.
    let mut unproven: VecDeque<(u64, u64)> = VecDeque::new();
    let mut proven_lsn = 0;
    loop {
        match reader.frame_at(out.end)? {
            FrameAt::End => break,
            FrameAt::Bad(k) => {
                out.problem = Some(k);
                break;
            }
            FrameAt::Record(h) => {
                if h.lsn != out.next_lsn {
                    out.problem = Some(CorruptionKind::LsnOutOfOrder {
                        expected: out.next_lsn,
                        found: h.lsn,
                    });
                    break;
                }
                unproven.push_back((h.lsn, out.end));
                proven_lsn = proven_lsn.max(h.durable_lsn);
                while unproven.front().is_some_and(|&(lsn, _)| lsn <= proven_lsn) {
                    unproven.pop_front();
                }
                out.records += 1;
                out.next_lsn += 1;
                out.end += h.frame_bytes();
                out.max_time = out.max_time.max(h.time);
            }
        }
    }
    out.unproven_from = unproven.front().map_or(out.end, |&(_, off)| off);
    Ok(out)
}
