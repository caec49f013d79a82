//! `streamwal`: look inside, check and dump streamwal logs, checkpoint
//! directories and keyed state, and run the crash-and-recover demo.
//!
//! Exit codes, for every command:
//! - 0: success (for `verify`: healthy; a torn tail is only a warning);
//! - 1: damaged data found (`verify` problems, or `dump`/`inspect`/`state`
//!   met corruption);
//! - 2: the command could not run (bad arguments, a missing or locked
//!   directory, an I/O error).
//!
//! Every error is one line on stderr; nothing on disk is trusted or unwrapped.

#![forbid(unsafe_code)]

mod demo;
mod dump;
mod inspect;
mod remote;
mod scan;
mod state;
mod verify;

use clap::{Parser, Subcommand};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::checkpoint::Checkpoint;
use streamwal::{Error, RecoveryMode, Wal, WalOptions};

/// Exit code when damaged data was found.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit code when the command could not run.
pub const EXIT_FAILED: u8 = 2;

/// Crash-safe storage for micro-batch streaming engines: inspect, verify and
/// dump its logs and checkpoint directories, or run the demo.
///
/// Exit codes: 0 success; 1 damaged data found; 2 the command could not run
/// (bad arguments, missing or locked directory, I/O error).
#[derive(Debug, Parser)]
#[command(
    name = "streamwal",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success; 1 damaged data found; 2 the command could not run \
                  (bad arguments, missing or locked directory, I/O error)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what is in a log directory or a checkpoint directory.
    ///
    /// For a log (NNNNNNNNNNNNNNNNNNNN.wal segments): each segment's name,
    /// size, first and last LSN, record count, sealed or active, and the torn
    /// tail if any. For a checkpoint directory: each checkpoint's batch time,
    /// size, and whether it is valid (or where and why not), and the journal
    /// replayed on the newest valid checkpoint: blocks, batches allocated,
    /// committed and pending. Opens everything read-only; a directory a
    /// running process holds is refused. Exit 1 if damage is seen.
    Inspect(inspect::InspectArgs),
    /// Read and check every byte of a log or checkpoint directory.
    ///
    /// A log: every segment header, every record's checksums, LSN order and
    /// the chain of segments. A checkpoint directory: every checkpoint file's
    /// header, checksums and body, and the journal log, every event decoded
    /// and replayed on the newest valid checkpoint. The directory is opened
    /// read-only (nothing is repaired); one a running process holds is
    /// refused. Every problem is printed with its file and byte offset.
    ///
    /// Exit 0 when healthy, 1 when any problem is found, 2 when the check
    /// could not run.
    ///
    /// A torn tail (damage confined to the unsynced end of the newest
    /// segment, which a crash legitimately leaves and which the next open
    /// truncates without losing any acknowledged record) is printed as a
    /// WARNING and does not fail the check, unless --strict is given. Damage
    /// to the newest records that no later record proves durable cannot be
    /// told apart from a torn write, and is reported the same way.
    Verify(verify::VerifyArgs),
    /// Print a log's records, one per line.
    ///
    /// Every record that passes its checksums, in LSN order, with its LSN and
    /// handle (segment, offset, payload length) and its payload: as text when
    /// it is printable UTF-8, else as hex. The log is opened read-only.
    /// Damaged records are skipped; if the log has damage other than a torn
    /// tail, a one-line error follows the records and the exit code is 1.
    /// For a checkpoint directory, dump its journal (DIR/journal) with
    /// --events.
    Dump(dump::DumpArgs),
    /// Show a context's keyed state: operators, version, keys and values.
    ///
    /// DIR is a context directory (the state is in DIR/state) or a state
    /// directory. The state is rebuilt read-only as recovery rebuilds it:
    /// the newest snapshot that passes its checks (damaged ones are skipped
    /// and listed), then every delta after it in the state log. Prints each
    /// snapshot and what became of it, the deltas replayed, the version (the
    /// last committed batch that changed the state; one that changed
    /// nothing writes no delta) and per operator its key count and size (the
    /// encoded keys and values, in bytes). With --at BATCH, the state as of
    /// the newest committed batch at or before BATCH. With --dump, the keys
    /// and values as JSON: hex by default, or decoded with --as, --key-as
    /// and --value-as (u64, i64, f64, bool, string, bytes).
    ///
    /// Nothing is modified; a state log a running process holds is refused.
    /// Exit 1 if damage is seen (a skipped snapshot, a damaged log record),
    /// or if the state cannot be rebuilt at all.
    State(state::StateArgs),
    /// Run the crash-and-recover demo: kill a worker engine with SIGKILL and
    /// check that every acknowledged record is counted exactly once.
    Demo(demo::DemoArgs),
    /// The demo's worker process (started by `demo`).
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                // Help and version go to stdout with success.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(EXIT_FAILED);
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("streamwal: {first} (see `streamwal --help`)");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Dump(args) => dump::run(args),
        Command::State(args) => state::run(args),
        Command::Demo(args) => demo::run(args),
        Command::DemoWorker(args) => demo::worker(args),
    };
    match result {
        Ok(code) => code,
        Err(line) => {
            eprintln!("streamwal: {}", one_line(&line));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Collapse a message to one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its chain of causes, on one line: every error the tool
/// prints goes through here, so that no cause ("Too many open files") is
/// dropped.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // Clients repeat a cause in their own message (an S3 error's body,
        // three times over): say each once.
        let text = s.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = s.source();
    }
    one_line(&out)
}

