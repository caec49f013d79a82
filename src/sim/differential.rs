//! A differential check of the WAL on the simulator: an arbitrary sequence
//! of operations (appends, batches, syncs, purges, reopens, crashes, injected
//! faults) runs against the real log, and after every crash or reopen the
//! recovered log is compared with what was acknowledged ([`check_wal`]).
//! Meant for fuzzing (`arbitrary` input) and for property tests.

use super::checkers::{WalEvent, check_wal};
use super::storage::{CrashKind, SimStorage};
use crate::storage::Storage;
use crate::{SyncPolicy, Wal, WalOptions};
use arbitrary::{Arbitrary, Unstructured};
use std::path::Path;
use std::sync::Arc;

/// One operation of [`run_wal_ops`].
#[derive(Debug, Clone, Arbitrary)]
pub enum WalOp {
    /// Append one record of about `len` bytes (capped at 900).
    Append {
        /// Requested payload length.
        len: u16,
    },
    /// Append `count % 4 + 1` records in one batch.
    AppendBatch {
        /// Records in the batch, modulo 4, plus one.
        count: u8,
        /// Requested payload length of each.
        len: u16,
    },
    /// `sync()`; under the relaxed policies this acknowledges what was
    /// appended before it.
    Sync,
    /// `purge_before_lsn(next_lsn - back)`.
    Purge {
        /// How far behind the next LSN the bound is.
        back: u8,
    },
    /// Close (drop) the log and reopen it, no crash.
    Reopen,
    /// Crash: `kind % 3` is a process kill, a clean power loss, or a power
    /// loss with `seed`; then reopen.
    Crash {
        /// Which crash.
        kind: u8,
        /// The power loss's seed.
        seed: u64,
    },
    /// Fail the `nth % 4 + 1`-th file sync from now with EIO (armed only
    /// when `nth % 16 < 4`).
    FailSync {
        /// Which sync.
        nth: u8,
    },
    /// Fail the `nth % 4 + 1`-th write from now with EIO (armed only when
    /// `nth % 16 < 4`).
    FailWrite {
        /// Which write.
        nth: u8,
    },
    /// ENOSPC after `bytes` more bytes (armed only when `bytes % 4 == 0`).
    SpaceLeft {
        /// The budget.
        bytes: u16,
    },
    /// Lift every injected fault.
    ClearFaults,
}

/// Options the differential run opens its log with: small segments and, by
/// `policy % 3`, `Always`, `Never` or `Periodic`.
pub fn differential_options(policy: u8) -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        max_batch_bytes: 4096,
        sync_policy: match policy % 3 {
            0 => SyncPolicy::Always,
            1 => SyncPolicy::Never,
            _ => SyncPolicy::Periodic {
                interval: std::time::Duration::from_secs(3600),
                max_unsynced_bytes: 1500,
            },
        },
        ..WalOptions::default()
    }
}

