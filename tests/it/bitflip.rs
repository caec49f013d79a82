//! Proves that flipping any single bit of a small two-segment log never panics and never yields a wrong payload: a flip in the last record of the last segment is recovered as a torn tail (that record dropped, all others kept), any other flip makes open fail with an `Error::Corruption` naming the damaged file and structure (and modifying nothing), and salvage mode skips exactly the damaged structure and lists it in the recovery report.
//!
//! Every flip is detected at open: a strict open checks every segment header
//! and every frame's two checksums, and CRC32 catches every single-bit error,
//! so no case is left for iteration to discover.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;
use streamwal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use streamwal::wal::segment_file_name;
use streamwal::{Error, RecordHandle, RecoveryMode, SyncPolicy, Wal, WalOptions};

/// Segment 1 is written with a smaller record bound than segment 2; reopening
/// with a larger bound makes the log start a new segment whose header says
/// so, which gives two small segments without filling a 4 KiB one.
fn opts(max_record_bytes: u32) -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        segment_bytes: 4096,
        max_record_bytes,
        preallocate: false,
        ..WalOptions::default()
    }
}

const FIRST_MAX: u32 = 64;
const SECOND_MAX: u32 = 128;

/// `len` bytes, none of them zero, different for every `seed`.
fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| b'A' + ((seed * 5 + j) % 26) as u8)
        .collect()
}

fn frame_end(h: &RecordHandle) -> u64 {
    h.offset() + FRAME_HEADER_BYTES + u64::from(h.len())
}

fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".wal")
        .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// The pristine log: segment files (name, bytes) in log order, and what was
/// appended.
struct Pristine {
    files: Vec<(String, Vec<u8>)>,
    payloads: Vec<Vec<u8>>,
    handles: Vec<RecordHandle>,
}

/// The structure a flipped byte lies in.
#[derive(Debug, Clone, Copy)]
enum Hit {
    /// The segment header (offset 0).
    Header,
    /// The frame of record index `i`.
    Frame(usize),
}

impl Pristine {
    fn build() -> Pristine {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut payloads = Vec::new();
        let mut handles = Vec::new();
        for (max, lens) in [(FIRST_MAX, [20, 27, 24]), (SECOND_MAX, [22, 31, 26])] {
            let wal = Wal::open(&dir, opts(max)).unwrap();
            for len in lens {
                let p = payload(payloads.len(), len);
                handles.push(wal.append(&p).unwrap());
                payloads.push(p);
            }
            wal.close().unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_segment_name(n))
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            2,
            "reopening with a larger record bound must start a second segment"
        );
        let files: Vec<(String, Vec<u8>)> = names
            .into_iter()
            .map(|n| {
                let b = fs::read(dir.join(&n)).unwrap();
                (n, b)
            })
            .collect();
        // The layout the expectations rely on: records 0..3 in the first
        // segment, 3..6 in the second, frames back to back after the header,
        // each file ending at its last frame (no preallocated tail).
        for (i, h) in handles.iter().enumerate() {
            assert_eq!(h.lsn(), i as u64 + 1);
            assert_eq!(segment_file_name(h.segment()), files[i / 3].0);
            let expected_off = if i % 3 == 0 {
                SEGMENT_HEADER_BYTES
            } else {
                frame_end(&handles[i - 1])
            };
            assert_eq!(h.offset(), expected_off);
        }
        for (f, (_, bytes)) in files.iter().enumerate() {
            assert_eq!(bytes.len() as u64, frame_end(&handles[f * 3 + 2]));
        }
        Pristine {
            files,
            payloads,
            handles,
        }
    }

    fn hit(&self, file: usize, byte: u64) -> (Hit, u64) {
        if byte < SEGMENT_HEADER_BYTES {
            return (Hit::Header, 0);
        }
        let i = (file * 3..file * 3 + 3)
            .find(|&i| byte < frame_end(&self.handles[i]))
            .expect("every byte is in a header or a frame");
        (Hit::Frame(i), self.handles[i].offset())
    }

    /// Records (indices) outside the damaged structure.
    fn untouched(&self, file: usize, hit: Hit) -> Vec<usize> {
        (0..self.handles.len())
            .filter(|&i| match hit {
                Hit::Header => i / 3 != file,
                Hit::Frame(j) => i != j,
            })
            .collect()
    }
}

