//! `streamwal inspect DIR`: what is in a log or checkpoint directory, and
//! the per-segment scan that `verify` shares.

use crate::{DirKind, EXIT_DAMAGED, detect, list_dir, open_read_only, read_checkpoints};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::codec;
use streamwal::storage::StdStorage;
use streamwal::tracker::{Event, TrackerState};

/// Arguments of `streamwal inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A log directory (NNNNNNNNNNNNNNNNNNNN.wal segments) or a checkpoint
    /// directory (checkpoint-*.ckpt files and a journal/ log). Opened
    /// read-only; a directory a running process holds is refused. Or an
    /// object-storage URL, a log's or a context's (build with `--features
    /// object-store`).
    pub dir: PathBuf,
}

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
        if !crate::verify::in_torn_tail(&scan, &p.file, p.offset) {
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

/// Run `streamwal inspect`.
pub fn run(mut args: InspectArgs) -> Result<ExitCode, String> {
    args.dir = crate::remote::local(&args.dir);
    if let Some(url) = crate::remote::url_of(&args.dir) {
        return crate::remote::inspect(url);
    }
    match detect(&args.dir)? {
        DirKind::Log => inspect_log(&args.dir),
        DirKind::Checkpoints => inspect_checkpoints(&args.dir),
    }
}

fn inspect_log(dir: &Path) -> Result<ExitCode, String> {
    // The open takes the lock (refusing a live log) and checks everything.
    let wal = open_read_only(dir)?;
    let scan = scan_log(dir)?;
    let report = wal.recovery_report();
    println!("log {}", dir.display());
    let n = scan.segments.len();
    for (i, s) in scan.segments.iter().enumerate() {
        let name = s
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let state = if i + 1 == n { "active" } else { "sealed" };
        let lsns = s
            .lsns
            .map_or_else(|| "-".to_string(), |(f, l)| format!("{f}..{l}"));
        match &s.header {
            Ok(_) => println!(
                "  segment {name}  {} bytes  lsn {lsns}  {} records  {state}",
                s.size, s.records
            ),
            Err(why) => println!("  segment {name}  {} bytes  bad header: {why}", s.size),
        }
    }
    match &scan.torn_tail {
        Some((path, off, bytes)) => println!(
            "torn tail: {bytes} bytes at {} offset {off} (a crash's unsynced write; the next open truncates it)",
            path.display()
        ),
        None => println!("torn tail: none"),
    }
    let lsns = match (report.first_lsn, report.last_lsn) {
        (Some(f), Some(l)) => format!("lsn {f}..{l}"),
        _ => "no records".to_string(),
    };
    println!(
        "total: {} segments, {} records, {lsns}",
        report.segments, report.records
    );
    let stray: Vec<&str> = report
        .ignored_files
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "LOCK")
        .collect();
    if !stray.is_empty() {
        println!("not the log's (ignored): {}", stray.join(", "));
    }
    let damaged = report
        .problems
        .iter()
        .filter(|p| !crate::verify::in_torn_tail(&scan, &p.file, p.offset))
        .count();
    if damaged > 0 {
        println!("damage: {damaged} problems (run `streamwal verify` for the list)");
        return Ok(ExitCode::from(EXIT_DAMAGED));
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_checkpoints(dir: &Path) -> Result<ExitCode, String> {
    let names = list_dir(dir)?;
    let files = read_checkpoints(dir, &names);
    println!("checkpoint directory {}", dir.display());
    let mut damaged = false;
    for f in &files {
        let name = f
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let time = crate::format_ms(f.batch_time);
        match &f.result {
            Ok(c) => println!(
                "  checkpoint {name}  time {} ({time})  {} bytes  journal lsn {}  {} batch(es) pending at checkpoint  valid",
                f.batch_time,
                f.size,
                c.journal_lsn,
                c.pending_batches.len()
            ),
            Err((off, why)) => {
                damaged = true;
                println!(
                    "  checkpoint {name}  time {} ({time})  {} bytes  INVALID at offset {off}: {why}",
                    f.batch_time, f.size
                );
            }
        }
    }
    if files.is_empty() {
        println!("  no checkpoints");
    }
    let newest = files.iter().find_map(|f| f.result.as_ref().ok());
    let journal = dir.join(streamwal::recovery::JOURNAL_DIR_NAME);
    if !journal.is_dir() {
        println!("journal: none");
        return Ok(code(damaged));
    }
    let (state, lsn) = newest.map_or((TrackerState::default(), 0), |c| {
        (c.tracker.clone(), c.journal_lsn)
    });
    let j = replay_journal(&journal, state, lsn)?;
    let s = &j.state;
    let unallocated: usize = s.unallocated.values().map(Vec::len).sum();
    let allocated_blocks: usize = s
        .allocated
        .values()
        .flat_map(|b| b.values())
        .map(Vec::len)
        .sum();
    let pending = s
        .allocated
        .keys()
        .filter(|t| !s.committed.contains(t))
        .count();
    println!(
        "journal: {} segments, {} records, {} events replayed after checkpoint lsn {lsn}",
        j.segments, j.records, j.replayed
    );
    if let Some((path, off, bytes)) = &j.torn_tail {
        println!(
            "  torn tail: {bytes} bytes at {} offset {off} (the next open truncates it)",
            path.display()
        );
    }
    println!(
        "  blocks: {} ({unallocated} unallocated, {allocated_blocks} in batches)",
        unallocated + allocated_blocks
    );
    println!(
        "  batches: {} allocated, {} committed, {pending} pending",
        s.allocated.len(),
        s.committed.len()
    );
    println!(
        "  last allocated batch time {}, cleaned before {}, last block lsn {}",
        s.last_allocated_time, s.cleaned_before, s.last_block_lsn
    );
    if !j.problems.is_empty() {
        println!(
            "journal damage: {} problems (run `streamwal verify` for the list)",
            j.problems.len()
        );
        damaged = true;
    }
    Ok(code(damaged))
}

fn code(damaged: bool) -> ExitCode {
    if damaged {
        ExitCode::from(EXIT_DAMAGED)
    } else {
        ExitCode::SUCCESS
    }
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
