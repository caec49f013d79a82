//! Reading the log in LSN order.

use super::options::RecordHandle;
use super::reader::{FrameAt, SegmentReader};
use super::segment::SegmentInfo;
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::SEGMENT_HEADER_BYTES;

/// An iterator over records in LSN order, yielding each record's handle and
/// payload. Created by [`crate::Wal::iter`] and [`crate::Wal::iter_from`].
///
/// It reads the records that were written when it was created; later appends
/// are not seen. Every frame is checked (checksums, LSN order, segment links)
/// as it is read; the first problem is yielded as an error and ends the
/// iteration (in salvage mode, damage is skipped instead). Over a directory
/// it holds the segment files open, so retention running meanwhile does not
/// disturb it. Over object storage it reads each object (one GET) when it
/// reaches it: an object retention deleted meanwhile ends the iteration
/// with [`Error::NotFound`].
#[derive(Debug)]
pub struct WalIter {
    segments: std::vec::IntoIter<SegmentInfo>,
    current: Option<Cursor>,
    from_lsn: u64,
    end_lsn: u64,
    salvage: bool,
    pending_error: Option<Error>,
    done: bool,
    /// The records of a log on object storage, which reads its own way.
    remote: Option<RemoteIter>,
}

/// The item type both kinds of iteration yield.
pub(crate) type Item = Result<(RecordHandle, Vec<u8>)>;

/// An iterator over a log that is not a directory of segment files.
pub(crate) struct RemoteIter(pub(crate) Box<dyn Iterator<Item = Item> + Send>);

impl std::fmt::Debug for RemoteIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteIter")
    }
}

#[derive(Debug)]
struct Cursor {
    reader: SegmentReader,
    seq: u64,
    pos: u64,
    expected_lsn: u64,
}

impl WalIter {
    pub(crate) fn new(
        segments: Vec<SegmentInfo>,
        from_lsn: u64,
        end_lsn: u64,
        salvage: bool,
    ) -> Self {
        // Skip whole segments that end before `from_lsn`.
        let start = segments
            .iter()
            .rposition(|s| s.header.first_lsn <= from_lsn)
            .unwrap_or(0);
        let mut pending_error = None;
        if let Some(first) = segments.first()
            && from_lsn < first.header.first_lsn
            && !salvage
        {
            pending_error = Some(Error::NotFound {
                lsn: from_lsn,
                segment: first.header.segment_seq,
            });
        }
        let segments: Vec<SegmentInfo> = segments.into_iter().skip(start).collect();
        WalIter {
            segments: segments.into_iter(),
            current: None,
            from_lsn,
            end_lsn,
            salvage,
            pending_error,
            done: false,
            remote: None,
        }
    }

    pub(crate) fn failed(err: Error) -> Self {
        WalIter {
            segments: Vec::new().into_iter(),
            current: None,
            from_lsn: 0,
            end_lsn: 0,
            salvage: false,
            pending_error: Some(err),
            done: false,
            remote: None,
        }
    }

    #[cfg(feature = "object-store")]
    pub(crate) fn remote(inner: RemoteIter) -> Self {
        WalIter {
            segments: Vec::new().into_iter(),
            current: None,
            from_lsn: 0,
            end_lsn: 0,
            salvage: false,
            pending_error: None,
            done: false,
            remote: Some(inner),
        }
    }

    fn fail(&mut self, err: Error) -> Option<Result<(RecordHandle, Vec<u8>)>> {
        self.done = true;
        Some(Err(err))
    }
}

impl Iterator for WalIter {
    type Item = Result<(RecordHandle, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.remote.as_mut() {
            return r.0.next();
        }
        if let Some(e) = self.pending_error.take() {
            return self.fail(e);
        }
        loop {
            if self.done {
                return None;
            }
            let Some(cur) = self.current.as_mut() else {
                let Some(seg) = self.segments.next() else {
                    self.done = true;
                    return None;
                };
                let expected = seg.header.first_lsn;
                let file = match seg.file.get() {
                    Ok(file) => file,
                    // Retention removed the segment after this iterator was
                    // made: its records are gone, as they are for `read`.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return self.fail(Error::NotFound {
                            lsn: expected.max(self.from_lsn),
                            segment: seg.header.segment_seq,
                        });
                    }
                    Err(e) => return self.fail(Error::io("open", &seg.path, e)),
                };
                let reader = SegmentReader::new(file, &seg.path, &seg.header, seg.end);
                self.current = Some(Cursor {
                    reader,
                    seq: seg.header.segment_seq,
                    pos: SEGMENT_HEADER_BYTES,
                    expected_lsn: expected,
                });
                continue;
            };
            if !self.salvage && cur.expected_lsn > self.end_lsn {
                self.done = true;
                return None;
            }
            let pos = cur.pos;
            let frame = match cur.reader.frame_at(pos) {
                Ok(f) => f,
                Err(e) => return self.fail(e),
            };
            match frame {
                FrameAt::End => {
                    let next_first = self.segments.as_slice().first().map(|s| s.header.first_lsn);
                    let expected = cur.expected_lsn;
                    let path = cur.reader.path().to_path_buf();
                    self.current = None;
                    if let Some(first) = next_first
                        && first != expected
                        && !self.salvage
                    {
                        return self.fail(Error::corruption(
                            path,
                            pos,
                            CorruptionKind::LsnOutOfOrder {
                                expected,
                                found: first,
                            },
                        ));
                    }
                }
                FrameAt::Bad(kind) => {
                    if !self.salvage {
                        let path = cur.reader.path().to_path_buf();
                        return self.fail(Error::corruption(path, pos, kind));
                    }
                    let limit = cur.reader.limit();
                    match cur.reader.find_valid_frame(pos + 1, limit) {
                        Ok(Some((off, h))) => {
                            cur.pos = off;
                            cur.expected_lsn = h.lsn;
                        }
                        Ok(None) => self.current = None,
                        Err(e) => return self.fail(e),
                    }
                }
                FrameAt::Record(h) => {
                    if h.lsn != cur.expected_lsn && !self.salvage {
                        let path = cur.reader.path().to_path_buf();
                        let expected = cur.expected_lsn;
                        return self.fail(Error::corruption(
                            path,
                            pos,
                            CorruptionKind::LsnOutOfOrder {
                                expected,
                                found: h.lsn,
                            },
                        ));
                    }
                    cur.pos = pos + h.frame_bytes();
                    cur.expected_lsn = h.lsn + 1;
                    if h.lsn < self.from_lsn {
                        continue;
                    }
                    let handle = RecordHandle {
                        lsn: h.lsn,
                        segment: cur.seq,
                        offset: pos,
                        len: h.payload_len,
                    };
                    return match cur.reader.payload(pos, &h) {
                        Ok(p) => Some(Ok((handle, p.to_vec()))),
                        Err(e) => self.fail(e),
                    };
                }
            }
        }
    }
}