/// Run `ops` against a log on a fresh [`SimStorage`] opened with
/// [`differential_options`]`(policy)`, checking the WAL promise after every
/// crash and reopen and at the end (after a seeded power loss).
///
/// # Errors
/// The first broken promise, with the index of the operation after which it
/// was found.
pub fn run_wal_ops(policy: u8, ops: &[WalOp]) -> Result<(), String> {
    let dir = Path::new("/diff/wal");
    let opts = differential_options(policy);
    let always = opts.sync_policy == SyncPolicy::Always;
    let mut sim = SimStorage::new();
    let mut events: Vec<WalEvent> = Vec::new();
    let mut unsynced: Vec<WalEvent> = Vec::new();
    let mut next_id = 0u64;
    let mut payload = |len: u16| {
        next_id += 1;
        let mut p = format!("diff-{next_id:08}-").into_bytes();
        p.resize(p.len() + usize::from(len % 900), (next_id % 251) as u8);
        p
    };
    let open = |sim: &SimStorage| {
        Wal::open(
            crate::Location::dir_on(Arc::new(sim.clone()), dir),
            opts.clone(),
        )
    };
    let check = |sim: &SimStorage, events: &[WalEvent], at: usize| -> Result<(), String> {
        let fork = sim.after_crash(CrashKind::ProcessKill);
        let storage: Arc<dyn Storage> = Arc::new(fork);
        check_wal(storage, dir, &opts, events).map_err(|e| format!("after op {at}: {e}"))
    };
    let mut wal = open(&sim).ok();
    for (at, op) in ops.iter().enumerate() {
        match op {
            WalOp::Append { len } => {
                if let Some(w) = &wal {
                    let p = payload(*len);
                    events.push(WalEvent::Appending(p.clone()));
                    if let Ok(handle) = w.append_at(&p, 0) {
                        let acked = WalEvent::Acked { handle, payload: p };
                        if always {
                            events.push(acked);
                        } else {
                            unsynced.push(acked);
                        }
                    }
                }
            }
            WalOp::AppendBatch { count, len } => {
                if let Some(w) = &wal {
                    let ps: Vec<Vec<u8>> = (0..=count % 4).map(|_| payload(*len)).collect();
                    events.extend(ps.iter().cloned().map(WalEvent::Appending));
                    if let Ok(handles) = w.append_batch_at(&ps, 0) {
                        for (handle, p) in handles.into_iter().zip(ps) {
                            let acked = WalEvent::Acked { handle, payload: p };
                            if always {
                                events.push(acked);
                            } else {
                                unsynced.push(acked);
                            }
                        }
                    }
                }
            }
            WalOp::Sync => {
                if let Some(w) = &wal
                    && w.sync().is_ok()
                {
                    events.append(&mut unsynced);
                }
            }
            WalOp::Purge { back } => {
                if let Some(w) = &wal {
                    let before = w.next_lsn().saturating_sub(u64::from(*back)).max(1);
                    events.push(WalEvent::Purging { before_lsn: before });
                    let _ = w.purge_before_lsn(before);
                }
            }
            WalOp::Reopen | WalOp::Crash { .. } => {
                if let Some(w) = wal.take() {
                    // A clean close acknowledges what it synced.
                    if matches!(op, WalOp::Reopen) && w.close().is_ok() {
                        events.append(&mut unsynced);
                    }
                }
                unsynced.clear();
                if let WalOp::Crash { kind, seed } = op {
                    let kind = match kind % 3 {
                        0 => CrashKind::ProcessKill,
                        1 => CrashKind::LoseUnsynced,
                        _ => CrashKind::PowerLoss { seed: *seed },
                    };
                    sim = sim.after_crash(kind);
                } else {
                    sim.clear_faults();
                }
                check(&sim, &events, at)?;
                wal = open(&sim).ok();
                if wal.is_none() {
                    return Err(format!("after op {at}: reopening failed"));
                }
            }
            // Faults are armed one time in four, so most runs make progress.
            WalOp::FailSync { nth } if nth % 16 < 4 => {
                sim.fail_nth_file_sync(u64::from(nth % 4) + 1);
            }
            WalOp::FailWrite { nth } if nth % 16 < 4 => {
                sim.fail_nth_write(u64::from(nth % 4) + 1);
            }
            WalOp::SpaceLeft { bytes } if bytes % 4 == 0 => {
                sim.set_space_left(Some(u64::from(*bytes)));
            }
            WalOp::FailSync { .. } | WalOp::FailWrite { .. } | WalOp::SpaceLeft { .. } => {}
            WalOp::ClearFaults => sim.clear_faults(),
        }
    }
    drop(wal);
    let after = sim.after_crash(CrashKind::PowerLoss {
        seed: ops.len() as u64,
    });
    check(&after, &events, ops.len())
}

/// The fuzz target: decode a policy and up to 64 operations from `data` with
/// `arbitrary`, run them ([`run_wal_ops`]), and panic if a promise broke.
///
/// # Panics
/// On a broken promise (that is the point of a fuzz target).
pub fn wal_differential_target(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(policy) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while ops.len() < 64 {
        match WalOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    if let Err(e) = run_wal_ops(policy, &ops) {
        panic!("WAL differential check failed: {e}\npolicy {policy}, ops {ops:?}");
    }
}
