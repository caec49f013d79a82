//! Proves that a torn tail (the last record, or a member of the last unsynced group-commit batch, cut short at any byte: truncated, zeroed or left as garbage) is repaired on open, keeping every earlier record byte for byte, reporting and zeroing the discarded bytes and accepting new appends; and that damage the unsynced window cannot explain (a damaged segment header, a damaged record proven durable, junk beyond the window) is an `Error::Corruption`, never a panic.

use crate::common::rng::Rng;
use std::fs;
use std::path::{Path, PathBuf};
use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::wal::segment_file_name;
use streamwal::{CorruptionKind, Error, RecordHandle, SyncPolicy, Wal, WalOptions};

/// A change made to a segment file's bytes.
type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;

/// A log written once and kept pristine; every trial damages a copy.
struct Log {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    opts: WalOptions,
    payloads: Vec<Vec<u8>>,
    handles: Vec<RecordHandle>,
}

fn opts(preallocate: bool) -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes: 4096,
        preallocate,
        ..WalOptions::default()
    }
}

/// `len` bytes, none of them zero, different for every `seed`.
fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| b'a' + ((seed * 7 + j) % 26) as u8)
        .collect()
}

fn frame_end(h: &RecordHandle) -> u64 {
    h.offset() + FRAME_HEADER_BYTES + u64::from(h.len())
}

fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".wal")
        .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_segment_name)
        })
        .collect();
    v.sort();
    v
}

/// Copy the segment files (not the `LOCK`) of `from` into a new directory `to`.
fn copy_segments(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for src in segment_files(from) {
        fs::copy(&src, to.join(src.file_name().unwrap())).unwrap();
    }
}

/// Write `singles` one append at a time, then `batch` with one `append_batch`,
/// all under `SyncPolicy::Always`, and check the layout the tests rely on: one
/// segment, dense LSNs from 1, frames back to back.
fn build(opts: WalOptions, singles: &[Vec<u8>], batch: &[Vec<u8>]) -> Log {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let mut handles = Vec::new();
    for p in singles {
        handles.push(wal.append(p).unwrap());
    }
    if !batch.is_empty() {
        handles.extend(wal.append_batch(batch).unwrap());
    }
    wal.close().unwrap();
    let payloads: Vec<Vec<u8>> = singles.iter().chain(batch).cloned().collect();
    assert_eq!(handles.len(), payloads.len());
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.lsn(), i as u64 + 1);
        assert_eq!(
            h.segment(),
            handles[0].segment(),
            "test log must fit one segment"
        );
        assert_eq!(h.len() as usize, payloads[i].len());
    }
    assert_eq!(handles[0].offset(), SEGMENT_HEADER_BYTES);
    for w in handles.windows(2) {
        assert_eq!(w[1].offset(), frame_end(&w[0]), "frames are back to back");
    }
    let segs = segment_files(&dir);
    assert_eq!(segs.len(), 1);
    let len = fs::metadata(&segs[0]).unwrap().len();
    let last = handles.last().unwrap();
    if opts.preallocate {
        assert_eq!(
            len, opts.segment_bytes,
            "preallocated segment is zero-filled"
        );
    } else {
        assert_eq!(len, frame_end(last), "segment ends at the last record");
    }
    Log {
        _tmp: tmp,
        dir,
        opts,
        payloads,
        handles,
    }
}

fn collect(wal: &Wal, what: &str) -> Vec<(RecordHandle, Vec<u8>)> {
    wal.iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{what}: iteration failed: {e}")))
        .collect()
}

/// Copy `log`, apply `damage` to the bytes of its segment, and return the
/// work directory, the segment's path, and its bytes before and after.
fn damaged_copy(
    log: &Log,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>, Vec<u8>) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("wal");
    copy_segments(&log.dir, &dir);
    let seg = dir.join(segment_file_name(log.handles[0].segment()));
    let pristine = fs::read(&seg).unwrap();
    let mut bytes = pristine.clone();
    damage(&mut bytes);
    fs::write(&seg, &bytes).unwrap();
    (work, dir, seg, pristine, bytes)
}

