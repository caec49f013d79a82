//! The log on object storage against a model of the log: random and fixed
//! operation sequences, on every backend.

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// `append_at` with this time.
    Append(Vec<u8>, u64),
    /// `append_batch_at`; may span several objects (64 KiB batches).
    Batch(Vec<Vec<u8>>, u64),
    /// A payload one byte over the bound: `TooLarge`, no LSN used.
    TooLarge,
    Reopen,
    PurgeLsn(u16),
    PurgeTime(u64),
    Read(u16),
    IterFrom(u16),
    /// An iterator made before an append sees exactly what was there.
    IterThenAppend(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let payload = || proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => (payload(), 0..100u64).prop_map(|(p, t)| Op::Append(p, t)),
        2 => (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20_000), 0..8),
            0..100u64
        )
            .prop_map(|(ps, t)| Op::Batch(ps, t)),
        1 => Just(Op::TooLarge),
        1 => Just(Op::Reopen),
        1 => any::<u16>().prop_map(Op::PurgeLsn),
        1 => (0..120u64).prop_map(Op::PurgeTime),
        2 => any::<u16>().prop_map(Op::Read),
        1 => any::<u16>().prop_map(Op::IterFrom),
        1 => payload().prop_map(Op::IterThenAppend),
    ]
}

/// What the model knows of one record.
#[derive(Debug, Clone)]
struct Rec {
    handle: RecordHandle,
    payload: Vec<u8>,
    time: u64,
}

/// The log as a list of records, and where its retained part starts.
struct Model {
    records: Vec<Rec>,
    first: u64,
    /// The newest object holds no record (a claim after an open), so every
    /// object holding records may be deleted.
    claim_newest: bool,
}

impl Model {
    fn retained(&self) -> impl Iterator<Item = &Rec> {
        self.records.iter().filter(|r| r.handle.lsn() >= self.first)
    }

    /// Retention deletes the oldest objects whose records all qualify,
    /// stopping at the first that does not, never the newest object, and
    /// skipping claims (which hold no records). The new first LSN.
    fn predict_purge(&self, qualifies: impl Fn(&Rec) -> bool) -> u64 {
        let mut groups: Vec<Vec<&Rec>> = Vec::new();
        for r in self.retained() {
            match groups.last_mut() {
                Some(g) if g[0].handle.segment() == r.handle.segment() => g.push(r),
                _ => groups.push(vec![r]),
            }
        }
        let deletable = if self.claim_newest {
            groups.len()
        } else {
            groups.len().saturating_sub(1)
        };
        let removed = groups[..deletable]
            .iter()
            .take_while(|g| g.iter().all(|r| qualifies(r)))
            .count();
        groups
            .get(removed)
            .map_or(self.records.len() as u64 + 1, |g| g[0].handle.lsn())
    }

    fn accept(&mut self, handle: RecordHandle, payload: &[u8], time: u64) {
        assert_eq!(
            handle.lsn(),
            self.records.len() as u64 + 1,
            "LSNs are dense"
        );
        assert_eq!(handle.len() as usize, payload.len());
        self.records.push(Rec {
            handle,
            payload: payload.to_vec(),
            time,
        });
        self.claim_newest = false;
    }

