//! `streamwal state`, run as a real process on contexts the library built:
//! it lists the operators, the version and the sizes it finds; `--at` and
//! `--dump` give the keys and values as of an older batch exactly as they
//! were written; a damaged snapshot is reported as skipped and the state
//! still comes back from the one before it; what cannot be rebuilt, and a
//! directory that holds no state, are one-line errors with the exit code
//! the tool documents; nothing on disk changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use streamwal::StreamingContext;
use streamwal::recovery::{ContextOptions, STATE_DIR_NAME};
use streamwal::state::{STATE_LOG_NAME, STATE_SNAPSHOTS_NAME};

type Ctx = StreamingContext<()>;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamwal"))
        .args(args)
        .output()
        .expect("run the streamwal binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn assert_one_line_error(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "{o:?}");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    streamwal::codec::encode(v, "test").expect("encode")
}

/// A word count in operator "counts" (String -> u64) and the last word per
/// id in operator "last" (u64 -> String, one key with an idle timeout):
/// batches 1000 and 2000, a snapshot, batch 3000, and batch 4000 begun and
/// never committed. Returns the context, still open.
fn word_count(dir: &Path) -> Ctx {
    let ctx = StreamingContext::get_or_create(dir, 1000, || ()).expect("context");
    let counts = ctx.state::<String, u64>("counts").expect("counts");
    let last = ctx.state::<u64, String>("last").expect("last");
    let put = |k: &str, v: u64| counts.put(k.to_string(), v).expect("put");
    ctx.begin_batch(1000).expect("begin");
    put("to", 1);
    put("be", 1);
    ctx.commit_batch(1000).expect("commit");
    ctx.begin_batch(2000).expect("begin");
    put("to", 2);
    put("or", 1);
    last.put(7, "seven".into()).expect("put");
    ctx.commit_batch(2000).expect("commit");
    ctx.state.snapshot_now().expect("snapshot");
    ctx.begin_batch(3000).expect("begin");
    put("be", 2);
    counts.delete(&"or".to_string()).expect("delete");
    last.put_with_timeout(8, "eight".into(), 5000).expect("put");
    ctx.commit_batch(3000).expect("commit");
    // Never committed: none of it may show.
    ctx.begin_batch(4000).expect("begin");
    put("to", 99);
    ctx
}

/// Every file below `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let d = dir.join(STATE_DIR_NAME).join(STATE_SNAPSHOTS_NAME);
    let mut v: Vec<_> = std::fs::read_dir(d)
        .expect("snapshots")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// One operator's entries from a dump, as (key, value) JSON pairs.