/// Open `dir` and check that it holds exactly the first `keep` records of
/// `log`, by iteration and by handle.
fn open_and_check_prefix(log: &Log, dir: &Path, keep: usize, what: &str) -> Wal {
    let wal = Wal::open(dir, log.opts.clone())
        .unwrap_or_else(|e| panic!("{what}: open must succeed, got {e}"));
    let rep = wal.recovery_report();
    assert_eq!(rep.records, keep as u64, "{what}: recovered record count");
    assert_eq!(
        rep.last_lsn,
        (keep > 0).then_some(keep as u64),
        "{what}: last LSN"
    );
    let got = collect(&wal, what);
    assert_eq!(got.len(), keep, "{what}: records after recovery");
    for (i, (h, p)) in got.iter().enumerate() {
        assert_eq!(*h, log.handles[i], "{what}: handle of record {i}");
        assert_eq!(*p, log.payloads[i], "{what}: payload of record {i}");
        assert_eq!(wal.read(h).unwrap(), log.payloads[i], "{what}: read {i}");
    }
    for h in &log.handles[keep..] {
        assert!(
            wal.read(h).is_err(),
            "{what}: the dropped record {} must not be readable",
            h.lsn()
        );
    }
    wal
}

/// Damage a copy of `log` and check that open treats it as a torn tail that
/// starts at record index `keep` (records `keep..` are dropped). Returns false
/// if the damage happened to change no byte (then the log must be intact).
fn check_torn(log: &Log, keep: usize, what: &str, damage: impl FnOnce(&mut Vec<u8>)) -> bool {
    let (_work, dir, seg, pristine, bytes) = damaged_copy(log, damage);
    if bytes == pristine {
        // Nothing changed (e.g. zeros written over zeros): nothing is torn.
        let wal = open_and_check_prefix(log, &dir, log.handles.len(), what);
        assert_eq!(wal.recovery_report().torn_bytes, 0, "{what}");
        return false;
    }
    let off = log.handles[keep].offset() as usize;
    // What the damage left from the first dropped record on: all of it is
    // unacknowledged junk, and its nonzero part must be discarded.
    let nonzero_end = bytes
        .get(off..)
        .and_then(|t| t.iter().rposition(|&b| b != 0))
        .map_or(off, |i| off + i + 1);
    let last_end = frame_end(log.handles.last().unwrap()) as usize;
    let junk_end = nonzero_end.max(last_end).min(bytes.len()).max(off);

    let wal = open_and_check_prefix(log, &dir, keep, what);
    let rep = wal.recovery_report().clone();
    assert!(
        rep.torn_bytes >= (nonzero_end - off) as u64 && rep.torn_bytes <= (junk_end - off) as u64,
        "{what}: torn_bytes {} not in [{}, {}]",
        rep.torn_bytes,
        nonzero_end - off,
        junk_end - off
    );
    if rep.torn_bytes > 0 {
        assert_eq!(
            rep.torn_at,
            Some((seg.clone(), off as u64)),
            "{what}: torn_at"
        );
    } else {
        assert_eq!(rep.torn_at, None, "{what}: torn_at with nothing discarded");
    }
    // The repair is on disk: no byte of the torn record or its junk is left.
    let now = fs::read(&seg).unwrap();
    assert!(
        now.get(off..junk_end.min(now.len()))
            .unwrap_or(&[])
            .iter()
            .all(|&b| b == 0),
        "{what}: torn bytes were not zeroed"
    );

    // The log takes new appends, at the next dense LSN, and keeps them.
    let extra = payload(1000 + keep, 29);
    let h = wal.append(&extra).unwrap();
    assert_eq!(h.lsn(), keep as u64 + 1, "{what}: LSN after recovery");
    assert_eq!(wal.read(&h).unwrap(), extra);
    wal.close().unwrap();

    let wal = Wal::open(&dir, log.opts.clone())
        .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
    let rep = wal.recovery_report();
    assert_eq!(rep.torn_bytes, 0, "{what}: repair was not complete");
    assert_eq!(rep.torn_at, None, "{what}");
    let got = collect(&wal, what);
    assert_eq!(got.len(), keep + 1, "{what}: records after second reopen");
    for (i, (gh, p)) in got[..keep].iter().enumerate() {
        assert_eq!(*gh, log.handles[i], "{what}");
        assert_eq!(*p, log.payloads[i], "{what}");
    }
    assert_eq!(got[keep], (h, extra), "{what}: the new record");
    true
}

