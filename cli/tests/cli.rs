//! The `streamwal` binary's inspect, verify and dump commands, run as a real process: they report healthy and damaged logs and checkpoint directories truthfully, print records exactly, and fail with one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use streamwal::recovery::ContextOptions;
use streamwal::tracker::BlockInfo;
use streamwal::{RecordHandle, Wal, WalOptions};

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

/// A log with small segments: 30 records "record N" over several segments,
/// plus one binary record. Returns the handles.
/// Small segments, not preallocated: fast to write.
fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4 << 10,
        max_record_bytes: 1 << 10,
        preallocate: false,
        ..WalOptions::default()
    }
}

fn build_log(dir: &Path) -> Vec<RecordHandle> {
    let wal = Wal::open(dir, small()).expect("open");
    let mut handles = Vec::new();
    for i in 1..=30 {
        let payload = format!("record {i} {}", "x".repeat(200));
        handles.push(wal.append(payload.as_bytes()).expect("append"));
    }
    handles.push(wal.append(&[0, 1, 2, 0xff]).expect("append binary"));
    wal.close().expect("close");
    handles
}

fn payload_of(i: u64) -> String {
    format!("record {i} {}", "x".repeat(200))
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "must fail: {o:?}");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn verify_passes_a_healthy_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let handles = build_log(&dir);
    assert!(
        handles.last().expect("records").segment() > 1,
        "several segments"
    );
    let o = run(&["verify", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("OK"), "{}", stdout(&o));
    assert!(stdout(&o).contains("31 record(s)"), "{}", stdout(&o));

    let o = run(&["verify", "--json", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["kind"], "log");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));

    // A file:// URL names the same directory.
    let o = run(&["verify", &format!("file://{}", s(&dir))]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("31 record(s)"), "{}", stdout(&o));
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let handles = build_log(&dir);
    // A record in the first, sealed segment; flip one payload byte by hand.
    let h = handles[2];
    assert_eq!(h.segment(), 1);
    let file = dir.join(streamwal::wal::segment_file_name(1));
    let mut bytes = std::fs::read(&file).expect("read segment");
    let at = (h.offset() + 40 + 3) as usize;
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write segment");

    let o = run(&["verify", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    let want = format!("ERROR {} offset {}", file.display(), h.offset());
    assert!(out.contains(&want), "{out} should contain {want}");
    assert!(out.contains("checksum mismatch"), "{out}");

    let o = run(&["verify", "--json", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["healthy"], false);
    let p = &v["problems"][0];
    assert_eq!(p["file"], s(&file));
    assert_eq!(p["offset"], h.offset());

    // dump prints the records that are intact and then fails in one line.
    let o = run(&["dump", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(
        stdout(&o).lines().count(),
        30,
        "the damaged record is skipped"
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
}

#[test]
fn a_torn_tail_is_a_warning_unless_strict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let handles = build_log(&dir);
    let last = handles.last().expect("records");
    let file = dir.join(streamwal::wal::segment_file_name(last.segment()));
    // Half of a frame header after the last record: an unsynced write cut
    // by a crash.
    let end = last.offset() + 40 + u64::from(last.len());
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.truncate(end as usize);
    bytes.extend_from_slice(&[0x5a; 20]);
    std::fs::write(&file, &bytes).expect("write");

    let o = run(&["verify", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains(&format!("WARNING {} offset {end}", file.display())),
        "{out}"
    );
    assert!(out.contains("torn tail"), "{out}");
    let o = run(&["verify", "--strict", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = run(&["inspect", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("torn tail: 20 bytes"), "{}", stdout(&o));
    // Nothing was modified.
    assert_eq!(std::fs::read(&file).expect("read"), bytes);
    // The library agrees: a read-write open repairs exactly that tail.
    let wal = Wal::open(&dir, small()).expect("strict open");
    assert_eq!(wal.recovery_report().torn_at, Some((file.clone(), end)));
    drop(wal);
    let o = run(&["verify", "--strict", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn dump_prints_every_record_with_its_handle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let handles = build_log(&dir);

    let o = run(&["dump", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 31);
    for (i, h) in handles.iter().take(30).enumerate() {
        let want = format!(
            "lsn={} segment={} offset={} len={} text={}",
            h.lsn(),
            h.segment(),
            h.offset(),
            h.len(),
            payload_of(i as u64 + 1)
        );
        assert_eq!(lines[i], want);
    }
    assert!(lines[30].ends_with("hex=000102ff"), "{}", lines[30]);

    let o = run(&["dump", s(&dir), "--from", "5", "--limit", "3"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let lsns: Vec<&str> = out
        .lines()
        .map(|l| &l[..l.find(' ').unwrap_or(0)])
        .collect();
    assert_eq!(lsns, ["lsn=5", "lsn=6", "lsn=7"]);

    let o = run(&["dump", s(&dir), "--format", "hex", "--limit", "1"]);
    assert!(
        stdout(&o)
            .trim_end()
            .ends_with(&format!("hex={}", hex(payload_of(1).as_bytes())))
    );

    let o = run(&["dump", s(&dir), "--format", "json"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let values: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(values.len(), 31);
    for (v, h) in values.iter().zip(&handles) {
        assert_eq!(v["lsn"], h.lsn());
        assert_eq!(v["segment"], h.segment());
        assert_eq!(v["offset"], h.offset());
        assert_eq!(v["len"], h.len());
    }
    assert_eq!(values[0]["text"], payload_of(1));
    assert_eq!(values[30]["hex"], "000102ff");
}

#[test]
fn dump_json_escapes_awkward_text() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let nasty = "quote\" back\\slash\nnew\ttab \u{1} é \u{2028} end";
    let wal = Wal::open(&dir, small()).expect("open");
    wal.append(nasty.as_bytes()).expect("append");
    wal.close().expect("close");
    let o = run(&["dump", "--format", "json", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["text"], nasty);
    // Text mode does not print control characters raw.
    let o = run(&["dump", s(&dir)]);
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains(&format!("hex={}", hex(nasty.as_bytes()))));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn inspect_lists_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let handles = build_log(&dir);
    let segments = handles.last().expect("records").segment();
    let o = run(&["inspect", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let seg_lines: Vec<&str> = out.lines().filter(|l| l.contains("segment ")).collect();
    assert_eq!(seg_lines.len() as u64, segments, "{out}");
    assert_eq!(out.matches("sealed").count() as u64, segments - 1, "{out}");
    assert_eq!(out.matches("active").count(), 1, "{out}");
    let first_seg: Vec<&RecordHandle> = handles.iter().filter(|h| h.segment() == 1).collect();
    let want = format!(
        "lsn 1..{}  {} records  sealed",
        first_seg.len(),
        first_seg.len()
    );
    assert!(seg_lines[0].contains(&want), "{} vs {want}", seg_lines[0]);
    assert!(out.contains("torn tail: none"), "{out}");
    assert!(
        out.contains(&format!(
            "total: {segments} segments, 31 records, lsn 1..31"
        )),
        "{out}"
    );
}

#[test]
fn inspect_and_verify_a_checkpoint_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("ckpt");
    let recv = tmp.path().join("recv");
    {
        let mut opts = ContextOptions::new(1000);
        opts.receiver_log = small();
        opts.journal = small();
        let ctx = streamwal::StreamingContext::builder(&ckpt)
            .receiver_log(&recv)
            .options(opts)
            .now_ms(0)
            .get_or_create(|| vec!["words".to_string()])
            .expect("context");
        let add = |ctx: &streamwal::recovery::StreamingContext<Vec<String>>, n: u64| {
            let handle = ctx.receiver_log.append(b"a b c").expect("append");
            ctx.tracker
                .add_block(BlockInfo {
                    stream_id: 0,
                    handle,
                    records: 3,
                    receive_time: n,
                })
                .expect("add block");
        };
        add(&ctx, 1);
        add(&ctx, 2);
        ctx.tracker
            .allocate_blocks_to_batch(1000)
            .expect("allocate");
        ctx.tracker.commit_batch(1000).expect("commit");
        ctx.checkpoint(streamwal::CheckpointAt {
            batch_time: 1000,
            pending_batches: vec![],
            source_offsets: Default::default(),
        })
        .expect("checkpoint");
        // After the checkpoint: one more batch allocated, not committed, and
        // a block left unallocated.
        add(&ctx, 3);
        ctx.tracker
            .allocate_blocks_to_batch(2000)
            .expect("allocate");
        add(&ctx, 4);
    }
    let o = run(&["inspect", s(&ckpt)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("checkpoint-00000000000000001000.ckpt"),
        "{out}"
    );
    assert!(out.contains("valid"), "{out}");
    assert!(
        out.contains("blocks: 4 (1 unallocated, 3 in batches)"),
        "{out}"
    );
    assert!(
        out.contains("batches: 2 allocated, 1 committed, 1 pending"),
        "{out}"
    );
    assert!(out.contains("3 events replayed"), "{out}");

    let o = run(&["verify", s(&ckpt)]);
    assert!(o.status.success(), "{o:?}");

    // Damage the checkpoint's body: verify names the file and offset 64
    // (the body starts after the 64-byte header of format version 2).
    let file = ckpt.join("checkpoint-00000000000000001000.ckpt");
    let mut bytes = std::fs::read(&file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&file, &bytes).expect("write");
    let o = run(&["verify", s(&ckpt)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stdout(&o).contains(&format!("ERROR {} offset 64", file.display())),
        "{}",
        stdout(&o)
    );
    let o = run(&["inspect", s(&ckpt)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stdout(&o).contains("INVALID at offset 64"),
        "{}",
        stdout(&o)
    );

    // The receiver log is a log.
    let o = run(&["verify", s(&recv)]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn a_missing_directory_is_a_one_line_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing: PathBuf = tmp.path().join("nope");
    for cmd in ["inspect", "verify", "dump"] {
        let o = run(&[cmd, s(&missing)]);
        assert_one_line_error(&o, "nope");
    }
    assert!(!missing.exists(), "nothing is created");
    // A directory that is neither a log nor checkpoints.
    let o = run(&["verify", s(tmp.path())]);
    assert_one_line_error(&o, "neither");
}

#[test]
fn a_locked_directory_is_a_one_line_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build_log(&dir);
    let live = Wal::open(&dir, small()).expect("open");
    for cmd in ["inspect", "verify", "dump"] {
        let o = run(&[cmd, s(&dir)]);
        assert_one_line_error(&o, "locked");
    }
    drop(live);
    assert!(run(&["verify", s(&dir)]).status.success());
}

#[test]
fn bad_arguments_are_a_one_line_error() {
    let o = run(&["dump", "/tmp", "--format", "xml"]);
    assert_one_line_error(&o, "xml");
    let o = run(&["verify", "--bogus", "/tmp"]);
    assert_one_line_error(&o, "--bogus");
    let o = run(&["frobnicate"]);
    assert_one_line_error(&o, "frobnicate");
    let o = run(&["--help"]);
    assert!(o.status.success());
    for cmd in ["inspect", "verify", "dump", "demo"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
    assert!(!stdout(&o).contains("demo-worker"));
}

#[test]
fn a_missing_segment_and_stray_files_are_reported_without_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build_log(&dir);
    let wal = Wal::open(&dir, small()).expect("reopen");
    let mut last = None;
    for i in 0..40 {
        last = Some(wal.append(payload_of(100 + i).as_bytes()).expect("append"));
    }
    let last = last.expect("records");
    wal.close().expect("close");
    assert!(last.segment() >= 3);
    std::fs::write(dir.join(".DS_Store"), b"junk").expect("stray");
    std::fs::write(dir.join("00000000000000000001.wal~"), b"backup").expect("stray");
    let o = run(&["verify", s(&dir)]);
    assert!(o.status.success(), "stray files are not damage: {o:?}");
    let o = run(&["inspect", s(&dir)]);
    assert!(stdout(&o).contains(".DS_Store"), "{}", stdout(&o));

    std::fs::remove_file(dir.join(streamwal::wal::segment_file_name(2))).expect("rm");
    let o = run(&["verify", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let seg3 = dir.join(streamwal::wal::segment_file_name(3));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("ERROR {} offset 0", seg3.display())),
        "{out}"
    );
    assert!(out.contains("segment 2 is missing"), "{out}");

    // A segment that is garbage from its first byte.
    std::fs::write(dir.join(streamwal::wal::segment_file_name(1)), [0xa5; 100]).expect("junk");
    for cmd in ["verify", "inspect", "dump"] {
        let o = run(&[cmd, s(&dir)]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {o:?}");
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

// ------------------------------------------- found by outside testing

/// Run the binary, failing the test if it has not exited within a minute:
/// these runs used to block forever on a FIFO. A passing run exits at once;
/// the bound only turns a hang into a failure.
fn run_bounded(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_streamwal"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the streamwal binary");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for streamwal"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("streamwal {args:?} blocked");
        }
    }
}

#[test]
fn a_fifo_named_like_a_segment_or_checkpoint_is_reported_and_never_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build_log(&dir);
    let fifo = dir.join(streamwal::wal::segment_file_name(900));
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let o = run_bounded(&["verify", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains(&format!("ERROR {}", fifo.display())), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    let o = run_bounded(&["inspect", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let o = run_bounded(&["dump", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().count(), 31);

    let ckpt_dir = tmp.path().join("ckpt");
    let store =
        streamwal::checkpoint::CheckpointStore::open(&ckpt_dir, Default::default()).expect("store");
    store
        .write(&streamwal::checkpoint::Checkpoint {
            batch_time: 1_000,
            batch_interval_ms: 1_000,
            graph: vec![0u8],
            graph_version: 1,
            pending_batches: Vec::new(),
            journal_lsn: 0,
            tracker: Default::default(),
            source_offsets: Default::default(),
        })
        .expect("write");
    drop(store);
    let name = streamwal::checkpoint::checkpoint_file_name(5_000);
    let st = Command::new("mkfifo")
        .arg(ckpt_dir.join(&name))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let o = run_bounded(&["verify", s(&ckpt_dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains(&name), "{}", stdout(&o));
    let o = run_bounded(&["inspect", s(&ckpt_dir)]);
    assert!(o.status.code().is_some(), "{o:?}");
}

#[test]
fn a_segment_copied_under_a_number_beyond_u64_fails_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    build_log(&dir);
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    let name = "99999999999999999999.wal";
    std::fs::copy(
        dir.join(streamwal::wal::segment_file_name(1)),
        copy.join(name),
    )
    .expect("copy");
    let o = run(&["verify", s(&copy)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains(name) && out.contains("exceeds"), "{out}");
    assert!(!out.contains("OK "), "{out}");
}

/// A log written record by record with a sync after each, as
/// `SyncPolicy::Always` does: each frame's durable stamp is its predecessor.
fn write_frames(file: &Path, records: &[(u64, u64)]) -> Vec<u64> {
    use streamwal::wal::format::{FrameHeader, SegmentHeader, encode_frame};
    let h = SegmentHeader {
        log_id: 9,
        segment_seq: 1,
        first_lsn: 1,
        unsynced_window_bytes: 1 << 20,
        max_record_bytes: 1 << 16,
    };
    let mut bytes = h.encode().to_vec();
    let mut offsets = Vec::new();
    for &(lsn, durable_lsn) in records {
        offsets.push(bytes.len() as u64);
        let payload = format!("record {lsn} {}", "y".repeat(100));
        let fh = FrameHeader {
            payload_len: payload.len() as u32,
            lsn,
            time: lsn,
            durable_lsn,
            crc: 0,
        };
        encode_frame(&h.identity(), &fh, payload.as_bytes(), &mut bytes);
    }
    std::fs::write(file, &bytes).expect("write segment");
    offsets
}

#[test]
fn a_truncated_tail_is_not_called_the_last_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join(streamwal::wal::segment_file_name(1));
    let recs: Vec<(u64, u64)> = (1..=40).map(|l| (l, l - 1)).collect();
    let offsets = write_frames(&file, &recs);
    // Cut 20 separately synced records off, in the middle of a frame.
    let cut = offsets[20] + 25;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.set_len(cut).expect("truncate");
    drop(f);
    let o = run(&["verify", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("torn tail"), "{out}");
    assert!(!out.contains("confined to the last write"), "{out}");
    assert!(out.contains("cannot tell apart"), "{out}");
    let o = run(&["verify", "--strict", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

#[test]
fn a_tail_holding_frames_of_two_writes_says_more_than_the_last_write_was_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join(streamwal::wal::segment_file_name(1));
    // Records 4 and 5 come from two writes (stamps 2 and 3), neither yet
    // proven durable; record 4's payload is damaged.
    let offsets = write_frames(&file, &[(1, 0), (2, 1), (3, 2), (4, 2), (5, 3)]);
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[offsets[3] as usize + 45] ^= 0xff;
    std::fs::write(&file, &bytes).expect("write");
    let o = run(&["verify", s(&dir)]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("LSN 4..5"), "{out}");
    assert!(out.contains("at least 2 separate writes"), "{out}");
    assert!(out.contains("more than the last write was lost"), "{out}");
    let o = run(&["verify", "--strict", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

/// `verify`, `inspect` and `dump` of a log of more segments than the
/// descriptor limit allows open at once (each used to be opened and kept).
#[test]
fn a_log_of_more_segments_than_descriptors_is_verified_inspected_and_dumped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    // Written by hand (no syncs, so fast): one record per segment, as a
    // writer with tiny segments leaves them.
    use streamwal::wal::format::{FrameHeader, SegmentHeader, encode_frame};
    std::fs::create_dir(&dir).expect("mkdir");
    for seq in 1..=1_500u64 {
        let h = SegmentHeader {
            log_id: 5,
            segment_seq: seq,
            first_lsn: seq,
            unsynced_window_bytes: 1 << 20,
            max_record_bytes: 1 << 16,
        };
        let mut bytes = h.encode().to_vec();
        let fh = FrameHeader {
            payload_len: 8,
            lsn: seq,
            time: seq,
            durable_lsn: seq - 1,
            crc: 0,
        };
        encode_frame(&h.identity(), &fh, &seq.to_le_bytes(), &mut bytes);
        std::fs::write(dir.join(streamwal::wal::segment_file_name(seq)), bytes).expect("write");
    }
    let d = s(&dir);
    for args in [
        vec!["verify", d],
        vec!["inspect", d],
        vec!["dump", d, "--limit", "3"],
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_streamwal"))
            .args(&args)
            .output()
            .expect("run under ulimit");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}
