//! `streamwal state DIR`: the keyed state of a context, rebuilt read-only
//! the way recovery rebuilds it (the newest valid snapshot, then the deltas
//! after it), at the last committed batch or at an older one (`--at`).
//!
//! The rules mirror `StateStore::open` in `src/state/store.rs`, so that
//! what the tool shows is what a restarted engine would get: a damaged
//! snapshot is skipped for an older one, a snapshot whose body a newer
//! build wrote (or whose body and header disagree) stops recovery, and so
//! does a missing, undecodable, foreign or out-of-order delta.

use crate::scan::{in_torn_tail, scan_log};
use crate::{EXIT_DAMAGED, EXIT_FAILED, describe, hex, list_dir, open_read_only, read_checkpoints};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use streamwal::recovery::{JOURNAL_DIR_NAME, STATE_DIR_NAME};
use streamwal::state::{
    RawSlot, STATE_FORMAT_VERSION, STATE_LOG_NAME, STATE_SNAPSHOTS_NAME, SnapshotBody, decode_delta,
};

/// How stored key or value bytes are shown. Keys and values are the
/// bincode bytes of the engine's own types, which the tool cannot know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum As {
    /// The stored bytes as lower-case hex (works for every type).
    Hex,
    /// An unsigned integer: u16, u32, u64 or usize (variable-length alike;
    /// a u8 is one plain byte: read it as hex).
    U64,
    /// A signed integer: i16, i32, i64 or isize (zigzag, variable-length).
    I64,
    /// A 64-bit float.
    F64,
    /// A boolean.
    Bool,
    /// A `String` (or `&str`).
    String,
    /// A `Vec<u8>`, shown as hex of its bytes.
    Bytes,
}

impl As {
    fn name(self) -> &'static str {
        match self {
            As::Hex => "hex",
            As::U64 => "u64",
            As::I64 => "i64",
            As::F64 => "f64",
            As::Bool => "bool",
            As::String => "string",
            As::Bytes => "bytes",
        }
    }
}

/// Arguments of `streamwal state` (its help text is on the subcommand).
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// A context directory (its keyed state is in state/ below it) or a
    /// state directory itself (log/ and snapshots/). Opened read-only; a
    /// state a running process holds is refused.
    pub dir: PathBuf,
    /// Show the state as of batch BATCH (ms), i.e. of the newest committed
    /// batch at or before it that changed the state: the newest valid
    /// snapshot at or before it plus the deltas up to it.
    #[arg(long, value_name = "BATCH")]
    pub at: Option<u64>,
    /// Print the keys and values, of every operator or of OPERATOR only, as
    /// one JSON object (put DIR before a bare --dump).
    #[arg(long, value_name = "OPERATOR", num_args = 0..=1)]
    pub dump: Option<Option<String>>,
    /// Decode keys and values as TYPE in --dump (default: hex).
    #[arg(long = "as", value_enum, value_name = "TYPE", requires = "dump")]
    pub as_: Option<As>,
    /// Decode keys as TYPE in --dump (overrides --as).
    #[arg(long, value_enum, value_name = "TYPE", requires = "dump")]
    pub key_as: Option<As>,
    /// Decode values as TYPE in --dump (overrides --as).
    #[arg(long, value_enum, value_name = "TYPE", requires = "dump")]
    pub value_as: Option<As>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long, conflicts_with = "dump")]
    pub json: bool,
}

/// Why the command stopped: it could not run (exit 2), or the state is
/// damaged past what recovery accepts (exit 1).
enum Failure {
    Failed(String),
    Damaged(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Failed(s)
    }
}

/// What became of one snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The one the state was rebuilt from.
    Used,
    /// Damaged, and passed over for an older one.
    Skipped,
    /// Damaged, but never needed (older than the one used, or after --at).
    Damaged,
    /// Valid and older than the one used.
    Older,
    /// After --at.
    After,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Used => "used",
            Status::Skipped => "skipped",
            Status::Damaged => "damaged",
            Status::Older => "older",
            Status::After => "after --at",
        }
    }
}

