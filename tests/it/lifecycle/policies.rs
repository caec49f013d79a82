//! The sync policies, stray and temporary files, missing and foreign segments, and read-only salvage mode.

use super::*;

// ---------------------------------------------------------------- sync policies

#[test]
fn never_policy_syncs_only_when_asked() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let base = plan.file_syncs();
    assert_eq!(wal.stats().data_syncs, 0);
    let mut records = append_all(&wal, (0..40).map(|i| payload(i, 100)));
    let batch: Vec<Vec<u8>> = (40..43).map(|i| payload(i, 100)).collect();
    records.extend(wal.append_batch(&batch).unwrap().into_iter().zip(batch));
    assert_eq!(wal.stats().records_appended, 43);
    assert_eq!(wal.stats().data_syncs, 0, "Never synced on append");
    assert_eq!(plan.file_syncs(), base, "Never synced on append");
    assert_reads(&wal, &records);

    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 1);
    assert_eq!(plan.file_syncs(), base + 1);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 1, "nothing new to sync");
    records.extend(append_all(&wal, [payload(43, 10)]));
    assert_eq!(wal.stats().data_syncs, 1);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, 2);
    drop(wal);

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), records);
    assert_eq!(wal.recovery_report().torn_bytes, 0);
    assert_eq!(wal.append(b"more").unwrap().lsn(), 45);
}

#[test]
fn periodic_policy_syncs_by_bytes_on_request_and_at_close() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let zero = WalOptions {
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::ZERO,
            max_unsynced_bytes: 1,
        },
        ..mid(true)
    };
    assert!(matches!(
        Wal::open(&dir, zero),
        Err(Error::InvalidOptions(_))
    ));

    let max_unsynced = 4096u64;
    let opts = WalOptions {
        // Long enough that the background thread never fires in this test.
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::from_secs(3600),
            max_unsynced_bytes: max_unsynced,
        },
        ..mid(true)
    };
    let (wal, plan) = open_faulty(&dir, opts.clone());
    let mut records = Vec::new();
    let (mut unsynced, mut expected_syncs) = (0u64, 0u64);
    for i in 0..100 {
        let p = payload(i, 100);
        records.push((wal.append(&p).unwrap(), p));
        unsynced += FRAME_HEADER_BYTES + 100;
        if unsynced >= max_unsynced {
            expected_syncs += 1;
            unsynced = 0;
        }
        assert_eq!(wal.stats().data_syncs, expected_syncs, "after append {i}");
    }
    assert!(expected_syncs >= 3);
    assert!(unsynced > 0);
    wal.sync().unwrap();
    assert_eq!(wal.stats().data_syncs, expected_syncs + 1);
    records.extend(append_all(&wal, (100..105).map(|i| payload(i, 100))));
    assert_eq!(wal.stats().data_syncs, expected_syncs + 1);
    assert_reads(&wal, &records);
    let before_close = plan.file_syncs();
    drop(wal);
    assert_eq!(plan.file_syncs(), before_close + 1, "close must sync");

    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(all_records(&wal), records);
    wal.append(b"more").unwrap();
}

#[test]
fn periodic_policy_background_thread_syncs() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        sync_policy: SyncPolicy::Periodic {
            interval: Duration::from_millis(2),
            max_unsynced_bytes: u64::MAX,
        },
        ..mid(true)
    };
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let h = wal.append(b"synced by the flusher").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().data_syncs == 0 {
        assert!(
            Instant::now() < deadline,
            "the periodic flusher never synced"
        );
        std::thread::yield_now();
    }
    drop(wal);
    let wal = Wal::open(&dir, opts).unwrap();
    assert_eq!(
        all_records(&wal),
        vec![(h, b"synced by the flusher".to_vec())]
    );
}

// ---------------------------------------------------------------- stray files

