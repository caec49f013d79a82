//! Reading a log on object storage in order.

use super::scan::{ObjInfo, log_object_name, parse_object};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::FRAME_HEADER_BYTES;
use crate::object::location::ObjectLocation;
use crate::wal::RecordHandle;
use crate::wal::format::FrameHeader;
use std::sync::Arc;

/// An object read whole: its sequence number, bytes, and frames left.
type Loaded = (u64, Vec<u8>, std::vec::IntoIter<(FrameHeader, usize)>);

/// Reads the objects one whole GET at a time, checking each entirely before
/// yielding its records.
pub(super) struct ObjectIter {
    pub(super) loc: Arc<ObjectLocation>,
    pub(super) log_id: u64,
    pub(super) max: u64,
    pub(super) objects: std::vec::IntoIter<(u64, ObjInfo)>,
    pub(super) current: Option<Loaded>,
    pub(super) from: u64,
    pub(super) done: bool,
}

impl ObjectIter {
    fn load(&mut self, seq: u64, info: ObjInfo) -> Result<()> {
        let name = log_object_name(seq);
        let Some(bytes) = self.loc.get(&name, self.max)? else {
            // Deleted by retention since the iterator was made.
            return Err(Error::NotFound {
                lsn: info.first_lsn.max(self.from),
                segment: seq,
            });
        };
        let p = parse_object(&bytes, seq, Some(self.log_id), Some(info.first_lsn))
            .map_err(|(offset, kind)| Error::corruption(self.loc.display(&name), offset, kind))?;
        if p.info.records != info.records {
            return Err(Error::corruption(
                self.loc.display(&name),
                0,
                CorruptionKind::BadFrame("object changed since the log was opened"),
            ));
        }
        self.current = Some((seq, bytes, p.frames.into_iter()));
        Ok(())
    }
}

impl Iterator for ObjectIter {
    type Item = crate::wal::IterItem;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some((seq, bytes, frames)) = self.current.as_mut() {
                match frames.next() {
                    Some((fh, _)) if fh.lsn < self.from => continue,
                    Some((fh, at)) => {
                        let start = at + FRAME_HEADER_BYTES as usize;
                        let payload = bytes[start..start + fh.payload_len as usize].to_vec();
                        let handle = RecordHandle {
                            lsn: fh.lsn,
                            segment: *seq,
                            offset: at as u64,
                            len: fh.payload_len,
                        };
                        return Some(Ok((handle, payload)));
                    }
                    None => self.current = None,
                }
                continue;
            }
            let Some((seq, info)) = self.objects.next() else {
                self.done = true;
                return None;
            };
            if let Err(e) = self.load(seq, info) {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }
}