/// One snapshot file as read.
struct Snapshot {
    path: PathBuf,
    batch_time: u64,
    size: u64,
    /// The body and the header's state-log LSN, or the problem (offset,
    /// reason).
    body: Result<(SnapshotBody, u64), (u64, String)>,
    status: Status,
}

/// The state rebuilt at one batch.
struct Rebuilt {
    dir: PathBuf,
    snapshots: Vec<Snapshot>,
    /// Per operator, every live key (encoded) and its slot.
    operators: BTreeMap<String, BTreeMap<Vec<u8>, RawSlot>>,
    version: Option<u64>,
    /// (LSN, batch) of each delta applied, in order.
    deltas: Vec<(u64, u64)>,
    /// The state log: segments, records, first and last LSN.
    log: (usize, u64, Option<u64>, Option<u64>),
    /// Damage that did not stop the rebuild: (file, offset, reason).
    damage: Vec<(PathBuf, u64, String)>,
}

/// Run `streamwal state`.
pub fn run(args: StateArgs) -> Result<ExitCode, String> {
    let dir = crate::remote::local(&args.dir);
    if crate::remote::url_of(&dir).is_some() {
        return Err(format!(
            "{}: `streamwal state` reads a local directory only (not object storage yet)",
            dir.display()
        ));
    }
    let rebuilt = match locate(&dir).and_then(|d| rebuild(&d, args.at)) {
        Ok(r) => r,
        Err(Failure::Failed(why)) => return Err(why),
        Err(Failure::Damaged(why)) => {
            eprintln!("streamwal: {}", crate::one_line(&why));
            return Ok(ExitCode::from(EXIT_DAMAGED));
        }
    };
    if let Some(only) = &args.dump {
        let show = (
            args.key_as.or(args.as_).unwrap_or(As::Hex),
            args.value_as.or(args.as_).unwrap_or(As::Hex),
        );
        if let Err(why) = dump(&rebuilt, args.at, only.as_deref(), show) {
            eprintln!("streamwal: {}", crate::one_line(&why));
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    } else if args.json {
        println!("{}", summary_json(&rebuilt, args.at));
    } else {
        print_summary(&rebuilt, args.at);
    }
    Ok(if rebuilt.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}

/// The state directory `dir` names: `dir/state` for a context, or `dir`
/// itself when it holds the state log and the snapshots.
fn locate(dir: &Path) -> Result<PathBuf, Failure> {
    let names = list_dir(dir)?;
    let has = |d: &Path, name: &str| d.join(name).is_dir();
    if has(dir, STATE_DIR_NAME) {
        let state = dir.join(STATE_DIR_NAME);
        if !has(&state, STATE_LOG_NAME) {
            return Err(Failure::Damaged(format!(
                "{} is missing: the state has no log",
                state.join(STATE_LOG_NAME).display()
            )));
        }
        return Ok(state);
    }
    if has(dir, STATE_LOG_NAME) && has(dir, STATE_SNAPSHOTS_NAME) {
        return Ok(dir.to_path_buf());
    }
    let context =
        has(dir, JOURNAL_DIR_NAME) || names.iter().any(|n| crate::checkpoint_time(n).is_some());
    Err(Failure::Failed(if context {
        format!(
            "{} is a context directory without keyed state (no {STATE_DIR_NAME}/ below it: a \
             streamwal without keyed state last opened it)",
            dir.display()
        )
    } else {
        format!(
            "{} holds no keyed state: neither a context directory (with {STATE_DIR_NAME}/ below \
             it) nor a state directory ({STATE_LOG_NAME}/ and {STATE_SNAPSHOTS_NAME}/)",
            dir.display()
        )
    }))
}

/// Read every snapshot file in `dir`, newest first, decoding each body.
fn read_snapshots(dir: &Path) -> Result<Vec<Snapshot>, Failure> {
    if !dir.is_dir() {
        return Ok(Vec::new()); // no snapshot was ever written
    }
    let names = list_dir(dir)?;
    Ok(read_checkpoints(dir, &names)
        .into_iter()
        .map(|f| {
            // As the store's `latest`: a graph that does not decode as a
            // snapshot body is skipped like a damaged file.
            let body = f.result.and_then(|c| {
                streamwal::codec::decode::<SnapshotBody>(&c.graph, "checkpoint graph")
                    .map(|b| (b, c.journal_lsn))
                    .map_err(|e| {
                        let body_at = streamwal::checkpoint::CHECKPOINT_HEADER_BYTES as u64;
                        (body_at, describe(&e))
                    })
            });
            Snapshot {
                path: f.path,
                batch_time: f.batch_time,
                size: f.size,
                body,
                status: Status::Older,
            }
        })
        .collect())
}

/// Rebuild the state in `dir` as of the newest committed batch at or
/// before `at` (the last one, without `at`), as recovery would.
fn rebuild(dir: &Path, at: Option<u64>) -> Result<Rebuilt, Failure> {
    let at_most = at.unwrap_or(u64::MAX);
    // The log first: its lock keeps an engine from starting, and so from
    // writing snapshots or retiring deltas, while the snapshots are read.
    let log_dir = dir.join(STATE_LOG_NAME);
    let wal = open_read_only(&log_dir)?;
    let scan = scan_log(&log_dir)?;
    let mut snapshots = read_snapshots(&dir.join(STATE_SNAPSHOTS_NAME))?;
    let mut used = None;
    for (i, s) in snapshots.iter_mut().enumerate() {
        s.status = match (&s.body, s.batch_time > at_most, used.is_some()) {
            (Ok(_), true, _) => Status::After,
            (Err(_), true, _) | (Err(_), _, true) => Status::Damaged,
            (Err(_), false, false) => Status::Skipped,
            (Ok(_), false, true) => Status::Older,
            (Ok(_), false, false) => {
                used = Some(i);
                Status::Used
            }
        };
    }
    let mut damage: Vec<(PathBuf, u64, String)> = snapshots
        .iter()
        .filter_map(|s| {
            s.body
                .as_ref()
                .err()
                .map(|(o, why)| (s.path.clone(), *o, why.clone()))
        })
        .collect();
    let mut operators: BTreeMap<String, BTreeMap<Vec<u8>, RawSlot>> = BTreeMap::new();
    let (mut state_id, mut version, mut covered) = (None, None, 0);
    if let Some((s, Ok((body, header_lsn)))) = used.map(|i| (&snapshots[i], &snapshots[i].body)) {
        // The checks StateStore::open makes after `latest`: failing them
        // stops recovery rather than falling back.
        if body.format == 0 || body.format > STATE_FORMAT_VERSION {
            return Err(Failure::Damaged(format!(
                "{}: state format version {} is not supported (newest supported: \
                 {STATE_FORMAT_VERSION}); recovery stops here",
                s.path.display(),
                body.format
            )));
        }
        if body.batch_time != s.batch_time || body.log_lsn != *header_lsn {
            return Err(Failure::Damaged(format!(
                "{}: the snapshot's body (batch {}, log LSN {}) and header (batch {}, log LSN \
                 {header_lsn}) disagree; recovery stops here",
                s.path.display(),
                body.batch_time,
                body.log_lsn,
                s.batch_time
            )));
        }
        for (name, entries) in &body.operators {
            let op = operators.entry(name.clone()).or_default();
            op.extend(entries.iter().map(|e| (e.key.clone(), e.slot.clone())));
        }
        (state_id, version, covered) = (Some(body.state_id), Some(body.batch_time), body.log_lsn);
    }

    let report = wal.recovery_report();
    for p in &report.problems {
        if !in_torn_tail(&scan, &p.file, p.offset) {
            damage.push((p.file.clone(), p.offset, p.kind.to_string()));
        }
    }
    let log = (
        report.segments,
        report.records,
        report.first_lsn,
        report.last_lsn,
    );
    // A delta recovery needs but cannot read is named by the log's damage.
    let log_damage = damage
        .iter()
        .find(|(f, _, _)| f.starts_with(&log_dir))
        .map_or_else(String::new, |(f, off, why)| {
            format!(
                "; the log is damaged at {} offset {off}: {why}",
                f.display()
            )
        });
    let from = match at {
        Some(t) => format!("the state as of batch {t}"),
        None => "the state".to_string(),
    };
    // As check_log_covers in the store: every delta after the snapshot's
    // LSN must still be there.
    let last = wal.next_lsn().saturating_sub(1);
    if last < covered {
        return Err(Failure::Damaged(format!(
            "{}: {from} cannot be rebuilt: the log ends at LSN {last} but the snapshot covers up \
             to LSN {covered} (its newest segments are gone){log_damage}",
            log_dir.display()
        )));
    }
    let first = wal.first_lsn().unwrap_or(0);
    if last > covered && (first == 0 || first > covered + 1) {
        let base = match used {
            Some(_) => format!("the snapshot used covers up to LSN {covered}"),
            None if at.is_some() => "no valid snapshot is at or before that batch".to_string(),
            None => "there is no valid snapshot".to_string(),
        };
        return Err(Failure::Damaged(format!(
            "{}: {from} cannot be rebuilt: {base}, and the log starts at LSN {first} (the \
             deltas before it were retired or lost){log_damage}",
            log_dir.display()
        )));
    }

    let mut deltas = Vec::new();
    let (mut seen, mut complete) = (covered, false);
    for (expected, item) in (covered + 1..).zip(wal.iter_from(covered + 1)) {
        let (h, payload) = item.map_err(|e| Failure::Damaged(describe(&e)))?;
        let segment = log_dir.join(streamwal::wal::segment_file_name(h.segment()));
        // A crash's torn write never committed its batch: recovery drops it.
        if in_torn_tail(&scan, &segment, h.offset()) {
            complete = true;
            break;
        }
        let here = format!(
            "{} offset {} (LSN {})",
            segment.display(),
            h.offset(),
            h.lsn()
        );
        if h.lsn() != expected {
            return Err(Failure::Damaged(format!(
                "{}: {from} cannot be rebuilt: the delta at LSN {expected} is damaged or \
                 missing (the next readable one is at {here}){log_damage}",
                log_dir.display()
            )));
        }
        let delta = decode_delta(&segment, &payload)
            .map_err(|e| Failure::Damaged(format!("state delta at {here}: {}", describe(&e))))?;
        if *state_id.get_or_insert(delta.state_id) != delta.state_id {
            return Err(Failure::Damaged(format!(
                "state delta at {here} (batch {}) belongs to another context: its state id \
                 differs",
                delta.batch_time
            )));
        }
        if version.is_some_and(|v| delta.batch_time <= v) {
            return Err(Failure::Damaged(format!(
                "state delta at {here} (batch {}) is out of batch order (after batch {})",
                delta.batch_time,
                version.unwrap_or(0)
            )));
        }
        seen = h.lsn();
        if delta.batch_time > at_most {
            complete = true; // the state as of `at` is complete
            break;
        }
        for (name, changes) in delta.operators {
            let op = operators.entry(name).or_default();
            for change in changes {
                match change.slot {
                    Some(slot) => op.insert(change.key, slot),
                    None => op.remove(&change.key),
                };
            }
        }
        version = Some(delta.batch_time);
        deltas.push((h.lsn(), delta.batch_time));
    }
    if !complete && seen < last {
        return Err(Failure::Damaged(format!(
            "{}: {from} cannot be rebuilt: the deltas after LSN {seen} up to LSN {last} are \
             damaged or missing{log_damage}",
            log_dir.display()
        )));
    }
    Ok(Rebuilt {
        dir: dir.to_path_buf(),
        snapshots,
        operators,
        version,
        deltas,
        log,
        damage,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Key count and encoded bytes (keys plus values) of an operator.
fn size_of(entries: &BTreeMap<Vec<u8>, RawSlot>) -> (usize, u64) {
    let bytes = entries
        .iter()
        .map(|(k, s)| (k.len() + s.value.len()) as u64)
        .sum();
    (entries.len(), bytes)
}

fn print_summary(r: &Rebuilt, at: Option<u64>) {
    println!("state {}", r.dir.display());
    let snap_dir = r.dir.join(STATE_SNAPSHOTS_NAME);
    println!("snapshots {}", snap_dir.display());
    for s in &r.snapshots {
        let name = file_name(&s.path);
        match &s.body {
            Ok((body, _)) => println!(
                "  snapshot {name}  batch {}  log lsn {}  {} bytes  {}",
                s.batch_time,
                body.log_lsn,
                s.size,
                s.status.name()
            ),
            Err((off, why)) => println!(
                "  snapshot {name}  batch {}  {} bytes  {} (INVALID at offset {off}: {why})",
                s.batch_time,
                s.size,
                s.status.name().to_uppercase()
            ),
        }
    }
    if r.snapshots.is_empty() {
        println!("  no snapshots");
    }
    match r.snapshots.iter().find(|s| s.status == Status::Used) {
        Some(s) => println!(
            "snapshot used: {} (batch {})",
            file_name(&s.path),
            s.batch_time
        ),
        None => println!("snapshot used: none (the state is rebuilt from the log alone)"),
    }
    let skipped: Vec<String> = r
        .snapshots
        .iter()
        .filter(|s| s.status == Status::Skipped)
        .map(|s| file_name(&s.path))
        .collect();
    if !skipped.is_empty() {
        println!("snapshots skipped (damaged): {}", skipped.join(", "));
    }
    let (segments, records, first, last) = r.log;
    let lsns = match (first, last) {
        (Some(f), Some(l)) => format!("lsn {f}..{l}"),
        _ => "no records".to_string(),
    };
    println!(
        "log {}: {segments} segments, {records} records, {lsns}",
        r.dir.join(STATE_LOG_NAME).display()
    );
    let batches: Vec<String> = r.deltas.iter().map(|(_, t)| t.to_string()).collect();
    match batches.len() {
        0 => println!("deltas replayed: none"),
        n if n <= 12 => println!("deltas replayed: {n} (batches {})", batches.join(", ")),
        n => println!(
            "deltas replayed: {n} (batches {}, ..., {})",
            batches[..5].join(", "),
            batches[n - 1]
        ),
    }
    let version = match r.version {
        Some(v) => format!("{v} ({})", crate::format_ms(v)),
        None => "none (no batch changed the state)".to_string(),
    };
    match at {
        Some(t) => println!(
            "version: {version}, the newest committed batch at or before {t} that changed the state"
        ),
        None => println!("version: {version}, the last committed batch that changed the state"),
    }
    println!("operators: {}", r.operators.len());
    for (name, entries) in &r.operators {
        let (keys, bytes) = size_of(entries);
        println!("  operator {name}  {keys} keys  {bytes} bytes");
    }
    for (file, off, why) in &r.damage {
        println!("DAMAGE {} offset {off}: {why}", file.display());
    }
}

fn summary_json(r: &Rebuilt, at: Option<u64>) -> serde_json::Value {
    let snapshots: Vec<_> = r
        .snapshots
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "file": s.path.to_string_lossy(),
                "batch_time": s.batch_time,
                "bytes": s.size,
                "status": s.status.name(),
            });
            match &s.body {
                Ok((body, _)) => v["log_lsn"] = body.log_lsn.into(),
                Err((off, why)) => {
                    v["offset"] = (*off).into();
                    v["reason"] = why.clone().into();
                }
            }
            v
        })
        .collect();
    let file_of = |status| {
        r.snapshots
            .iter()
            .filter(move |s| s.status == status)
            .map(|s| s.path.to_string_lossy().into_owned())
    };
    let operators: Vec<_> = r
        .operators
        .iter()
        .map(|(name, entries)| {
            let (keys, bytes) = size_of(entries);
            serde_json::json!({ "name": name, "keys": keys, "bytes": bytes })
        })
        .collect();
    let (segments, records, first, last) = r.log;
    serde_json::json!({
        "state": r.dir.to_string_lossy(),
        "at": at,
        "version": r.version,
        "snapshots": snapshots,
        "snapshot_used": file_of(Status::Used).next(),
        "snapshots_skipped": file_of(Status::Skipped).collect::<Vec<_>>(),
        "log": { "segments": segments, "records": records, "first_lsn": first, "last_lsn": last },
        "deltas_replayed": r.deltas.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        "operators": operators,
        "damage": r.damage.iter().map(|(f, o, why)| serde_json::json!({
            "file": f.to_string_lossy(), "offset": o, "reason": why,
        })).collect::<Vec<_>>(),
    })
}

/// Stored bytes as JSON, decoded as `show` says.
fn decode_as(bytes: &[u8], show: As) -> Result<serde_json::Value, String> {
    use streamwal::codec::decode;
    let what = "state key or value";
    let value = match show {
        As::Hex => return Ok(hex(bytes).into()),
        As::U64 => decode::<u64>(bytes, what).map(Into::into),
        As::I64 => decode::<i64>(bytes, what).map(Into::into),
        As::F64 => decode::<f64>(bytes, what).map(Into::into),
        As::Bool => decode::<bool>(bytes, what).map(Into::into),
        As::String => decode::<String>(bytes, what).map(Into::into),
        As::Bytes => decode::<Vec<u8>>(bytes, what).map(|b| hex(&b).into()),
    };
    value.map_err(|e| describe(&e))
}

/// Print the keys and values as one JSON object, an entry per line, so that
/// a large state streams out and still parses whole.
fn dump(r: &Rebuilt, at: Option<u64>, only: Option<&str>, show: (As, As)) -> Result<(), String> {
    if let Some(name) = only
        && !r.operators.contains_key(name)
    {
        let known: Vec<&str> = r.operators.keys().map(String::as_str).collect();
        return Err(format!(
            "{}: no operator {name:?} in the state (operators: {})",
            r.dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    let ops: Vec<_> = r
        .operators
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == *n))
        .collect();
    // Decode everything before printing anything: a wrong --key-as or
    // --value-as must not leave half a JSON document on stdout.
    for (name, entries) in &ops {
        for (key, slot) in entries.iter() {
            let bad = |part: &str, show: As, why: String| {
                format!(
                    "operator {name:?}: the {part} {} does not decode as {}: {why} (try \
                     --key-as/--value-as another type, or hex)",
                    hex(key),
                    show.name()
                )
            };
            decode_as(key, show.0).map_err(|why| bad("key", show.0, why))?;
            decode_as(&slot.value, show.1).map_err(|why| bad("value of key", show.1, why))?;
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let head = fields(&[
        ("state", r.dir.to_string_lossy().into()),
        ("at", at.into()),
        ("version", r.version.into()),
    ]);
    let mut text = format!("{head},\"operators\":[");
    let mut first_op = true;
    for (name, entries) in ops {
        let (keys, bytes) = size_of(entries);
        text.push_str(if first_op { "\n" } else { ",\n" });
        first_op = false;
        let op = fields(&[
            ("name", name.as_str().into()),
            ("keys", keys.into()),
            ("bytes", bytes.into()),
        ]);
        text.push_str(&format!("{op},\"entries\":["));
        for (i, (key, slot)) in entries.iter().enumerate() {
            let entry = fields(&[
                ("key", decode_as(key, show.0)?),
                ("value", decode_as(&slot.value, show.1)?),
                ("expires_at", slot.expires_at.into()),
            ]);
            text.push_str(if i == 0 { "\n" } else { ",\n" });
            text.push_str(&entry);
            text.push('}');
            if text.len() >= 64 << 10 {
                write_out(&mut out, &text)?;
                text.clear();
            }
        }
        text.push_str("]}");
    }
    text.push_str("]}\n");
    write_out(&mut out, &text)?;
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// A JSON object's opening brace and `pairs`, in this order (serde_json's
/// own maps sort their keys), left open for more.
fn fields(pairs: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
        .collect();
    format!("{{{}", body.join(","))
}

fn write_out(out: &mut impl Write, text: &str) -> Result<(), String> {
    match out.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) ends the dump quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("writing to stdout: {e}")),
        Ok(()) => Ok(()),
    }
}