#[test]
fn stray_files_are_ignored_and_temp_segments_removed() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, small()).unwrap();
    let mut records = append_all(&wal, (0..10).map(|i| payload(i, 500)));
    drop(wal);
    let last_seq = *segment_seqs(&dir).last().unwrap();
    assert!(last_seq >= 2);

    let seg1 = std::fs::read(seg_path(&dir, 1)).unwrap();
    let strays: Vec<(String, Vec<u8>)> = vec![
        (format!("{}~", segment_file_name(1)), seg1.clone()),
        (format!("#{}#", segment_file_name(1)), seg1.clone()),
        (format!("{}.bak", segment_file_name(1)), seg1),
        (".DS_Store".into(), b"\0\0\0\x01Bud1 garbage".to_vec()),
        ("notes.txt".into(), b"not a segment".to_vec()),
        ("1.wal".into(), vec![0xff; 100]),
        ("00000000000000000000000001.wal".into(), vec![1; 64]),
    ];
    for (name, bytes) in &strays {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::create_dir(dir.join("subdir")).unwrap();
    std::fs::write(dir.join("subdir").join(segment_file_name(1)), b"x").unwrap();
    let temps = vec![
        format!("{}.tmp", segment_file_name(last_seq + 1)),
        format!("{}.tmp", segment_file_name(99)),
    ];
    std::fs::write(dir.join(&temps[0]), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join(&temps[1]), b"half a header").unwrap();

    let wal = Wal::open(&dir, small()).expect("stray files must not break open");
    let report = wal.recovery_report().clone();
    for (name, _) in &strays {
        assert!(report.ignored_files.contains(name), "{name} not listed");
    }
    assert!(report.ignored_files.contains(&"subdir".to_string()));
    for seq in segment_seqs(&dir) {
        assert!(!report.ignored_files.contains(&segment_file_name(seq)));
    }
    let mut removed = report.removed_temp_files.clone();
    removed.sort();
    assert_eq!(removed, temps);
    for t in &temps {
        assert!(!dir.join(t).exists(), "{t} was not removed");
    }
    assert_eq!(report.segments as u64, last_seq);
    assert_eq!(all_records(&wal), records);
    // Stray files are left alone.
    for (name, bytes) in &strays {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    assert!(dir.join("subdir").is_dir());
    // The log keeps working beside them, creating new segments.
    records.extend(append_all(&wal, (10..20).map(|i| payload(i, 1000))));
    assert!(*segment_seqs(&dir).last().unwrap() > last_seq + 1);
    drop(wal);

    let wal = Wal::open(&dir, small()).unwrap();
    assert!(wal.recovery_report().removed_temp_files.is_empty());
    assert!(
        wal.recovery_report()
            .ignored_files
            .contains(&"notes.txt".to_string())
    );
    assert_eq!(all_records(&wal), records);
}

// ---------------------------------------------------------------- damaged chain

#[test]
fn missing_middle_segment_is_corruption() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, small()).unwrap();
        append_all(&wal, (0..20).map(|i| payload(i, 1000)));
    }
    assert_eq!(segment_seqs(&dir), (1..=7).collect::<Vec<_>>());
    std::fs::remove_file(seg_path(&dir, 3)).unwrap();
    let before = snapshot(&dir);

    match Wal::open(&dir, small()) {
        Err(Error::Corruption { file, kind, .. }) => {
            assert_eq!(
                kind,
                CorruptionKind::MissingSegment {
                    expected: 3,
                    found: 4
                }
            );
            assert_eq!(file, seg_path(&dir, 4));
        }
        other => panic!("expected MissingSegment corruption, got {other:?}"),
    }
    // The failed open changed nothing (the lock file aside, already there).
    assert_eq!(snapshot(&dir), before);

    // Salvage mode opens it and lists the gap.
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..small()
    };
    let wal = Wal::open(&dir, salvage).unwrap();
    assert!(
        wal.recovery_report()
            .problems
            .iter()
            .any(|p| matches!(p.kind, CorruptionKind::MissingSegment { expected: 3, .. })),
        "{:?}",
        wal.recovery_report().problems
    );
}