fn entries(dump: &serde_json::Value, op: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let ops = dump["operators"].as_array().expect("operators");
    let op = ops
        .iter()
        .find(|o| o["name"] == op)
        .unwrap_or_else(|| panic!("no operator {op} in {dump}"));
    op["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["key"].clone(), e["value"].clone()))
        .collect()
}

fn words(pairs: &[(&str, u64)]) -> Vec<(serde_json::Value, serde_json::Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[test]
fn state_lists_operators_version_sizes_snapshot_and_deltas() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    drop(word_count(&dir));
    let before = tree(&dir);

    let o = run(&["state", s(&dir)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    // Keys and values as bincode: "be" is 3 bytes, 2 is 1; "to" and 2 the same.
    for want in [
        "version: 3000 (1970-01-01T00:00:03.000Z), the last committed batch that changed the state",
        "operators: 2",
        "operator counts  2 keys  8 bytes",
        "operator last  2 keys  14 bytes",
        "snapshot used: checkpoint-00000000000000002000.ckpt (batch 2000)",
        "deltas replayed: 1 (batches 3000)",
        "batch 2000  log lsn 2",
    ] {
        assert!(out.contains(want), "{out}\nshould contain {want:?}");
    }
    assert!(!out.contains("DAMAGE"), "{out}");

    // The state directory itself names the same state.
    let state_dir = dir.join(STATE_DIR_NAME);
    let o = run(&["state", "--json", s(&state_dir)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json(&o);
    assert_eq!(v["version"], 3000);
    assert_eq!(v["deltas_replayed"], serde_json::json!([3000]));
    assert_eq!(v["snapshots_skipped"], serde_json::json!([]));
    let used = v["snapshot_used"].as_str().expect("a snapshot is used");
    assert!(
        used.ends_with("checkpoint-00000000000000002000.ckpt"),
        "{used}"
    );
    assert_eq!(
        v["operators"],
        serde_json::json!([
            {"name": "counts", "keys": 2, "bytes": 8},
            {"name": "last", "keys": 2, "bytes": 14},
        ])
    );
    assert_eq!(v["log"]["records"], 3);
    assert_eq!(tree(&dir), before, "the tool modified the context");

    // The library, reopened, agrees on the version and the report.
    let ctx = StreamingContext::get_or_create(&dir, 1000, || ()).expect("reopen");
    assert_eq!(ctx.state.version(), Some(3000));
    assert_eq!(ctx.state.report().deltas_replayed, [3000]);
    let mut ops = ctx.state.operators();
    ops.sort();
    assert_eq!(ops, [("counts".to_string(), 2), ("last".to_string(), 2)]);
}

#[test]
fn dump_prints_exactly_what_was_written_decoded_or_as_hex() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    drop(word_count(&dir));

    let o = run(&[
        "state",
        s(&dir),
        "--dump",
        "counts",
        "--key-as",
        "string",
        "--value-as",
        "u64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json(&o);
    assert_eq!(v["version"], 3000);
    assert_eq!(v["operators"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(entries(&v, "counts"), words(&[("be", 2), ("to", 2)]));

    // What the library reads back is what the dump says.
    let ctx = StreamingContext::get_or_create(&dir, 1000, || ()).expect("reopen");
    let counts = ctx.state::<String, u64>("counts").expect("counts");
    let from_lib: Vec<_> = counts
        .iter()
        .expect("iter")
        .into_iter()
        .map(|(k, n)| (k.into(), n.into()))
        .collect();
    assert_eq!(entries(&v, "counts"), from_lib);
    drop((counts, ctx));

    // Every operator, undecoded: hex of the stored bincode bytes, and each
    // key's timeout (batch 3000 + 5000).
    let o = run(&["state", s(&dir), "--dump"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json(&o);
    let last = &v["operators"][1];
    assert_eq!(last["name"], "last");
    let want = |k: u64, v: &str, exp: Option<u64>| serde_json::json!({"key": hex(&enc(&k)), "value": hex(&enc(&v)), "expires_at": exp});
    assert_eq!(
        last["entries"],
        serde_json::json!([want(7, "seven", None), want(8, "eight", Some(8000))])
    );
    assert_eq!(entries(&v, "counts")[0].0, hex(&enc(&"be")));

    // --as for both, overridden per side.
    let o = run(&[
        "state",
        s(&dir),
        "--dump",
        "last",
        "--as",
        "u64",
        "--value-as",
        "string",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let got = entries(&json(&o), "last");
    assert_eq!(
        got,
        [(7.into(), "seven".into()), (8.into(), "eight".into())]
    );
}

#[test]
fn at_an_older_batch_gives_the_older_values() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    drop(word_count(&dir));
    // Every operator, or only "counts" once "last" (u64 keys) exists.
    let dump_at = |at: &str, only: &[&str]| {
        let mut args = vec!["state", s(&dir), "--at", at, "--dump"];
        args.extend_from_slice(only);
        args.extend_from_slice(&["--key-as", "string", "--value-as", "u64"]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "--at {at}: {o:?}");
        json(&o)
    };
    // Before the snapshot: from the log alone, batch 1000's delta only.
    let v = dump_at("1999", &[]);
    assert_eq!(
        (v["at"].clone(), v["version"].clone()),
        (1999.into(), 1000.into())
    );
    assert_eq!(entries(&v, "counts"), words(&[("be", 1), ("to", 1)]));
    assert_eq!(
        v["operators"].as_array().map(Vec::len),
        Some(1),
        "no 'last' yet: {v}"
    );
    // At the snapshot, and between it and the next batch.
    for at in ["2000", "2999"] {
        let v = dump_at(at, &["counts"]);
        assert_eq!(v["version"], 2000);
        assert_eq!(
            entries(&v, "counts"),
            words(&[("be", 1), ("or", 1), ("to", 2)])
        );
    }
    // Before any batch: nothing.
    let v = dump_at("999", &[]);
    assert_eq!(v["version"], serde_json::Value::Null);
    assert_eq!(v["operators"], serde_json::json!([]));
    // Past the last committed batch: the last one (4000 never committed).
    assert_eq!(
        entries(&dump_at("9000", &["counts"]), "counts"),
        words(&[("be", 2), ("to", 2)])
    );

    let o = run(&["state", s(&dir), "--at", "1999"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("version: 1000 ("), "{out}");
    assert!(
        out.contains("the newest committed batch at or before 1999 that changed the state"),
        "{out}"
    );
    assert!(out.contains("snapshot used: none"), "{out}");
    assert!(
        out.contains("checkpoint-00000000000000002000.ckpt  batch 2000  log lsn 2"),
        "{out}"
    );
    assert!(out.contains("after --at"), "{out}");
    assert!(out.contains("deltas replayed: 1 (batches 1000)"), "{out}");
}

#[test]
fn a_damaged_snapshot_is_reported_as_skipped_and_the_older_one_is_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    let ctx = word_count(&dir);
    ctx.abort_batch();
    ctx.state.snapshot_now().expect("second snapshot");
    drop(ctx);
    let snaps = snapshot_files(&dir);
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let newest = &snaps[1];
    assert!(s(newest).ends_with("checkpoint-00000000000000003000.ckpt"));
    let mut bytes = std::fs::read(newest).expect("read");
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::fs::write(newest, &bytes).expect("write");

    let o = run(&["state", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "damage seen: {o:?}");
    let out = stdout(&o);
    for want in [
        "checkpoint-00000000000000003000.ckpt  batch 3000",
        "SKIPPED (INVALID at offset 64: checksum mismatch",
        "snapshots skipped (damaged): checkpoint-00000000000000003000.ckpt",
        "snapshot used: checkpoint-00000000000000002000.ckpt (batch 2000)",
        "deltas replayed: 1 (batches 3000)",
        "version: 3000 (",
        "operator counts  2 keys  8 bytes",
        &format!("DAMAGE {} offset 64: checksum mismatch", newest.display()),
    ] {
        assert!(out.contains(want), "{out}\nshould contain {want:?}");
    }
    let o = run(&["state", s(&dir), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v = json(&o);
    assert_eq!(v["snapshots_skipped"], serde_json::json!([s(newest)]));
    assert_eq!(v["snapshots"][0]["status"], "skipped");
    assert_eq!(v["snapshots"][0]["offset"], 64);
    // The values are still those of batch 3000, as the library recovers.
    let o = run(&[
        "state",
        s(&dir),
        "--dump",
        "counts",
        "--key-as",
        "string",
        "--value-as",
        "u64",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(entries(&json(&o), "counts"), words(&[("be", 2), ("to", 2)]));
    let ctx = StreamingContext::get_or_create(&dir, 1000, || ()).expect("reopen");
    assert_eq!(ctx.state.report().snapshots_skipped.len(), 1);
    assert_eq!(ctx.state.report().deltas_replayed, [3000]);
}

#[test]
fn a_damaged_delta_stops_the_rebuild_naming_the_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    drop(word_count(&dir));
    // Batch 1000's delta, with two durable records after it: rot, not a
    // torn write. Its value 1 for "be" sits right after the key's bytes.
    let log = dir.join(STATE_DIR_NAME).join(STATE_LOG_NAME);
    let seg = log.join(streamwal::wal::segment_file_name(1));
    let mut bytes = std::fs::read(&seg).expect("read");
    let key = enc(&"be");
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("batch 1000's delta holds \"be\"");
    bytes[at + key.len() + 2] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");

    // The snapshot covers it: the state comes back, and the damage is seen.
    let o = run(&["state", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains(&format!("DAMAGE {}", seg.display())), "{out}");
    assert!(out.contains("version: 3000 ("), "{out}");
    // Before the snapshot it is needed: no state, rather than a wrong one.
    let o = run(&["state", s(&dir), "--at", "1500", "--dump"]);
    assert_one_line_error(&o, 1, "the state as of batch 1500 cannot be rebuilt");
    assert!(stderr(&o).contains(s(&seg)), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn retired_deltas_make_an_older_batch_unavailable_and_say_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ctx");
    let mut opts = ContextOptions::new(1000);
    // One delta per 4 KiB segment, so retention deletes whole old ones.
    opts.state.log.segment_bytes = 4 << 10;
    let ctx = StreamingContext::builder(&dir)
        .options(opts)
        .get_or_create(|| ())
        .expect("context");
    let big = ctx.state::<u64, String>("big").expect("big");
    for i in 1..=6u64 {
        ctx.begin_batch(i * 1000).expect("begin");
        big.put(i, "x".repeat(3000)).expect("put");
        ctx.commit_batch(i * 1000).expect("commit");
        ctx.state.snapshot_now().expect("snapshot");
    }
    drop((big, ctx));
    let o = run(&["state", "--json", s(&dir)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json(&o);
    assert!(
        v["log"]["first_lsn"].as_u64() > Some(1),
        "deltas were retired: {v}"
    );
    assert_eq!(v["version"], 6000);
    assert_eq!(v["operators"][0]["keys"], 6);

    let o = run(&["state", s(&dir), "--at", "2500"]);
    assert_one_line_error(&o, 1, "the state as of batch 2500 cannot be rebuilt");
    assert!(
        stderr(&o).contains("no valid snapshot is at or before that batch"),
        "{}",
        stderr(&o)
    );
    // The oldest kept snapshot's batch still works.
    let o = run(&["state", s(&dir), "--at", "5000", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(json(&o)["version"], 5000);
}

#[test]
fn what_holds_no_state_is_a_one_line_error_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    assert_one_line_error(&run(&["state", s(&empty)]), 2, "holds no keyed state");

    // A log directory is not a state.
    let log = tmp.path().join("log");
    let wal = streamwal::Wal::open(&log, streamwal::WalOptions::default()).expect("log");
    wal.append(b"x").expect("append");
    drop(wal);
    assert_one_line_error(&run(&["state", s(&log)]), 2, "holds no keyed state");

    // A context without state/ (as an older version left it).
    let ctx = tmp.path().join("old-ctx");
    std::fs::create_dir_all(ctx.join("journal")).expect("mkdir");
    assert_one_line_error(
        &run(&["state", s(&ctx)]),
        2,
        "is a context directory without keyed state",
    );

    let missing = tmp.path().join("missing");
    assert_one_line_error(
        &run(&["state", s(&missing)]),
        2,
        "No such file or directory",
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert_one_line_error(&run(&["state", s(&file)]), 2, "is not a directory");

    // A context in use: its state log is locked, and is not touched.
    let live = tmp.path().join("live");
    let ctx = word_count(&live);
    assert_one_line_error(&run(&["state", s(&live)]), 2, "is locked");
    drop(ctx);

    // An operator that is not there, and a type that does not fit.
    let o = run(&["state", s(&live), "--dump", "nope"]);
    assert_one_line_error(
        &o,
        2,
        "no operator \"nope\" in the state (operators: counts, last)",
    );
    let o = run(&["state", s(&live), "--dump", "counts", "--as", "bool"]);
    assert_one_line_error(&o, 2, "does not decode as bool");
    assert!(stdout(&o).is_empty(), "no half document: {}", stdout(&o));
    // --as needs --dump.
    assert_eq!(
        run(&["state", s(&live), "--as", "u64"]).status.code(),
        Some(2)
    );
}
