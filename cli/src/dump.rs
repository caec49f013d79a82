//! `streamwal dump DIR`: print a log's records, one per line.

use crate::scan::{in_torn_tail, scan_log};
use crate::{DirKind, EXIT_DAMAGED, detect, hex, open_read_only};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use streamwal::tracker::Event;

/// How payloads are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `lsn=L segment=S offset=O len=N text=...` when the payload is
    /// printable UTF-8, else `hex=...`.
    Text,
    /// As text, but the payload always as `hex=...`.
    Hex,
    /// One JSON object per line: lsn, segment, offset, len, and `text` (a
    /// JSON string) when the payload is UTF-8, else `hex`.
    Json,
}

/// Arguments of `streamwal dump` (its help text is on the subcommand).
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// The log directory, or a log's object-storage URL (build with
    /// `--features object-store`).
    pub dir: PathBuf,
    /// Start at this LSN.
    #[arg(long, value_name = "LSN", default_value_t = 1)]
    pub from: u64,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Decode each payload as a block-tracker journal event (for the
    /// journal/ log of a checkpoint directory) and print the event.
    #[arg(long)]
    pub events: bool,
}

/// True if `s` has no control characters.
fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// One record as a line of output.
fn line(format: Format, h: &streamwal::RecordHandle, payload: &[u8], events: bool) -> String {
    if events {
        let event = match streamwal::codec::decode::<Event>(payload, "journal event") {
            Ok(e) => format!("{e:?}"),
            Err(e) => format!(
                "undecodable event ({}): {}",
                crate::describe(&e),
                hex(payload)
            ),
        };
        return match format {
            Format::Json => serde_json::json!({
                "lsn": h.lsn(),
                "segment": h.segment(),
                "offset": h.offset(),
                "len": h.len(),
                "event": event,
            })
            .to_string(),
            Format::Text | Format::Hex => format!(
                "lsn={} segment={} offset={} len={} event={event}",
                h.lsn(),
                h.segment(),
                h.offset(),
                h.len()
            ),
        };
    }
    let text = std::str::from_utf8(payload).ok();
    match format {
        Format::Json => {
            let mut obj = serde_json::json!({
                "lsn": h.lsn(),
                "segment": h.segment(),
                "offset": h.offset(),
                "len": h.len(),
            });
            let (key, value) = match text {
                Some(t) => ("text", t.to_string()),
                None => ("hex", hex(payload)),
            };
            obj[key] = serde_json::Value::String(value);
            obj.to_string()
        }
        Format::Text | Format::Hex => {
            let data = match text {
                Some(t) if format == Format::Text && printable(t) => format!("text={t}"),
                _ => format!("hex={}", hex(payload)),
            };
            format!(
                "lsn={} segment={} offset={} len={} {data}",
                h.lsn(),
                h.segment(),
                h.offset(),
                h.len()
            )
        }
    }
}

/// Run `streamwal dump`.
pub fn run(mut args: DumpArgs) -> Result<ExitCode, String> {
    args.dir = crate::remote::local(&args.dir);
    let url = crate::remote::url_of(&args.dir);
    if url.is_none() && detect(&args.dir)? == DirKind::Checkpoints {
        return Err(format!(
            "{} is a checkpoint directory; dump its journal with `streamwal dump --events {}`",
            args.dir.display(),
            args.dir
                .join(streamwal::recovery::JOURNAL_DIR_NAME)
                .display()
        ));
    }
    let (wal, damage) = match url {
        // Objects have no torn tails: every problem is damage.
        Some(url) => {
            let wal = crate::remote::open_log(url)?;
            let report = wal.recovery_report();
            if report.segments == 0 && report.problems.is_empty() {
                return Err(format!("{url} holds no log"));
            }
            let damage = wal.recovery_report().problems.clone();
            (wal, damage)
        }
        None => {
            let wal = open_read_only(&args.dir)?;
            let scan = scan_log(&args.dir)?;
            let damage: Vec<_> = wal
                .recovery_report()
                .problems
                .iter()
                .filter(|p| !in_torn_tail(&scan, &p.file, p.offset))
                .cloned()
                .collect();
            (wal, damage)
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let limit = args
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    for item in wal.iter_from(args.from.max(1)).take(limit) {
        let (h, payload) = item.map_err(|e| crate::describe(&e))?;
        if let Err(e) = writeln!(out, "{}", line(args.format, &h, &payload, args.events)) {
            // A closed pipe (`| head`) ends the dump quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(format!("writing to stdout: {e}"));
        }
    }
    if let Err(e) = out.flush()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(format!("writing to stdout: {e}"));
    }
    if let Some(first) = damage.first() {
        eprintln!(
            "streamwal: {} is damaged: {} problem(s), first in {} at offset {}: {}; damaged records were skipped (run `streamwal verify`)",
            args.dir.display(),
            damage.len(),
            first.file.display(),
            first.offset,
            first.kind
        );
        return Ok(ExitCode::from(EXIT_DAMAGED));
    }
    Ok(ExitCode::SUCCESS)
}