/// Replace `bytes[from..to]` with garbage: every byte changes, in a
/// deterministic pseudo-random way.
fn garbage(bytes: &mut Vec<u8>, from: usize, to: usize, seed: u64) {
    if bytes.len() < to {
        bytes.resize(to, 0);
    }
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for b in &mut bytes[from..to] {
        // `| 1`: every byte changes.
        *b ^= (rng.next() as u8) | 1;
    }
}

fn six_records() -> Vec<Vec<u8>> {
    [11, 3, 40, 1, 25, 33]
        .iter()
        .enumerate()
        .map(|(i, &n)| payload(i, n))
        .collect()
}

/// (a) The segment file ends at every byte offset inside the last frame
/// (header and payload): the write of the last record was cut short.
#[test]
fn truncated_at_every_offset_of_the_last_record() {
    for payloads in [six_records(), vec![payload(1, 17), Vec::new()]] {
        let log = build(opts(false), &payloads, &[]);
        let last = *log.handles.last().unwrap();
        let keep = log.handles.len() - 1;
        for cut in last.offset()..frame_end(&last) {
            let what = format!("truncated at {cut} (last frame at {})", last.offset());
            assert!(check_torn(&log, keep, &what, |b| b.truncate(cut as usize)));
        }
    }
}

/// (b) A lost write: the last frame's bytes from every offset on are zeros
/// (the preallocated zero tail, or a file whose size landed before its data).
#[test]
fn zeroed_from_every_offset_of_the_last_record() {
    for preallocate in [true, false] {
        for payloads in [six_records(), vec![payload(1, 17), Vec::new()]] {
            let log = build(opts(preallocate), &payloads, &[]);
            let last = *log.handles.last().unwrap();
            let keep = log.handles.len() - 1;
            let (off, end) = (last.offset() as usize, frame_end(&last) as usize);
            let mut damaged = 0;
            for at in off..end {
                let what = format!("prealloc {preallocate}: zeroed {at}..{end}");
                damaged += usize::from(check_torn(&log, keep, &what, |b| b[at..end].fill(0)));
            }
            // Only an empty payload can end in zeros that zeroing leaves alone.
            if !payloads.last().unwrap().is_empty() {
                assert_eq!(damaged, end - off);
            } else {
                assert!(damaged >= 20, "{damaged}");
            }
        }
    }
}

/// (c) A torn write that left junk: the last frame's bytes from every offset
/// on are garbage; and junk that spills past the frame into the (zero)
/// preallocated space, as a torn write of a longer batch would leave.
#[test]
fn garbage_from_every_offset_of_the_last_record() {
    for preallocate in [true, false] {
        for payloads in [six_records(), vec![payload(1, 17), Vec::new()]] {
            let log = build(opts(preallocate), &payloads, &[]);
            let last = *log.handles.last().unwrap();
            let keep = log.handles.len() - 1;
            let (off, end) = (last.offset() as usize, frame_end(&last) as usize);
            for at in off..end {
                let what = format!("prealloc {preallocate}: garbage {at}..{end}");
                assert!(check_torn(&log, keep, &what, |b| {
                    garbage(b, at, end, at as u64)
                }));
            }
            if preallocate {
                for at in [off, off + 1, off + 20, end - 1] {
                    let spill = end + 300;
                    let what = format!("garbage {at}..{spill} past the frame end {end}");
                    assert!(check_torn(&log, keep, &what, |b| {
                        garbage(b, at, spill, 7 + at as u64)
                    }));
                }
            }
        }
    }
}

