//! `streamwal verify DIR`: read and check every byte, modify nothing.

use crate::scan::{LogScan, in_torn_tail, replay_journal, scan_log};
use crate::{DirKind, EXIT_DAMAGED, detect, list_dir, open_read_only, read_checkpoints};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::tracker::TrackerState;
use streamwal::wal::TornFrames;

/// Arguments of `streamwal verify` (its help text is on the subcommand).
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The log or checkpoint directory to check, or an object-storage URL
    /// (a log's, or a context's opened at a URL; build with
    /// `--features object-store`).
    pub dir: PathBuf,
    /// Print one JSON object (dir, kind, healthy, problems, warnings) instead
    /// of text.
    #[arg(long)]
    pub json: bool,
    /// Count a torn tail as a problem (exit 1) instead of a warning.
    #[arg(long)]
    pub strict: bool,
}

/// One finding.
#[derive(Debug)]
struct Finding {
    file: PathBuf,
    offset: u64,
    reason: String,
}

/// Run `streamwal verify`.
pub fn run(mut args: VerifyArgs) -> Result<ExitCode, String> {
    args.dir = crate::remote::local(&args.dir);
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (kind, summary) = match crate::remote::url_of(&args.dir) {
        Some(url) => {
            let mut found = Vec::new();
            let (kind, summary) = crate::remote::verify(url, &mut found)?;
            problems.extend(found.into_iter().map(|(file, offset, reason)| Finding {
                file,
                offset,
                reason,
            }));
            (kind, summary)
        }
        None => {
            let kind = detect(&args.dir)?;
            let summary = match kind {
                DirKind::Log => verify_log(&args.dir, &mut problems, &mut warnings)?,
                DirKind::Checkpoints => {
                    verify_checkpoints(&args.dir, &mut problems, &mut warnings)?
                }
            };
            (kind, summary)
        }
    };
    if args.strict {
        problems.append(&mut warnings);
    }
    let healthy = problems.is_empty();
    if args.json {
        let list = |v: &[Finding]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|f| {
                    serde_json::json!({
                        "file": f.file.to_string_lossy(),
                        "offset": f.offset,
                        "reason": f.reason,
                    })
                })
                .collect()
        };
        let kind = match kind {
            DirKind::Log => "log",
            DirKind::Checkpoints => "checkpoints",
        };
        let report = serde_json::json!({
            "dir": args.dir.to_string_lossy(),
            "kind": kind,
            "healthy": healthy,
            "summary": summary,
            "problems": list(&problems),
            "warnings": list(&warnings),
        });
        println!("{report}");
    } else {
        for f in &problems {
            println!(
                "ERROR {} offset {}: {}",
                f.file.display(),
                f.offset,
                f.reason
            );
        }
        for f in &warnings {
            println!(
                "WARNING {} offset {}: {}",
                f.file.display(),
                f.offset,
                f.reason
            );
        }
        if healthy {
            println!("OK {}: {summary}", args.dir.display());
        } else {
            println!(
                "DAMAGED {}: {} problem(s); {summary}",
                args.dir.display(),
                problems.len()
            );
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}

fn torn_warning(
    tail: &Option<(PathBuf, u64, u64)>,
    frames: &TornFrames,
    warnings: &mut Vec<Finding>,
) {
    let Some((path, off, bytes)) = tail else {
        return;
    };
    // Say what the bytes prove and no more: a crash during the last write
    // leaves a torn tail, but so does a file cut short or damaged at its
    // end, and without surviving frame headers the two look the same.
    let held = match frames.lsns {
        Some((first, last)) if frames.writes > 1 => format!(
            "it holds the headers of {} record(s), LSN {first}..{last}, from at least {} separate writes, so more than the last write was lost (a crash can lose that much only under a sync policy that acknowledges before it syncs; otherwise the file was truncated or overwritten)",
            frames.records, frames.writes
        ),
        Some((first, last)) => format!(
            "it holds the headers of {} record(s), LSN {first}..{last}, stamped alike (one write, or several with no sync between)",
            frames.records
        ),
        None => "no frame header survives in it, so how many records it held cannot be told".into(),
    };
    warnings.push(Finding {
        file: path.clone(),
        offset: *off,
        reason: format!(
            "torn tail of {bytes} bytes after the last valid record: {held}. A crash during an unsynced write leaves this, and so does truncation or damage at the end of the file, which the log cannot tell apart here; the next read-write open drops these bytes (--strict makes this an error)"
        ),
    });
}

/// Entries named like segments that are not, as problems: the directory has
/// been tampered with, and a copied segment there is not being read.
fn lookalike_problems(scan: &LogScan, problems: &mut Vec<Finding>) {
    for (path, reason) in &scan.lookalikes {
        problems.push(Finding {
            file: path.clone(),
            offset: 0,
            reason: (*reason).to_string(),
        });
    }
}

fn verify_log(
    dir: &Path,
    problems: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) -> Result<String, String> {
    // Salvage mode: read-only, every segment read to its end, every problem
    // listed rather than the first one raised.
    let wal = open_read_only(dir)?;
    let scan = scan_log(dir)?;
    let report = wal.recovery_report();
    for p in &report.problems {
        if !in_torn_tail(&scan, &p.file, p.offset) {
            problems.push(Finding {
                file: p.file.clone(),
                offset: p.offset,
                reason: p.kind.to_string(),
            });
        }
    }
    torn_warning(&scan.torn_tail, &scan.torn_frames, warnings);
    lookalike_problems(&scan, problems);
    let lsns = match (report.first_lsn, report.last_lsn) {
        (Some(f), Some(l)) => format!("LSN {f}..{l}"),
        _ => "no records".into(),
    };
    Ok(format!(
        "log, {} segment(s), {} record(s), {lsns}",
        report.segments, report.records
    ))
}

fn verify_checkpoints(
    dir: &Path,
    problems: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) -> Result<String, String> {
    let names = list_dir(dir)?;
    let files = read_checkpoints(dir, &names);
    let mut valid = 0;
    for f in &files {
        match &f.result {
            Ok(_) => valid += 1,
            Err((offset, reason)) => problems.push(Finding {
                file: f.path.clone(),
                offset: *offset,
                reason: format!("invalid checkpoint: {reason}"),
            }),
        }
    }
    let mut summary = format!("checkpoints, {valid} of {} valid", files.len());
    let journal = dir.join(streamwal::recovery::JOURNAL_DIR_NAME);
    if journal.is_dir() {
        let newest = files.iter().find_map(|f| f.result.as_ref().ok());
        let (state, lsn) = newest.map_or((TrackerState::default(), 0), |c| {
            (c.tracker.clone(), c.journal_lsn)
        });
        let j = replay_journal(&journal, state, lsn)?;
        for (file, offset, reason) in j.problems {
            problems.push(Finding {
                file,
                offset,
                reason: format!("journal: {reason}"),
            });
        }
        torn_warning(&j.torn_tail, &j.torn_frames, warnings);
        summary.push_str(&format!(
            "; journal {} record(s), {} replayed after LSN {lsn}",
            j.records, j.replayed
        ));
    } else {
        summary.push_str("; no journal");
    }
    Ok(summary)
}
