//! `inspect`, `verify` and `dump` on object storage: an argument with `://`
//! is a URL (`s3://bucket/prefix`), either a log's location or a context's
//! (checkpoints, with the journal in `journal/` and the receiver log in
//! `receiver/`, as `StreamingContext::builder` lays them out at a URL). Everything
//! is opened read-only: no claim, no epoch, nobody fenced.

#[cfg(not(feature = "object-store"))]
use crate::DirKind;
use std::path::{Path, PathBuf};

/// The URL in a command's path argument, if it is one (`file://` URLs are
/// local paths: see [`local`]).
pub fn url_of(p: &Path) -> Option<&str> {
    p.to_str().filter(|s| s.contains("://"))
}

/// A `file:///path` argument as the path it names; anything else as is.
pub fn local(p: &Path) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_prefix("file://")) {
        Some(rest) if rest.starts_with('/') => PathBuf::from(rest),
        Some(rest) => match rest.strip_prefix("localhost") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            _ => p.to_path_buf(),
        },
        None => p.to_path_buf(),
    }
}

/// One problem: (object, offset, reason).
pub type Problem = (PathBuf, u64, String);

#[cfg(not(feature = "object-store"))]
fn unsupported() -> String {
    "this streamwal was built without object storage; build it with \
     `--features object-store` to use a URL"
        .into()
}

#[cfg(not(feature = "object-store"))]
pub fn open_log(_url: &str) -> Result<streamwal::Wal, String> {
    Err(unsupported())
}

#[cfg(not(feature = "object-store"))]
pub fn verify(_url: &str, _problems: &mut Vec<Problem>) -> Result<(DirKind, String), String> {
    Err(unsupported())
}

#[cfg(not(feature = "object-store"))]
pub fn inspect(_url: &str) -> Result<std::process::ExitCode, String> {
    Err(unsupported())
}

#[cfg(feature = "object-store")]
pub use imp::{inspect, open_log, verify};

#[cfg(feature = "object-store")]
mod imp {
    use super::Problem;
    use crate::{DirKind, EXIT_DAMAGED, describe};
    use std::process::ExitCode;
    use streamwal::object::ObjectCheckpointStore;
    use streamwal::recovery::{JOURNAL_DIR_NAME, RECEIVER_LOG_NAME};
    use streamwal::tracker::{Event, TrackerState};
    use streamwal::{RecoveryMode, Wal, WalOptions};

    fn child(url: &str, name: &str) -> String {
        format!("{}/{name}", url.trim_end_matches('/'))
    }

    /// Open the log at `url` read-only (salvage: damage is skipped and
    /// listed in the recovery report).
    pub fn open_log(url: &str) -> Result<Wal, String> {
        let opts = WalOptions {
            recovery_mode: RecoveryMode::Salvage,
            ..WalOptions::default()
        };
        let location = streamwal::Location::parse(url).map_err(|e| describe(&e))?;
        Wal::open(location, opts).map_err(|e| describe(&e))
    }

    /// A log, or else a context (checkpoints and two logs below).
    fn kind(log: &Wal) -> DirKind {
        if log.recovery_report().segments > 0 || !log.recovery_report().problems.is_empty() {
            DirKind::Log
        } else {
            DirKind::Checkpoints
        }
    }

    /// Check one log: every object, every record. Returns a summary.
    fn check_log(log: &Wal, problems: &mut Vec<Problem>) -> String {
        let report = log.recovery_report();
        for p in &report.problems {
            problems.push((p.file.clone(), p.offset, p.kind.to_string()));
        }
        for l in &report.lookalike_files {
            problems.push((
                log.location().display_path().join(&l.name),
                0,
                l.reason.to_string(),
            ));
        }
        let lsns = match (report.first_lsn, report.last_lsn) {
            (Some(f), Some(l)) => format!("LSN {f}..{l}"),
            _ => "no records".into(),
        };
        format!(
            "log, {} object(s), {} record(s), {lsns}",
            report.segments, report.records
        )
    }