/// The last group-commit batch was written with one write and one sync, so
/// its pages may land in any order: a damaged member followed by valid
/// members of the same batch (whose `durable_lsn` predates the whole batch)
/// is a torn tail, and everything from the damaged member on is dropped.
#[test]
fn damaged_member_of_the_last_batch_followed_by_valid_members_is_torn() {
    let singles: Vec<Vec<u8>> = (0..4).map(|i| payload(i, 10 + 3 * i)).collect();
    let batch: Vec<Vec<u8>> = (0..3).map(|i| payload(50 + i, 21 + i)).collect();
    for preallocate in [false, true] {
        let log = build(opts(preallocate), &singles, &batch);
        let batch_end = frame_end(log.handles.last().unwrap()) as usize;
        for member in 0..batch.len() {
            let keep = singles.len() + member;
            let h = log.handles[keep];
            let (off, end) = (h.offset() as usize, frame_end(&h) as usize);
            let mid_payload = off + FRAME_HEADER_BYTES as usize + h.len() as usize / 2;
            let cases: [(&str, Damage); 4] = [
                (
                    "one payload byte garbled",
                    Box::new(move |b: &mut Vec<u8>| b[mid_payload] ^= 0x5a),
                ),
                (
                    "checksum byte garbled",
                    Box::new(move |b: &mut Vec<u8>| b[off] ^= 0x01),
                ),
                (
                    "whole frame zero",
                    Box::new(move |b: &mut Vec<u8>| b[off..end].fill(0)),
                ),
                (
                    "zero from mid-header",
                    Box::new(move |b: &mut Vec<u8>| b[off + 20..end].fill(0)),
                ),
            ];
            for (name, damage) in cases {
                let what = format!("prealloc {preallocate}: batch member {member}: {name}");
                assert!(check_torn(&log, keep, &what, damage));
            }
        }
        // The same damage to the first member, stated as a whole: the valid
        // members after it are dropped too, and exactly the batch's bytes go.
        let (_work, dir, _seg, _, _) = damaged_copy(&log, |b| {
            let h = log.handles[singles.len()];
            b[h.offset() as usize + 45] ^= 0xff;
        });
        let wal = open_and_check_prefix(&log, &dir, singles.len(), "first batch member");
        let first = log.handles[singles.len()].offset();
        assert_eq!(
            wal.recovery_report().torn_bytes,
            batch_end as u64 - first,
            "the whole batch is discarded"
        );
    }
}

/// The contrast that makes the rule sound: the record just before the last
/// batch was acknowledged before the batch was written (the batch's frames
/// say so through `durable_lsn`), so damage to it is corruption of durable
/// data, not a torn tail, and open must refuse rather than truncate it away.
#[test]
fn damaged_record_proven_durable_by_a_later_batch_is_corruption() {
    let singles: Vec<Vec<u8>> = (0..4).map(|i| payload(i, 10 + 3 * i)).collect();
    let batch: Vec<Vec<u8>> = (0..3).map(|i| payload(50 + i, 21 + i)).collect();
    for preallocate in [false, true] {
        let log = build(opts(preallocate), &singles, &batch);
        for victim in [singles.len() - 1, 1] {
            let h = log.handles[victim];
            let at = h.offset() as usize + FRAME_HEADER_BYTES as usize + 2;
            let (_work, dir, seg, _, bytes) = damaged_copy(&log, |b| b[at] ^= 0x10);
            match Wal::open(&dir, log.opts.clone()) {
                Err(Error::Corruption { file, offset, kind }) => {
                    assert_eq!(file, seg);
                    assert_eq!(offset, h.offset(), "offset names the damaged record");
                    assert!(
                        matches!(kind, CorruptionKind::DurableRecordDamaged { .. }),
                        "{kind:?}"
                    );
                }
                Ok(_) => panic!("record {victim}: damage to a durable record was accepted"),
                Err(e) => panic!("record {victim}: expected Corruption, got {e:?}"),
            }
            assert_eq!(
                fs::read(&seg).unwrap(),
                bytes,
                "a failed open modifies nothing"
            );
        }
    }
}