/// What a directory holds, judged by file names alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// Log segments (`NNNNNNNNNNNNNNNNNNNN.wal`).
    Log,
    /// Checkpoint files (`checkpoint-*.ckpt`) and/or a `journal/` log.
    Checkpoints,
}

/// True if `name` is a segment file name: 20 digits then `.wal`.
pub fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(streamwal::wal::SEGMENT_SUFFIX)
        .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
}

/// The batch time in a checkpoint file name, if `name` is one.
pub fn checkpoint_time(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The names in `dir`, sorted. A missing directory or a file is an error.
pub fn list_dir(dir: &Path) -> Result<Vec<String>, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Decide what `dir` is, or explain in one line why it is neither.
pub fn detect(dir: &Path) -> Result<DirKind, String> {
    let names = list_dir(dir)?;
    if names.iter().any(|n| is_segment_name(n)) {
        return Ok(DirKind::Log);
    }
    let journal = dir.join(streamwal::recovery::JOURNAL_DIR_NAME);
    if names.iter().any(|n| checkpoint_time(n).is_some()) || journal.is_dir() {
        return Ok(DirKind::Checkpoints);
    }
    Err(format!(
        "{} holds neither a log (NNNNNNNNNNNNNNNNNNNN.wal segments) nor checkpoints \
         (checkpoint-*.ckpt files or a journal/ log)",
        dir.display()
    ))
}

/// Open the log in `dir` read-only (salvage mode: nothing is modified, damage
/// is skipped and listed in the recovery report). A log held open by a live
/// process is refused with a one-line error.
pub fn open_read_only(dir: &Path) -> Result<Wal, String> {
    let opts = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..WalOptions::default()
    };
    Wal::open(dir, opts).map_err(|e| match e {
        Error::Locked { .. } => format!(
            "{} is locked: a running process has the log open (stop it, or copy the directory)",
            dir.display()
        ),
        other => describe(&other),
    })
}

/// Where the body of the checkpoint file `bytes` starts (0 if its header
/// does not check).
fn header_bytes(bytes: &[u8]) -> u64 {
    streamwal::checkpoint::CheckpointHeader::decode(bytes).map_or(0, |h| h.header_bytes() as u64)
}

/// One checkpoint file as read and checked by the tool.
#[derive(Debug)]
pub struct CheckpointFile {
    /// Its path.
    pub path: PathBuf,
    /// The batch time its name says.
    pub batch_time: u64,
    /// Its size in bytes (0 if it could not be read).
    pub size: u64,
    /// The decoded checkpoint, or the problem (offset, reason).
    pub result: Result<Checkpoint<Vec<u8>>, (u64, String)>,
}

/// Read and check every checkpoint file in `dir` (names from
/// [`list_dir`]), newest first. Reads only.
pub fn read_checkpoints(dir: &Path, names: &[String]) -> Vec<CheckpointFile> {
    let mut out = Vec::new();
    for name in names.iter().rev() {
        let Some(batch_time) = checkpoint_time(name) else {
            continue;
        };
        let path = dir.join(name);
        // Never read what is not a regular file: a FIFO would block forever.
        let regular = std::fs::metadata(&path).map(|m| m.is_file());
        if let Ok(false) = regular {
            out.push(CheckpointFile {
                path,
                batch_time,
                size: 0,
                result: Err((
                    0,
                    "named like a checkpoint, but not a regular file (a directory, FIFO, socket or device); not read, and the store ignores it".into(),
                )),
            });
            continue;
        }
        let (size, result) = match std::fs::read(&path) {
            Err(e) => (0, Err((0, format!("cannot read: {e}")))),
            Ok(bytes) => {
                let r = streamwal::checkpoint::decode_file_raw(&path, &bytes)
                    .map_err(|e| match &e {
                        Error::Corruption { offset, kind, .. } => (*offset, kind.to_string()),
                        Error::Decode { .. } => (header_bytes(&bytes), describe(&e)),
                        _ => (0, describe(&e)),
                    })
                    .and_then(|c| {
                        if c.batch_time == batch_time {
                            Ok(c)
                        } else {
                            Err((16, "batch time does not match the file name".to_string()))
                        }
                    });
                (bytes.len() as u64, r)
            }
        };
        out.push(CheckpointFile {
            path,
            batch_time,
            size,
            result,
        });
    }
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Format a time in ms since the Unix epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_764_158_400_123), "2025-11-26T12:00:00.123Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn names_are_classified_by_their_exact_shape() {
        assert!(is_segment_name("00000000000000000001.wal"));
        assert!(!is_segment_name("1.wal"));
        assert!(!is_segment_name("00000000000000000001.wal.tmp"));
        assert_eq!(
            checkpoint_time("checkpoint-00000000000000001000.ckpt"),
            Some(1000)
        );
        assert_eq!(checkpoint_time("checkpoint-1000.ckpt"), None);
        assert_eq!(
            checkpoint_time("checkpoint-00000000000000001000.ckpt.tmp"),
            None
        );
    }
}
