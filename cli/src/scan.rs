//! The read-only views of a log directory that `inspect`, `verify` and
//! `dump` share: the library's scan of every segment, whether a problem
//! lies in the torn tail it found, and a checkpoint's journal replayed on
//! top of the checkpoint's tracker state.

use crate::open_read_only;
use std::path::{Path, PathBuf};
use streamwal::codec;
use streamwal::storage::StdStorage;
use streamwal::tracker::{Event, TrackerState};

pub use streamwal::wal::LogScan;

/// Scan every segment of the log in `dir`, read-only, with the library's own
/// scan and torn-tail rule (`streamwal::wal::scan_log`).
pub fn scan_log(dir: &Path) -> Result<LogScan, String> {
    streamwal::wal::scan_log(&StdStorage::new(), dir).map_err(|e| crate::describe(&e))
}

/// The journal replayed read-only on top of a checkpoint's tracker state.
#[derive(Debug, Default)]
pub struct JournalSummary {
    /// The tracker state after replay.
    pub state: TrackerState,
    /// Events applied on top of the checkpoint.
    pub replayed: u64,
    /// Records in the journal.
    pub records: u64,
    /// Segments of the journal.
    pub segments: usize,
    /// Problems: (file, offset, reason), torn tail excluded.
    pub problems: Vec<(PathBuf, u64, String)>,
    /// The journal's torn tail, if any: (file, offset, bytes).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// What the frame headers left in that tail say.
    pub torn_frames: streamwal::wal::TornFrames,
}

/// Replay the journal in `dir` read-only from `(state, lsn)`.
pub fn replay_journal(
    dir: &Path,
    state: TrackerState,
    from_lsn: u64,
) -> Result<JournalSummary, String> {
    let wal = open_read_only(dir)?;
    let scan = scan_log(dir)?;
    let report = wal.recovery_report();
    let mut out = JournalSummary {
        state,
        records: report.records,
        segments: report.segments,
        torn_tail: scan.torn_tail.clone(),
        torn_frames: scan.torn_frames,
        ..JournalSummary::default()
    };
    for p in &report.problems {
        if !in_torn_tail(&scan, &p.file, p.offset) {
            out.problems
                .push((p.file.clone(), p.offset, p.kind.to_string()));
        }
    }
    let last = wal.next_lsn().saturating_sub(1);
    if last < from_lsn {
        out.problems.push((
            dir.to_path_buf(),
            0,
            format!("the journal ends at LSN {last} but the checkpoint refers to LSN {from_lsn}"),
        ));
    } else if last > from_lsn
        && let Some(first) = wal.first_lsn()
        && first > from_lsn + 1
    {
        out.problems.push((
            dir.to_path_buf(),
            0,
            format!(
                "LSN {} is needed but the journal starts at LSN {first}",
                from_lsn + 1
            ),
        ));
    }
    for item in wal.iter_from(from_lsn + 1) {
        let (h, bytes) = item.map_err(|e| crate::describe(&e))?;
        match codec::decode::<Event>(&bytes, "journal event") {
            Ok(event) => {
                out.state.apply(&event);
                out.replayed += 1;
            }
            Err(e) => {
                let seg = dir.join(streamwal::wal::segment_file_name(h.segment()));
                out.problems.push((seg, h.offset(), crate::describe(&e)));
            }
        }
    }
    Ok(out)
}

/// True if `(file, offset)` lies in the torn tail `scan` found.
pub fn in_torn_tail(scan: &LogScan, file: &Path, offset: u64) -> bool {
    scan.torn_tail
        .as_ref()
        .is_some_and(|(path, start, _)| path == file && offset >= *start)
}

#[cfg(test)]
mod tests {
    /// The cause of an I/O error reaches the user ("Too many open files",
    /// "No such file or directory"), not only the operation and the path.
    #[test]
    fn a_scan_error_carries_its_cause() {
        let dir = std::path::Path::new("/nonexistent/streamwal-inspect-test");
        let err = super::scan_log(dir).expect_err("no such directory");
        assert!(err.contains("list"), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }
}