/// The writer never has more than the unsynced window W (recorded in the
/// segment header) written but unsynced; junk within W of the last record is
/// a torn tail, junk far beyond it cannot come from a crash.
#[test]
fn junk_beyond_the_unsynced_window_is_corruption() {
    let o = WalOptions {
        segment_bytes: 32 << 10,
        max_record_bytes: 1000,
        max_batch_bytes: 4096,
        preallocate: true,
        ..opts(true)
    };
    // W = max(max_batch_bytes, one maximal frame) = 4096 bytes.
    let window = 4096usize;
    let log = build(o, &six_records(), &[]);
    let end = frame_end(log.handles.last().unwrap()) as usize;
    let keep = log.handles.len();
    // Shortly after the end: torn (nothing valid is lost).
    let junk = end + 100;
    let (_work, dir, seg, _, _) = damaged_copy(&log, |b| b[junk] = 0xee);
    let wal = open_and_check_prefix(&log, &dir, keep, "junk within the window");
    let rep = wal.recovery_report();
    assert_eq!(rep.torn_bytes, (junk + 1 - end) as u64);
    assert_eq!(rep.torn_at, Some((seg, end as u64)));
    drop(wal);
    // Three windows past the end: not something a crash leaves.
    let junk = end + 3 * window;
    let (_work, dir, seg, _, bytes) = damaged_copy(&log, |b| b[junk] = 0xee);
    match Wal::open(&dir, log.opts.clone()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(offset >= end as u64 && offset <= junk as u64, "{offset}");
        }
        Ok(_) => panic!("junk {} bytes past the end was truncated away", junk - end),
        Err(e) => panic!("expected Corruption, got {e:?}"),
    }
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "a failed open modifies nothing"
    );
}

/// Damage the header of the only segment of a copy of `log` and expect a
/// `Corruption` error naming it. Returns false if the damage changed nothing.
fn expect_header_corruption(log: &Log, what: &str, damage: impl FnOnce(&mut Vec<u8>)) -> bool {
    let (_work, dir, seg, pristine, bytes) = damaged_copy(log, damage);
    if bytes == pristine {
        open_and_check_prefix(log, &dir, log.handles.len(), what);
        return false;
    }
    match Wal::open(&dir, log.opts.clone()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, seg, "{what}: the error names the segment");
            assert!(
                offset < SEGMENT_HEADER_BYTES,
                "{what}: offset {offset} is not in the header"
            );
        }
        Ok(wal) => panic!(
            "{what}: a damaged segment header was accepted ({} records)",
            wal.recovery_report().records
        ),
        Err(e) => panic!("{what}: expected Corruption, got {e:?}"),
    }
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "{what}: a failed open modifies nothing"
    );
    true
}

/// A segment header is written and synced before the segment gets its name,
/// so no crash leaves a segment with a short or damaged header: truncating
/// the only segment at every offset of its header, or zeroing or garbling
/// its header from every offset on, is corruption.
#[test]
fn damaged_header_of_the_only_segment_is_corruption() {
    for preallocate in [false, true] {
        let log = build(opts(preallocate), &six_records(), &[]);
        let hdr = SEGMENT_HEADER_BYTES as usize;
        for cut in 0..hdr {
            let what = format!("prealloc {preallocate}: truncated to {cut}");
            assert!(expect_header_corruption(&log, &what, |b| b.truncate(cut)));
        }
        let mut zero_damaged = 0;
        for at in 0..hdr {
            let what = format!("prealloc {preallocate}: header zeroed from {at}");
            zero_damaged += usize::from(expect_header_corruption(&log, &what, |b| {
                b[at..hdr].fill(0)
            }));
            let what = format!("prealloc {preallocate}: header garbled from {at}");
            assert!(expect_header_corruption(&log, &what, |b| {
                garbage(b, at, hdr, at as u64)
            }));
        }
        // Only the checksum bytes (zero by chance) can be left alone by zeroing.
        assert!(zero_damaged >= hdr - 4, "{zero_damaged}");
    }
}