#[test]
fn segment_from_another_log_is_corruption() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let a_records = {
        let wal = Wal::open(&a, small()).unwrap();
        append_all(&wal, (0..6).map(|i| payload(i, 1000)))
    };
    {
        let wal = Wal::open(&b, small()).unwrap();
        append_all(&wal, (0..12).map(|i| payload(100 + i, 1000)));
    }
    assert_eq!(segment_seqs(&a), vec![1, 2]);
    assert_eq!(segment_seqs(&b), vec![1, 2, 3, 4]);
    // B's segment 3 even starts at the LSN A's segment 3 would.
    assert_eq!(read_header(&seg_path(&b, 3)).first_lsn, 7);
    std::fs::copy(seg_path(&b, 3), seg_path(&a, 3)).unwrap();

    match Wal::open(&a, small()) {
        Err(Error::Corruption { file, kind, .. }) => {
            assert_eq!(kind, CorruptionKind::ForeignSegment);
            assert_eq!(file, seg_path(&a, 3));
        }
        other => panic!("expected ForeignSegment corruption, got {other:?}"),
    }
    std::fs::remove_file(seg_path(&a, 3)).unwrap();
    let wal = Wal::open(&a, small()).unwrap();
    assert_eq!(all_records(&wal), a_records);
}

// ---------------------------------------------------------------- salvage

#[test]
fn salvage_mode_is_read_only_and_modifies_nothing() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let records = {
        let wal = Wal::open(&dir, small()).unwrap();
        append_all(&wal, (0..20).map(|i| payload(i, 300 + i as usize)))
    };
    let last_seq = *segment_seqs(&dir).last().unwrap();
    let temp = format!("{}.tmp", segment_file_name(last_seq + 1));
    std::fs::write(dir.join(&temp), b"half-created segment").unwrap();
    let before = snapshot(&dir);

    let opts = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..small()
    };
    let (wal, plan) = open_faulty(&dir, opts);
    assert!(matches!(wal.append(b"x"), Err(Error::ReadOnly)));
    assert!(matches!(wal.append_at(b"x", 1), Err(Error::ReadOnly)));
    assert!(matches!(wal.append_batch(&[b"x"]), Err(Error::ReadOnly)));
    assert!(matches!(wal.sync(), Err(Error::ReadOnly)));
    assert!(matches!(
        wal.purge_before_lsn(u64::MAX),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        wal.purge_before_time(u64::MAX),
        Err(Error::ReadOnly)
    ));
    assert!(!wal.is_poisoned());
    assert_eq!(all_records(&wal), records);
    assert_reads(&wal, &records);
    let report = wal.recovery_report();
    assert!(report.removed_temp_files.is_empty());
    assert!(report.ignored_files.contains(&temp));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    wal.close().unwrap();
    assert_eq!(plan.writes(), 0, "salvage mode wrote");
    assert_eq!(plan.file_syncs(), 0, "salvage mode synced a file");
    assert_eq!(plan.dir_syncs(), 0, "salvage mode synced the directory");
    assert_eq!(
        snapshot(&dir),
        before,
        "salvage mode modified the directory"
    );

    // A strict open afterwards is unaffected, and cleans the temp file.
    let wal = Wal::open(&dir, small()).unwrap();
    assert_eq!(wal.recovery_report().removed_temp_files, vec![temp]);
    assert_eq!(all_records(&wal), records);
}

#[test]
fn directories_named_like_segments_or_temp_files_are_ignored() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, WalOptions::default()).unwrap();
        wal.append(b"kept").unwrap();
    }
    let as_temp = dir.join("00000000000000000009.wal.tmp");
    let as_segment = dir.join("00000000000000000000.wal");
    std::fs::create_dir(&as_temp).unwrap();
    std::fs::create_dir(&as_segment).unwrap();
    let wal = Wal::open(&dir, WalOptions::default()).unwrap();
    let ignored = &wal.recovery_report().ignored_files;
    assert!(
        ignored.iter().any(|n| n == "00000000000000000009.wal.tmp"),
        "{ignored:?}"
    );
    assert!(
        ignored.iter().any(|n| n == "00000000000000000000.wal"),
        "{ignored:?}"
    );
    assert!(as_temp.is_dir() && as_segment.is_dir());
    let got: Vec<Vec<u8>> = wal.iter().map(|r| r.unwrap().1).collect();
    assert_eq!(got, vec![b"kept".to_vec()]);
}
