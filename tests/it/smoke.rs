//! Basic behaviour: append, read, iterate, reopen, rollover, retention.
use streamwal::{Wal, WalOptions};

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    }
}

#[test]
fn append_read_reopen_rollover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut handles = Vec::new();
    {
        let wal = Wal::open(&dir, small()).unwrap();
        for i in 0..200u32 {
            let p = format!("record-{i}").repeat((i % 7) as usize + 1);
            handles.push((wal.append(p.as_bytes()).unwrap(), p));
        }
        for (h, p) in &handles {
            assert_eq!(wal.read(h).unwrap(), p.as_bytes());
        }
        assert!(wal.stats().segments_created > 3);
    }
    let wal = Wal::open(&dir, small()).unwrap();
    let got: Vec<_> = wal.iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 200);
    for ((h, p), (gh, gp)) in handles.iter().zip(&got) {
        assert_eq!(h, gh);
        assert_eq!(p.as_bytes(), &gp[..]);
    }
    let n = wal.purge_before_lsn(100).unwrap();
    assert!(n > 0);
    let first = wal.first_lsn().unwrap();
    assert!(first <= 100 && first > 1, "{first}");
    let h = wal.append(b"after").unwrap();
    assert_eq!(h.lsn(), 201);
    drop(wal);
    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(wal.iter().count() as u64, 201 - first + 1);
    assert_eq!(wal.recovery_report().torn_bytes, 0);
}
