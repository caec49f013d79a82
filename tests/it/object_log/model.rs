//! The log on object storage against a model of the log: random and fixed
//! operation sequences, on every backend.

use super::*;
use crate::common::log_model::{LogModel, agrees};

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

/// Run `ops` against the log at `sub` and a model of it.
fn run_model(b: &dyn Backend, sub: &str, ops: &[Op]) {
    let mut wal = open(b, sub);
    let mut m = LogModel::new();
    for op in ops {
        match op {
            Op::Append(p, t) => agrees(m.acknowledge(wal.append_at(p, *t).unwrap(), p, Some(*t))),
            Op::Batch(ps, t) => {
                let hs = wal.append_batch_at(ps, *t).unwrap();
                for (h, p) in hs.into_iter().zip(ps) {
                    agrees(m.acknowledge(h, p, Some(*t)));
                }
            }
            Op::TooLarge => {
                let big = vec![1u8; (1 << 20) + 1];
                assert!(matches!(wal.append(&big), Err(Error::TooLarge { .. })));
            }
            Op::Reopen => {
                drop(wal);
                wal = open(b, sub);
                agrees(m.check_report(wal.recovery_report()));
                // An open claims a new object, which holds no record.
                m.set_tail_empty(true);
            }
            Op::PurgeLsn(k) => {
                let lsn = u64::from(*k) % (m.records().len() as u64 + 2);
                let (first, _) = m.predict_purge(|r| r.handle.lsn() < lsn);
                wal.purge_before_lsn(lsn).unwrap();
                m.purged_before(first);
            }
            Op::PurgeTime(time) => {
                let (first, _) = m.predict_purge(|r| r.time.is_some_and(|t| t < *time));
                wal.purge_before_time(*time).unwrap();
                m.purged_before(first);
            }
            Op::Read(k) => {
                if let Some(r) = m.records().get(*k as usize % m.records().len().max(1)) {
                    agrees(m.check_read(&wal, r));
                }
            }
            Op::IterFrom(k) => {
                let from = 1 + u64::from(*k) % (m.records().len() as u64 + 2);
                agrees(m.check_iter_from(&wal, from));
            }
            Op::IterThenAppend(p) => {
                let held = wal.iter();
                let h = wal.append_at(p, 0).unwrap();
                agrees(m.check_iter(held, m.retained_first(), "iter() made before an append"));
                agrees(m.acknowledge(h, p, Some(0)));
            }
        }
        agrees(m.check(&wal));
    }
    drop(wal);
    let wal = open(b, sub);
    agrees(m.check(&wal));
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
