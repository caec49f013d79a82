//! Under `SyncPolicy::Always`, every frame's `durable_lsn` names exactly the records before its own write (everything before the first record of the write it went out in): the proof that lets recovery tell rot of an acknowledged batch from a torn last batch is never a batch behind, even with many concurrent appenders.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::storage::{DirLock, OpenMode, StdStorage, Storage, StorageFile};
use streamwal::wal::format::{SegmentHeader, decode_frame_header};
use streamwal::{Wal, WalOptions};

/// (offset, length) of every write to a segment file.
type WriteLog = Arc<Mutex<Vec<(u64, usize)>>>;

/// Records the (offset, length) of every write to a `.wal` file.
#[derive(Debug, Clone)]
struct Recording {
    inner: Arc<StdStorage>,
    writes: WriteLog,
}

#[derive(Debug)]
struct RecFile {
    inner: Arc<dyn StorageFile>,
    writes: Option<WriteLog>,
}

impl Storage for Recording {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<streamwal::storage::DirEntry>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Segment creation writes the temp file; appends write the segment.
        let writes = name.contains(".wal").then(|| self.writes.clone());
        Ok(Arc::new(RecFile {
            inner: self.inner.open(path, mode)?,
            writes,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.inner.try_lock_dir(dir)
    }
}

impl StorageFile for RecFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(w) = &self.writes {
            w.lock().unwrap().push((offset, buf.len()));
        }
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
}

#[test]
fn durable_lsn_covers_everything_before_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let storage = Recording {
        inner: Arc::new(StdStorage::new()),
        writes: Arc::new(Mutex::new(Vec::new())),
    };
    let opts = WalOptions {
        segment_bytes: 1 << 30, // one segment: write offsets are unambiguous
        preallocate: false,
        ..WalOptions::default()
    };
    let wal = Arc::new(
        Wal::open(
            streamwal::Location::dir_on(Arc::new(storage.clone()), &dir),
            opts,
        )
        .unwrap(),
    );
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
    let writes = storage.writes.lock().unwrap().clone();
    let mut multi = 0;
    for (start, len) in writes {
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