/// Check that every record `wal` yields is the one appended at its LSN, by
/// iteration and by handle; return the indices yielded.
fn check_yields(wal: &Wal, p: &Pristine, mode: &str) -> Result<Vec<usize>, String> {
    let mut seen = Vec::new();
    for item in wal.iter() {
        let (h, payload) = item.map_err(|e| format!("{mode}: iteration error {e}"))?;
        let i = usize::try_from(h.lsn())
            .ok()
            .and_then(|l| l.checked_sub(1))
            .filter(|&i| i < p.payloads.len())
            .ok_or_else(|| format!("{mode}: yielded LSN {} never appended", h.lsn()))?;
        if payload != p.payloads[i] {
            return Err(format!("{mode}: WRONG PAYLOAD for LSN {}", h.lsn()));
        }
        if h != p.handles[i] {
            return Err(format!("{mode}: handle {h:?} != {:?}", p.handles[i]));
        }
        match wal.read(&h) {
            Ok(r) if r == payload => {}
            Ok(_) => return Err(format!("{mode}: read returned a WRONG PAYLOAD")),
            Err(e) => return Err(format!("{mode}: read of a yielded record failed: {e}")),
        }
        seen.push(i);
    }
    Ok(seen)
}

fn files_unchanged(dir: &Path, expected: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (name, bytes) in expected {
        if fs::read(dir.join(name)).map_err(|e| e.to_string())? != *bytes {
            return Err(format!("{name} was modified"));
        }
    }
    Ok(())
}

/// Put the pristine segment files into `dir` (in place, same length, so a
/// trial dirties only data blocks and no directory entry) and remove
/// anything an open left beside them other than the `LOCK` file.
fn restore(dir: &Path, p: &Pristine) -> Result<(), String> {
    let mut stray = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let name = e.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy().into_owned();
        if name != "LOCK" && !p.files.iter().any(|(n, _)| *n == name) {
            fs::remove_file(dir.join(&name)).map_err(|e| e.to_string())?;
            stray.push(name);
        }
    }
    for (name, bytes) in &p.files {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(m) if m.len() == bytes.len() as u64 => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| e.to_string())?;
                f.write_all_at(bytes, 0).map_err(|e| e.to_string())?;
            }
            _ => fs::write(&path, bytes).map_err(|e| e.to_string())?,
        }
    }
    if stray.is_empty() {
        Ok(())
    } else {
        Err(format!("an open left stray files {stray:?}"))
    }
}

