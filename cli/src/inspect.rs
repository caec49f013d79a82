//! `streamwal inspect DIR`: what is in a log or checkpoint directory.

use crate::scan::{in_torn_tail, replay_journal, scan_log};
use crate::{DirKind, EXIT_DAMAGED, detect, list_dir, open_read_only, read_checkpoints};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::tracker::TrackerState;

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
        .filter(|p| !in_torn_tail(&scan, &p.file, p.offset))
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