    /// Everything the log shows agrees with the model.
    fn check(&self, wal: &Wal) {
        let next = self.records.len() as u64 + 1;
        assert_eq!(wal.next_lsn(), next);
        let any = self.first < next;
        assert_eq!(wal.first_lsn(), any.then_some(self.first));
        assert_eq!(wal.last_lsn(), any.then_some(next - 1));
        check_iter(wal.iter(), self, self.first);
        for r in &self.records {
            match wal.read(&r.handle) {
                Ok(p) => {
                    assert!(r.handle.lsn() >= self.first, "read a purged record");
                    assert_eq!(p, r.payload);
                }
                Err(Error::NotFound { .. }) => assert!(r.handle.lsn() < self.first),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}

fn check_iter(iter: streamwal::WalIter, m: &Model, from: u64) {
    let got: Vec<(RecordHandle, Vec<u8>)> = iter.collect::<Result<_, _>>().unwrap();
    let want: Vec<(RecordHandle, Vec<u8>)> = m
        .retained()
        .filter(|r| r.handle.lsn() >= from)
        .map(|r| (r.handle, r.payload.clone()))
        .collect();
    assert_eq!(got, want, "iteration from {from}");
}

/// Run `ops` against the log at `sub` and a model of it.
fn run_model(b: &dyn Backend, sub: &str, ops: &[Op]) {
    let mut wal = open(b, sub);
    let mut m = Model {
        records: Vec::new(),
        first: 1,
        claim_newest: true,
    };
    for op in ops {
        match op {
            Op::Append(p, t) => m.accept(wal.append_at(p, *t).unwrap(), p, *t),
            Op::Batch(ps, t) => {
                let hs = wal.append_batch_at(ps, *t).unwrap();
                for (h, p) in hs.into_iter().zip(ps) {
                    m.accept(h, p, *t);
                }
            }
            Op::TooLarge => {
                let big = vec![1u8; (1 << 20) + 1];
                assert!(matches!(wal.append(&big), Err(Error::TooLarge { .. })));
            }
            Op::Reopen => {
                drop(wal);
                wal = open(b, sub);
                let report = wal.recovery_report();
                assert_eq!(report.records, m.retained().count() as u64);
                m.claim_newest = true;
            }
            Op::PurgeLsn(k) => {
                let lsn = u64::from(*k) % (m.records.len() as u64 + 2);
                let first = m.predict_purge(|r| r.handle.lsn() < lsn);
                wal.purge_before_lsn(lsn).unwrap();
                m.first = first.max(m.first);
            }
            Op::PurgeTime(time) => {
                let first = m.predict_purge(|r| r.time < *time);
                wal.purge_before_time(*time).unwrap();
                m.first = first.max(m.first);
            }
            Op::Read(k) => {
                if let Some(r) = m.records.get(*k as usize % m.records.len().max(1)) {
                    match wal.read(&r.handle) {
                        Ok(p) => assert_eq!(p, r.payload),
                        Err(Error::NotFound { .. }) => assert!(r.handle.lsn() < m.first),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            Op::IterFrom(k) => {
                let from = 1 + u64::from(*k) % (m.records.len() as u64 + 2);
                let mut it = wal.iter_from(from);
                if from < m.first {
                    assert!(matches!(it.next(), Some(Err(Error::NotFound { .. }))));
                } else {
                    check_iter(it, &m, from);
                }
            }
            Op::IterThenAppend(p) => {
                let held = wal.iter();
                let h = wal.append_at(p, 0).unwrap();
                check_iter(held, &m, m.first);
                m.accept(h, p, 0);
            }
        }
        m.check(&wal);
    }
    drop(wal);
    let wal = open(b, sub);
    m.check(&wal);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_log_matches_a_model_on_memory(ops in proptest::collection::vec(op(), 1..40)) {
        let b = &backends("olog_model")[0];
        run_model(&**b, "log", &ops);
    }
}

#[test]
fn the_log_matches_a_model_on_every_backend() {
    // Fixed pseudo-random sequences, so the S3 runs are the same every time.
    for seed in [
        0x2545_f491_4f6c_dd1du64,
        0x9e37_79b9_7f4a_7c15,
        0xd1b5_4a32_d192_ed03,
    ] {
        let mut rng = Rng::new(seed);
        let mut next = move || rng.next();
        let ops: Vec<Op> = (0..60)
            .map(|_| match next() % 13 {
                0..=3 => Op::Append(vec![next() as u8; (next() % 300) as usize], next() % 100),
                4 | 5 => Op::Batch(
                    (0..next() % 6)
                        .map(|i| vec![i as u8; (next() % 20_000) as usize])
                        .collect(),
                    next() % 100,
                ),
                6 => Op::Reopen,
                7 => Op::PurgeLsn(next() as u16),
                8 => Op::PurgeTime(next() % 120),
                9 => Op::IterFrom(next() as u16),
                10 => Op::IterThenAppend(vec![7; 10]),
                11 => Op::TooLarge,
                _ => Op::Read(next() as u16),
            })
            .collect();
        for b in backends(&format!("olog_model_{seed:x}")) {
            run_model(&*b, "log", &ops);
        }
    }
}
