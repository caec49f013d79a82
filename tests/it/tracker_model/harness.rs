//! The system under test beside the model: every operation applied to both,
//! recovery and restarts compared.

use super::*;

pub(super) struct Harness {
    _tmp: tempfile::TempDir,
    ckpt_dir: PathBuf,
    rx_dir: PathBuf,
    sut: Option<Sut>,
    model: Model,
    /// Largest batch time asked for by `When::Next` (0: none).
    clock: u64,
    /// Largest time passed to `allocate_blocks_to_batch`.
    newest_asked: u64,
    blocks_made: u64,
    /// Snapshots remembered as checkpoints (in memory and on disk).
    pub(super) snaps: Vec<(TrackerState, u64)>,
    disk: Option<DiskCheckpoint>,
    /// Journal LSN of the previous checkpoint the open context wrote.
    /// The checkpoint files on disk, as the model expects them: batch time
    /// -> journal LSN, after the store's retention (keep the newest 3 by
    /// time, never the file just written).
    disk_files: BTreeMap<u64, u64>,
    /// The journal may be retired through this LSN.
    retired: u64,
    /// Receiver-log LSNs appended but never added.
    orphans: BTreeSet<u64>,
    pub(super) recoveries: u64,
}

impl Harness {
    pub(super) fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt_dir = tmp.path().join("ckpt");
        let rx_dir = tmp.path().join("rx");
        let ctx = streamwal::StreamingContext::builder(&ckpt_dir)
            .receiver_log(&rx_dir)
            .options(ctx_opts())
            .now_ms(NOW_MS)
            .get_or_create(graph)
            .unwrap();
        assert!(
            ctx.recovered.is_none(),
            "empty directories are a fresh start"
        );
        assert_eq!(ctx.graph_version, 0);
        Harness {
            _tmp: tmp,
            ckpt_dir,
            rx_dir,
            sut: Some(Sut::Ctx(Box::new(ctx))),
            model: Model::default(),
            clock: 0,
            newest_asked: 0,
            blocks_made: 0,
            snaps: Vec::new(),
            disk: None,
            disk_files: BTreeMap::new(),
            retired: 0,
            orphans: BTreeSet::new(),
            recoveries: 0,
        }
    }

    fn sut(&self) -> &Sut {
        self.sut.as_ref().expect("open")
    }

    /// Candidate times for commits and cleanups: every time the model knows
    /// plus some it does not.
    pub(super) fn candidate_times(&self) -> Vec<u64> {
        let mut c: BTreeSet<u64> = self.model.allocated.keys().copied().collect();
        c.extend(self.model.committed.iter().copied());
        c.extend([
            self.clock.max(1),
            self.clock + INTERVAL_MS,
            self.clock.saturating_sub(INTERVAL_MS / 2).max(1),
            self.model.cleaned_before.max(1),
        ]);
        c.into_iter().collect()
    }

    pub(super) fn apply(&mut self, op: &Op) {
        match op {
            Op::Add {
                stream,
                len,
                records,
            } => {
                let n = self.blocks_made;
                self.blocks_made += 1;
                let bytes = payload(n, *len);
                let handle = self.sut().rx().append(&bytes).unwrap();
                let info = BlockInfo {
                    stream_id: *stream,
                    handle,
                    records: *records,
                    receive_time: self.clock + n,
                };
                self.sut().tracker().add_block(info.clone()).unwrap();
                self.model.add(info, bytes);
            }
            Op::AddBurst { count, len } => {
                for i in 0..*count {
                    self.apply(&Op::Add {
                        stream: (i % 3) as u32,
                        len: len + i as usize,
                        records: i + 1,
                    });
                }
            }
            Op::Orphan { len } => {
                let n = self.blocks_made;
                self.blocks_made += 1;
                let h = self.sut().rx().append(&payload(n, *len)).unwrap();
                self.orphans.insert(h.lsn());
            }
            Op::Allocate(when) => {
                let t = match when {
                    When::Next(k) => {
                        self.clock += k * INTERVAL_MS;
                        self.clock
                    }
                    When::Newest => self.newest_asked.max(1),
                    When::Back(n) => self.clock.saturating_sub(n * INTERVAL_MS / 2).max(1),
                };
                self.newest_asked = self.newest_asked.max(t);
                let got = self.sut().tracker().allocate_blocks_to_batch(t).unwrap();
                let want = self.model.allocate(t);
                if !self.model.allocated.contains_key(&t) {
                    covered_stat(|c| c.refused_allocations += 1);
                }
                assert_eq!(got, want, "allocate_blocks_to_batch({t})");
                assert_eq!(
                    self.sut().tracker().batch(t).unwrap().as_ref(),
                    self.model.allocated.get(&t)
                );
            }
            Op::Commit(sel) => {
                let c = self.candidate_times();
                let t = c[sel % c.len()];
                self.sut().tracker().commit_batch(t).unwrap();
                self.model.commit(t);
                assert_eq!(
                    self.sut().tracker().is_committed(t).unwrap(),
                    self.model.committed.contains(&t)
                );
            }
            Op::Cleanup { sel, receiver_log } => {
                let c = self.candidate_times();
                let before = c[sel % c.len()];
                self.sut().tracker().cleanup(before).unwrap();
                self.model.cleanup(before);
                if *receiver_log {
                    let sut = self.sut();
                    sut.tracker().cleanup_receiver_log(sut.rx()).unwrap();
                    self.check_blocks_readable();
                }
            }
            Op::Snapshot { retire } => {
                let (state, lsn) = self.sut().tracker().snapshot().unwrap();
                self.snaps.push((state, lsn));
                if let Some(sel) = retire {
                    // An earlier snapshot: the journal before it may go.
                    let earlier = self.snaps.len() - 1;
                    if earlier > 0 {
                        let covered = self.snaps[sel % earlier].1;
                        self.sut().tracker().retire_journal(covered).unwrap();
                        self.retired = self.retired.max(covered);
                        self.check_journal_kept();
                    }
                }
            }
            Op::Checkpoint { pending_extra } => self.checkpoint(*pending_extra),
            Op::Crash { via_context, snap } => self.crash(*via_context, *snap),
        }
        self.check_live_state("after an operation");
    }

    fn checkpoint(&mut self, pending_extra: bool) {
        if self.clock == 0 {
            // No batch time yet: a checkpoint needs one.
            return;
        }
        let time = self.clock;
        let (state, lsn) = self.sut().tracker().snapshot().unwrap();
        let mut pending: Vec<u64> = self
            .model
            .allocated
            .keys()
            .copied()
            .filter(|t| !self.model.committed.contains(t))
            .collect();
        if pending_extra && !self.model.allocated.contains_key(&time) {
            // Generated, not yet allocated when the checkpoint was taken.
            pending.push(time);
        }
        let offsets = BTreeMap::from([
            ("blocks".to_string(), self.blocks_made.to_string()),
            ("lsn".to_string(), lsn.to_string()),
        ]);
        let graph_version = match self.sut.as_mut().expect("open") {
            Sut::Ctx(ctx) => {
                ctx.checkpoint(streamwal::CheckpointAt {
                    batch_time: time,
                    pending_batches: pending.clone(),
                    source_offsets: offsets.clone(),
                })
                .unwrap();
                ctx.graph_version
            }
            Sut::Parts(p) => {
                let g = graph();
                let ckpt = Checkpoint {
                    batch_time: time,
                    batch_interval_ms: INTERVAL_MS,
                    graph: &g,
                    graph_version: STORE_GRAPH_VERSION,
                    pending_batches: pending.clone(),
                    journal_lsn: lsn,
                    tracker: state.clone(),
                    source_offsets: offsets.clone(),
                };
                p.store.write(&ckpt).unwrap();
                STORE_GRAPH_VERSION
            }
        };
        self.record_disk_file(time, lsn);
        if matches!(self.sut, Some(Sut::Ctx(_))) {
            // The context retires the journal up to the smallest journal LSN
            // among the checkpoint files kept.
            if let Some(&floor) = self.disk_files.values().min() {
                self.retired = self.retired.max(floor);
            }
        }
        self.check_journal_kept();
        self.snaps.push((state, lsn));
        self.disk = Some(DiskCheckpoint {
            time,
            lsn,
            pending,
            graph_version,
            offsets,
        });
    }

    fn crash(&mut self, via_context: bool, snap: usize) {
        let sut = self.sut.take().expect("open");
        let retired = sut.tracker().journal().stats().segments_removed;
        let purged = sut.rx().stats().segments_removed;
        covered_stat(|c| {
            c.journal_segments_retired += retired;
            c.receiver_segments_purged += purged;
        });
        drop(sut);
        self.recoveries += 1;
        let disk_covers = self.disk.as_ref().map_or(0, |d| d.lsn) >= self.retired;
        if via_context && disk_covers {
            self.recover_context();
        } else {
            self.recover_tracker(snap);
        }
    }

    fn recover_context(&mut self) {
        let no_checkpoint = self.disk.is_none();
        let fresh = no_checkpoint && self.model.events == 0;
        let ctx = streamwal::StreamingContext::builder(&self.ckpt_dir)
            .receiver_log(&self.rx_dir)
            .options(ctx_opts())
            .now_ms(NOW_MS)
            .get_or_create(|| {
                // Fresh, or a journal without a checkpoint: the graph is new.
                assert!(no_checkpoint, "the graph comes from the checkpoint");
                graph()
            })
            .unwrap_or_else(|e| panic!("get_or_create failed: {e}"));
        if fresh {
            assert!(ctx.recovered.is_none(), "nothing journaled: fresh");
            self.sut = Some(Sut::Ctx(Box::new(ctx)));
            self.check_recovered_state();
            return;
        }
        self.sut = Some(Sut::Ctx(Box::new(ctx)));
        self.check_recovered_state();
        let Some(Sut::Ctx(ctx)) = &self.sut else {
            unreachable!()
        };
        let disk = self.disk.as_ref();
        assert_eq!(ctx.graph, graph());
        assert_eq!(ctx.graph_version, disk.map_or(0, |d| d.graph_version));
        assert_eq!(ctx.batch_interval_ms, INTERVAL_MS);
        assert_eq!(
            ctx.report.checkpoint_used,
            disk.map(|d| self.ckpt_dir.join(checkpoint_file_name(d.time)))
        );
        assert!(ctx.report.checkpoints_skipped.is_empty());
        assert_eq!(
            ctx.report.journal_events_replayed,
            self.model.events - disk.map_or(0, |d| d.lsn),
            "events replayed on top of the checkpoint"
        );
        let rec = ctx
            .recovered
            .as_ref()
            .expect("a journal or a checkpoint: not fresh");
        assert_eq!(rec.checkpoint_time, disk.map(|d| d.time));
        assert_eq!(
            rec.source_offsets,
            disk.map(|d| d.offsets.clone()).unwrap_or_default()
        );
        assert_eq!(
            rec.unallocated, self.model.unallocated,
            "recovered unallocated"
        );
        assert_eq!(rec.committed, self.model.committed, "recovered committed");
        let want = self.model.batches_to_run(disk);
        covered_stat(|c| {
            if disk.is_some() {
                c.context_recoveries_from_checkpoint += 1;
            } else {
                c.context_recoveries_from_journal += 1;
            }
            for b in &want {
                if b.blocks.is_some() {
                    c.allocated_batches_to_run += 1;
                } else {
                    c.downtime_batches += 1;
                }
            }
        });
        assert_eq!(rec.batches, want, "batches to run at now = {NOW_MS}");
        assert_eq!(ctx.report.batches_to_run, want.len());
        for b in &rec.batches {
            if let Some(blocks) = &b.blocks {
                let read = ctx.read_batch(blocks).unwrap();
                assert_eq!(read.len(), blocks.len());
                for (stream, list) in blocks {
                    let want: Vec<&Vec<u8>> = list
                        .iter()
                        .map(|x| &self.model.payloads[&x.handle.lsn()])
                        .collect();
                    let got: Vec<&Vec<u8>> = read[stream].iter().collect();
                    assert_eq!(got, want, "batch {} stream {stream} bytes", b.batch_time);
                }
            }
        }
    }

    fn recover_tracker(&mut self, snap: usize) {
        // Any remembered snapshot the journal still covers, or none if the
        // journal was never retired.
        let mut choices: Vec<Option<(TrackerState, u64)>> = self
            .snaps
            .iter()
            .filter(|(_, lsn)| *lsn >= self.retired)
            .cloned()
            .map(Some)
            .collect();
        if self.retired == 0 {
            choices.push(None);
        }
        let chosen = choices[snap % choices.len()].clone();
        let from = chosen.as_ref().map(|s| s.1);
        if from.is_some() {
            covered_stat(|c| c.tracker_recoveries_from_snapshot += 1);
        }
        let tracker = BlockTracker::open(self.ckpt_dir.join(JOURNAL_DIR_NAME), chosen, wal_opts())
            .unwrap_or_else(|e| {
                panic!(
                    "reopening the tracker from snapshot at {from:?} (retired through {}): {e}",
                    self.retired
                )
            });
        assert_eq!(
            tracker.replay_report().events_replayed,
            self.model.events - from.unwrap_or(0)
        );
        let rx = Wal::open(&self.rx_dir, wal_opts()).unwrap();
        let store = CheckpointStore::open(&self.ckpt_dir, ctx_opts().checkpoints).unwrap();
        self.sut = Some(Sut::Parts(Box::new(Parts { rx, tracker, store })));
        self.check_recovered_state();
    }

    fn check_recovered_state(&self) {
        self.check_live_state("after recovery");
        self.check_blocks_readable();
    }

    /// The tracker's state and journal position equal the model's.
    fn check_live_state(&self, when: &str) {
        let (state, lsn) = self.sut().tracker().snapshot().unwrap();
        let m = &self.model;
        assert_eq!(state.unallocated, m.unallocated, "unallocated {when}");
        assert_eq!(state.allocated, m.allocated, "allocated {when}");
        assert_eq!(state.committed, m.committed, "committed {when}");
        assert_eq!(
            state.last_allocated_time,
            m.newest_allocated.unwrap_or(0),
            "newest allocated {when}"
        );
        assert_eq!(
            state.cleaned_before, m.cleaned_before,
            "cleanup mark {when}"
        );
        assert_eq!(state.last_block_lsn, m.max_block_lsn, "newest block {when}");
        assert_eq!(lsn, m.events, "journal LSN {when}: one event per change");
        for b in state.unallocated.values().flatten() {
            assert!(!self.orphans.contains(&b.handle.lsn()));
        }
    }

    /// Every block the tracker knows reads back byte for byte.
    fn check_blocks_readable(&self) {
        let rx = self.sut().rx();
        for b in self.model.live_blocks() {
            let bytes = rx
                .read(&b.handle)
                .unwrap_or_else(|e| panic!("live block at LSN {}: {e}", b.handle.lsn()));
            assert_eq!(bytes, self.model.payloads[&b.handle.lsn()]);
        }
    }

    /// The store's retention, modelled: a write replaces the file of its batch
    /// time; then the oldest files beyond 3 go, never the one just written.
    fn record_disk_file(&mut self, time: u64, lsn: u64) {
        self.disk_files.insert(time, lsn);
        while self.disk_files.len() > 3 {
            let oldest = self
                .disk_files
                .keys()
                .copied()
                .find(|&t| t != time)
                .expect("more than one file");
            self.disk_files.remove(&oldest);
        }
    }

    /// Retiring never removed a journal event after the retired bound.
    fn check_journal_kept(&self) {
        let journal = self.sut().tracker().journal();
        if let Some(first) = journal.first_lsn() {
            assert!(
                first <= self.retired + 1,
                "journal retired through {} but starts at {first}",
                self.retired
            );
        }
    }
}