    /// The context at `url`: its checkpoints, and the journal replayed on
    /// the newest valid one. Returns a summary.
    fn check_context(
        url: &str,
        problems: &mut Vec<Problem>,
        verbose: bool,
    ) -> Result<String, String> {
        let loc = streamwal::object::ObjectLocation::parse(url).map_err(|e| describe(&e))?;
        let store = ObjectCheckpointStore::open_read_only(loc);
        let all = store.read_all_raw().map_err(|e| describe(&e))?;
        let journal = open_log(&child(url, JOURNAL_DIR_NAME))?;
        let receiver = open_log(&child(url, RECEIVER_LOG_NAME))?;
        let empty = |w: &Wal| w.recovery_report().segments == 0;
        if all.is_empty() && empty(&journal) && empty(&receiver) {
            return Err(format!("{url} holds no log and no context"));
        }
        if verbose {
            println!("context {url}");
        }
        let mut newest = None;
        for (t, object, checked) in &all {
            match checked {
                Ok(c) => {
                    if verbose {
                        println!(
                            "  checkpoint {t}  valid  journal LSN {}  {} pending",
                            c.journal_lsn,
                            c.pending_batches.len()
                        );
                    }
                    newest = newest.or(Some(c));
                }
                Err(e) => {
                    let offset = match e {
                        streamwal::Error::Corruption { offset, .. } => *offset,
                        _ => 0,
                    };
                    if verbose {
                        println!(
                            "  checkpoint {t}  INVALID at offset {offset}: {}",
                            describe(e)
                        );
                    }
                    problems.push((
                        object.clone(),
                        offset,
                        format!("invalid checkpoint: {}", describe(e)),
                    ));
                }
            }
        }
        let valid = all.iter().filter(|(_, _, c)| c.is_ok()).count();
        let (mut state, lsn) = newest.map_or((TrackerState::default(), 0), |c| {
            (c.tracker.clone(), c.journal_lsn)
        });
        let _ = check_log(&journal, problems);
        let last = journal.next_lsn().saturating_sub(1);
        if last < lsn {
            problems.push((
                journal.location().display_path(),
                0,
                format!("the journal ends at LSN {last} but the checkpoint refers to LSN {lsn}"),
            ));
        }
        if last > lsn
            && let Some(first) = journal.first_lsn()
            && first > lsn + 1
        {
            problems.push((
                journal.location().display_path(),
                0,
                format!(
                    "LSN {} is needed but the journal starts at LSN {first}",
                    lsn + 1
                ),
            ));
        }
        let mut replayed = 0;
        if last > lsn {
            for item in journal.iter_from(lsn + 1) {
                let (h, bytes) = match item {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push((journal.location().display_path(), 0, describe(&e)));
                        break;
                    }
                };
                match streamwal::codec::decode::<Event>(&bytes, "journal event") {
                    Ok(ev) => {
                        state.apply(&ev);
                        replayed += 1;
                    }
                    Err(e) => problems.push((
                        journal
                            .location()
                            .display_path()
                            .join(streamwal::object::log_object_name(h.segment())),
                        h.offset(),
                        describe(&e),
                    )),
                }
            }
        }
        let rx = check_log(&receiver, problems);
        let rx_last = receiver.next_lsn().saturating_sub(1);
        if state.last_block_lsn > rx_last {
            problems.push((
                receiver.location().display_path(),
                0,
                format!(
                    "the receiver log ends at LSN {rx_last} but block {} is tracked",
                    state.last_block_lsn
                ),
            ));
        }
        if verbose {
            println!(
                "  journal: {} record(s), {replayed} replayed after LSN {lsn}: {} unallocated stream(s), {} batch(es) allocated, {} committed",
                journal.recovery_report().records,
                state.unallocated.len(),
                state.allocated.len(),
                state.committed.len()
            );
            println!("  receiver: {rx}");
        }
        Ok(format!(
            "context, checkpoints {valid} of {} valid; journal {} record(s), {replayed} replayed after LSN {lsn}; receiver {rx}",
            all.len(),
            journal.recovery_report().records
        ))
    }

    /// `streamwal verify URL`.
    pub fn verify(url: &str, problems: &mut Vec<Problem>) -> Result<(DirKind, String), String> {
        let log = open_log(url)?;
        match kind(&log) {
            DirKind::Log => {
                let summary = check_log(&log, problems);
                // Read every record once more through iteration.
                if let Some(Err(e)) = log.iter().find(Result::is_err) {
                    problems.push((log.location().display_path(), 0, describe(&e)));
                }
                Ok((DirKind::Log, summary))
            }
            DirKind::Checkpoints => {
                Ok((DirKind::Checkpoints, check_context(url, problems, false)?))
            }
        }
    }

    /// `streamwal inspect URL`.
    pub fn inspect(url: &str) -> Result<ExitCode, String> {
        let log = open_log(url)?;
        let mut problems = Vec::new();
        match kind(&log) {
            DirKind::Log => {
                println!("log {url}");
                println!("  {}", check_log(&log, &mut problems));
            }
            DirKind::Checkpoints => {
                check_context(url, &mut problems, true)?;
            }
        }
        for (file, offset, reason) in &problems {
            println!("DAMAGE {} offset {offset}: {reason}", file.display());
        }
        Ok(if problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_DAMAGED)
        })
    }
}