/// Flip bit `bit` of byte `byte` of segment `file` in `dir` (which holds the
/// pristine log), then open it in salvage mode and in strict mode and check
/// both. The caller restores `dir` afterwards.
fn trial(p: &Pristine, dir: &Path, file: usize, byte: u64, bit: u8) -> Result<(), String> {
    let mut damaged = p.files.clone();
    damaged[file].1[byte as usize] ^= 1 << bit;
    let path: PathBuf = dir.join(&damaged[file].0);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.write_all_at(&damaged[file].1[byte as usize..][..1], byte))
        .map_err(|e| e.to_string())?;
    let (hit, start) = p.hit(file, byte);

    // Salvage: read-only, skips the damage, lists it, yields only good records.
    {
        let mode = WalOptions {
            recovery_mode: RecoveryMode::Salvage,
            ..opts(SECOND_MAX)
        };
        let wal = Wal::open(dir, mode).map_err(|e| format!("salvage open failed: {e}"))?;
        let seen: BTreeSet<usize> = check_yields(&wal, p, "salvage")?.into_iter().collect();
        let untouched = p.untouched(file, hit);
        match hit {
            Hit::Frame(j) if seen.contains(&j) => {
                return Err(format!("salvage yielded the damaged record {j}"));
            }
            _ => {}
        }
        if let Some(missing) = untouched.iter().find(|i| !seen.contains(i)) {
            return Err(format!("salvage lost undamaged record {missing}"));
        }
        let problems = &wal.recovery_report().problems;
        if !problems.iter().any(|q| q.file == path && q.offset == start) {
            return Err(format!(
                "salvage did not list the damage at {start}: {problems:?}"
            ));
        }
    }
    files_unchanged(dir, &damaged).map_err(|e| format!("salvage: {e}"))?;

    // Strict.
    let last = p.handles.len() - 1;
    match (hit, Wal::open(dir, opts(SECOND_MAX))) {
        (Hit::Frame(j), Ok(wal)) if j == last => {
            // Torn tail: the last record is dropped, everything else kept.
            let rep = wal.recovery_report().clone();
            let frame_len = frame_end(&p.handles[last]) - start;
            if rep.torn_at != Some((path.clone(), start))
                || rep.torn_bytes == 0
                || rep.torn_bytes > frame_len
            {
                return Err(format!(
                    "torn tail misreported: torn_at {:?}, torn_bytes {}",
                    rep.torn_at, rep.torn_bytes
                ));
            }
            let seen = check_yields(&wal, p, "strict")?;
            if seen != (0..last).collect::<Vec<_>>() {
                return Err(format!("strict open after torn tail yielded {seen:?}"));
            }
            if wal.read(&p.handles[last]).is_ok() {
                return Err("the torn record is still readable".into());
            }
            let now = fs::read(&path).map_err(|e| e.to_string())?;
            if now
                .get(start as usize..)
                .is_none_or(|t| t.iter().any(|&b| b != 0))
            {
                return Err("the torn record was not zeroed on disk".into());
            }
            Ok(())
        }
        (_, Ok(wal)) => Err(format!(
            "{hit:?}: open accepted the damage ({} records, torn_bytes {})",
            wal.recovery_report().records,
            wal.recovery_report().torn_bytes
        )),
        (
            _,
            Err(Error::Corruption {
                file: f, offset, ..
            }),
        ) => {
            if matches!(hit, Hit::Frame(j) if j == last) {
                return Err("a flip in the last record was not treated as torn".into());
            }
            if f != path || offset != start {
                return Err(format!(
                    "corruption reported at {}:{offset}, damage is in {}:{start}",
                    f.display(),
                    path.display()
                ));
            }
            files_unchanged(dir, &damaged).map_err(|e| format!("strict: {e}"))
        }
        (_, Err(e)) => Err(format!("{hit:?}: expected Corruption, got {e:?}")),
    }
}

#[test]
fn every_single_bit_flip_is_detected_and_never_returns_a_wrong_payload() {
    let started = Instant::now();
    let p = Pristine::build();
    let flips: Vec<(usize, u64, u8)> = p
        .files
        .iter()
        .enumerate()
        .flat_map(|(f, (_, bytes))| {
            (0..bytes.len() as u64).flat_map(move |b| (0..8u8).map(move |bit| (f, b, bit)))
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (p, flips) = (&p, &flips);
                s.spawn(move || {
                    let tmp = tempfile::tempdir().unwrap();
                    let dir = tmp.path().join("wal");
                    fs::create_dir(&dir).unwrap();
                    restore(&dir, p).unwrap();
                    let mut failures = Vec::new();
                    for &(f, byte, bit) in flips.iter().skip(t).step_by(threads) {
                        let outcome =
                            catch_unwind(AssertUnwindSafe(|| trial(p, &dir, f, byte, bit)));
                        let restored = restore(&dir, p);
                        let msg = match (outcome, restored) {
                            (Ok(Ok(())), Ok(())) => continue,
                            (Ok(Ok(())), Err(m)) | (Ok(Err(m)), _) => m,
                            (Err(_), _) => "PANIC".to_string(),
                        };
                        failures.push(format!(
                            "{} byte {byte:>4} bit {bit} ({:?}): {msg}",
                            p.files[f].0,
                            p.hit(f, byte).0
                        ));
                    }
                    failures
                })
            })
            .collect();
        let mut all: Vec<String> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.sort();
        all
    });
    eprintln!(
        "{} bit flips over {} bytes checked in {:?}",
        flips.len(),
        flips.len() / 8,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} flips failed; first ones:\n{}",
        failures.len(),
        flips.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
