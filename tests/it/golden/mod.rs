//! Golden files: `tests/data/` holds small files written by format version 1 of each on-disk format (receiver-log segments, journal events, keyed-state deltas and a snapshot, object-storage fences, seals, log objects and floors), and `checkpoint/` a whole context with a checkpoint of format 2 (CBOR graph) and its keyed-state snapshot, plus the same checkpoint as format 1 wrote it; each test decodes the committed files and checks every field against values written out literally, and opens a copy with the public API, so a change that can no longer read them fails. docs/FORMAT.md ("Compatibility") states the promise.

mod checkpoint;
mod generate;
mod generate_checkpoint;
mod journal;
#[cfg(feature = "object-store")]
mod object;
mod state;
mod wal;

use std::path::{Path, PathBuf};
use streamwal::wal::format::{FrameHeader, SegmentHeader, check_frame};

/// `tests/data/` of this crate.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}

/// A golden file's bytes.
pub fn golden(rel: &str) -> Vec<u8> {
    let path = data_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of the golden directory `rel` in a temporary directory, for the
/// public API to open (opening writes lock files; the committed files stay
/// as they are).
pub fn copy_of(rel: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join(rel);
    copy_tree(&data_dir().join(rel), &to);
    (tmp, to)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A segment's header and every frame (header, payload), checked with the
/// format codec; the bytes after the last frame must be absent or zero.
pub fn segment(rel: &str) -> (SegmentHeader, Vec<(FrameHeader, Vec<u8>)>) {
    let bytes = golden(rel);
    let header = SegmentHeader::decode(&bytes).unwrap();
    let identity = header.identity();
    let mut frames = Vec::new();
    let mut off = streamwal::limits::SEGMENT_HEADER_BYTES as usize;
    while off < bytes.len() && bytes[off..].iter().any(|&b| b != 0) {
        let h = check_frame(&identity, &bytes[off..], header.max_record_bytes)
            .unwrap_or_else(|e| panic!("{rel} at {off}: {e}"));
        let start = off + streamwal::limits::FRAME_HEADER_BYTES as usize;
        let end = start + h.payload_len as usize;
        frames.push((h, bytes[start..end].to_vec()));
        off = end;
    }
    (header, frames)
}

/// A frame's fields as a tuple: (payload_len, lsn, time, durable_lsn, crc).
pub fn fields(h: &FrameHeader) -> (u32, u64, u64, u64, u32) {
    (h.payload_len, h.lsn, h.time, h.durable_lsn, h.crc)
}

/// A record handle's fields: (lsn, segment, offset, len).
pub fn handle(h: &streamwal::RecordHandle) -> (u64, u64, u64, u32) {
    (h.lsn(), h.segment(), h.offset(), h.len())
}
