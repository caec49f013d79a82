//! Under `SyncPolicy::Always`, every frame's `durable_lsn` names exactly the records before its own write (everything before the first record of the write it went out in): the proof that lets recovery tell rot of an acknowledged batch from a torn last batch is never a batch behind, even with many concurrent appenders.

use crate::common::forwarding::{FileCall, FileHooks, Forwarding, StorageHooks};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::storage::{OpenMode, StdStorage};
use streamwal::wal::format::{SegmentHeader, decode_frame_header};
use streamwal::{Wal, WalOptions};

/// The (offset, length) of every write to a `.wal` file (segment creation
/// writes the temporary file, appends write the segment), in call order.
#[derive(Debug, Clone, Default)]
struct SegmentWrites(Arc<Mutex<Vec<(u64, usize)>>>);

impl SegmentWrites {
    fn recorded(&self) -> Vec<(u64, usize)> {
        self.0.lock().unwrap().clone()
    }
}

impl StorageHooks for SegmentWrites {
    fn file(&self, path: &Path, _mode: OpenMode) -> Option<Arc<dyn FileHooks>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.contains(".wal")
            .then(|| Arc::new(self.clone()) as Arc<dyn FileHooks>)
    }
}

impl FileHooks for SegmentWrites {
    fn before(&self, call: FileCall<'_>) -> io::Result<()> {
        if let FileCall::WriteAt { offset, buf } = call {
            self.0.lock().unwrap().push((offset, buf.len()));
        }
        Ok(())
    }
}

#[test]
fn durable_lsn_covers_everything_before_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let writes = SegmentWrites::default();
    let storage = Forwarding::new(Arc::new(StdStorage::new()), Arc::new(writes.clone()));
    let opts = WalOptions {
        segment_bytes: 1 << 30, // one segment: write offsets are unambiguous
        preallocate: false,
        ..WalOptions::default()
    };
    let wal =
        Arc::new(Wal::open(streamwal::Location::dir_on(Arc::new(storage), &dir), opts).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    wal.append(format!("t{t} r{i}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(wal);

    let bytes = std::fs::read(dir.join(streamwal::wal::segment_file_name(1))).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let id = header.identity();
    // Every frame: offset -> (lsn, durable_lsn).
    let mut frames = std::collections::BTreeMap::new();
    let mut off = SEGMENT_HEADER_BYTES as usize;
    while off + 40 <= bytes.len() {
        let h: &[u8; 40] = bytes[off..off + 40].try_into().unwrap();
        let Ok(fh) = decode_frame_header(&id, h, header.max_record_bytes) else {
            break;
        };
        frames.insert(off as u64, (fh.lsn, fh.durable_lsn));
        off += (FRAME_HEADER_BYTES + u64::from(fh.payload_len)) as usize;
    }
    assert_eq!(frames.len(), 1200);
    let mut multi = 0;
    for (start, len) in writes.recorded() {
        if start < SEGMENT_HEADER_BYTES {
            continue; // the header
        }
        let end = start + len as u64;
        let inside: Vec<(u64, u64)> = frames.range(start..end).map(|(_, v)| *v).collect();
        let Some(&(first_lsn, _)) = inside.first() else {
            continue;
        };
        if inside.len() > 1 {
            multi += 1;
        }
        for (lsn, durable) in inside {
            assert_eq!(
                durable,
                first_lsn - 1,
                "record {lsn} in a write starting at record {first_lsn}"
            );
        }
    }
    // Group commit happened, so the check covered shared writes.
    assert!(multi > 0, "no write carried more than one record");
}
