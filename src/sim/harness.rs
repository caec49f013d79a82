//! The crash harness: run a workload once, crash it after every I/O step,
//! recover, check.

use super::storage::{CrashKind, SimStorage};
use crate::storage::Storage;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variable: seeded power-loss states per crash point, replacing
/// the harness's setting (a longer run: `STREAMWAL_SIM_SEEDS=64`).
pub const ENV_SEEDS: &str = "STREAMWAL_SIM_SEEDS";
/// Environment variable: the base seed every per-state seed derives from.
pub const ENV_SEED: &str = "STREAMWAL_SIM_SEED";
/// Environment variable: replay one crash state, `NAME:POINT` as printed in
/// a failure (the harness named `NAME` checks only that state and prints it).
pub const ENV_REPLAY: &str = "STREAMWAL_SIM_REPLAY";

/// What a workload acknowledged and attempted, each event stamped with the
/// number of I/O steps done when it was recorded.
///
/// A workload records an "attempting" event before a call and an
/// "acknowledged" event after it returned `Ok`; the harness hands the
/// checker of a crash after step `k` exactly the events stamped `<= k`. With
/// concurrent callers a stamp may be later than the true moment, which only
/// makes the check weaker at a few crash points, never wrong.
#[derive(Debug)]
pub struct Recorder<E> {
    sim: SimStorage,
    events: Mutex<Vec<(u64, E)>>,
}

impl<E> Recorder<E> {
    /// A recorder stamping events with the steps of `sim`.
    pub fn new(sim: SimStorage) -> Recorder<E> {
        Recorder {
            sim,
            events: Mutex::new(Vec::new()),
        }
    }

    /// Record `event` now.
    pub fn record(&self, event: E) {
        let step = self.sim.steps();
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((step, event));
    }

    /// The simulated storage the workload runs on.
    pub fn storage(&self) -> &SimStorage {
        &self.sim
    }

    /// Every event recorded so far, with its step stamp.
    pub fn events(&self) -> Vec<(u64, E)>
    where
        E: Clone,
    {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Which crash state of a crash point: how the crash went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateChoice {
    /// [`CrashKind::ProcessKill`].
    Kill,
    /// [`CrashKind::LoseUnsynced`].
    Clean,
    /// [`CrashKind::PowerLoss`] with this seed.
    Seed(u64),
    /// The n-th state of [`SimStorage::power_loss_states`].
    Exhaustive(usize),
}

/// One crash state the harness explored: the crash after I/O step `step`
/// of the workload, how it went, and optionally a second crash during
/// recovery (after recovery step `.0`, a power loss with seed `.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// The workload's I/O steps done before the crash.
    pub step: u64,
    /// How the crash went.
    pub choice: StateChoice,
    /// A crash during the recovery that followed: after that many recovery
    /// steps, then a power loss with that seed.
    pub recovery_crash: Option<(u64, u64)>,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.step)?;
        match self.choice {
            StateChoice::Kill => write!(f, "kill")?,
            StateChoice::Clean => write!(f, "clean")?,
            StateChoice::Seed(s) => write!(f, "s{s}")?,
            StateChoice::Exhaustive(i) => write!(f, "x{i}")?,
        }
        if let Some((j, s)) = self.recovery_crash {
            write!(f, ":r{j}s{s}")?;
        }
        Ok(())
    }
}

impl CrashPoint {
    /// Parse what [`CrashPoint`]'s `Display` prints (`STEP:CHOICE[:rJsSEED]`).
    pub fn parse(s: &str) -> Option<CrashPoint> {
        let mut parts = s.split(':');
        let step = parts.next()?.parse().ok()?;
        let choice = match parts.next()? {
            "kill" => StateChoice::Kill,
            "clean" => StateChoice::Clean,
            c if c.starts_with('s') => StateChoice::Seed(c[1..].parse().ok()?),
            c if c.starts_with('x') => StateChoice::Exhaustive(c[1..].parse().ok()?),
            _ => return None,
        };
        let recovery_crash = match parts.next() {
            None => None,
            Some(r) => {
                let (j, s) = r.strip_prefix('r')?.split_once('s')?;
                Some((j.parse().ok()?, s.parse().ok()?))
            }
        };
        Some(CrashPoint {
            step,
            choice,
            recovery_crash,
        })
    }
}

/// The first failure a harness found.
#[derive(Debug, Clone)]
pub struct CrashFailure {
    /// The crash state.
    pub point: CrashPoint,
    /// What the checker said (or the panic message).
    pub message: String,
    /// A shell command that replays exactly this state.
    pub replay: String,
}

/// What a harness run explored.
#[derive(Debug, Clone)]
pub struct CrashReport {
    /// The harness's name.
    pub name: String,
    /// I/O steps of the workload (crash points are 0 ..= steps).
    pub steps: u64,
    /// Crash states recovered and checked.
    pub states: u64,
    /// Of those, states crashed a second time during recovery.
    pub recovery_crash_states: u64,
    /// Crash points whose exhaustive enumeration hit the limit (0 when the
    /// enumeration is off or was complete everywhere).
    pub exhaustive_truncated_points: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The first failure (smallest step), if any.
    pub failure: Option<CrashFailure>,
}

impl CrashReport {
    /// Panic with the failure and its replay command if there is one.
    /// Returns the report for chaining.
    ///
    /// # Panics
    /// If the run found a failure.
    pub fn assert_passed(&self) -> &CrashReport {
        if let Some(f) = &self.failure {
            panic!(
                "{}: crash state {} failed after exploring {} states: {}\nreplay: {}",
                self.name, f.point, self.states, f.message, f.replay
            );
        }
        self
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} I/O steps, {} crash states ({} with a crash during recovery{}) in {:.2?}, {}",
            self.name,
            self.steps,
            self.states,
            self.recovery_crash_states,
            if self.exhaustive_truncated_points > 0 {
                format!(
                    "; exhaustive enumeration cut at the limit at {} crash points",
                    self.exhaustive_truncated_points
                )
            } else {
                String::new()
            },
            self.elapsed,
            match &self.failure {
                None => "all passed".to_string(),
                Some(fl) => format!("FAILED at {}: {}", fl.point, fl.message),
            }
        )
    }
}

/// Crash-tests a workload: runs it once on a fresh [`SimStorage`] while
/// recording the state after every I/O step, then for every step `k`
/// (0 ..= the number of steps) takes the state after step `k` and, for each
/// crash of it (a process kill, a clean power loss, `seeds` seeded power
/// losses, and up to `exhaustive` enumerated power-loss states), runs the
/// checker on the result with the events recorded by then. States with
/// nothing unsynced are checked once. Every `recovery_crash_every`-th crash
/// point is also crashed again during its recovery: after each recovery
/// step in turn, followed by a seeded power loss, and checked again.
///
/// The first failure carries a replay command ([`ENV_REPLAY`]). The checker
/// returns `Err(message)` or panics to fail; panics are caught and reported.
///
/// The workload runs once, so concurrency inside it is real (its I/O steps
/// serialize on the simulator's lock and the snapshots are of that run);
/// replaying re-runs it, which reproduces the same state only if the
/// workload is deterministic.
#[derive(Debug, Clone)]
pub struct CrashHarness {
    name: String,
    seeds: u64,
    process_kill: bool,
    exhaustive: usize,
    recovery_crash_every: u64,
    base_seed: u64,
    threads: usize,
}

fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.rotate_left(21))
        .wrapping_add(c.rotate_left(42))
        .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl CrashHarness {
    /// A harness named `name` (used in reports and the replay command):
    /// 4 seeded power losses per crash point (or [`ENV_SEEDS`]), a process
    /// kill and a clean power loss, no exhaustive enumeration, a crash
    /// during recovery at every 10th crash point, base seed 1 (or
    /// [`ENV_SEED`]), as many threads as cores (at most 4).
    pub fn new(name: impl Into<String>) -> CrashHarness {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        CrashHarness {
            name: name.into(),
            seeds: env_u64(ENV_SEEDS).unwrap_or(4),
            process_kill: true,
            exhaustive: 0,
            recovery_crash_every: 10,
            base_seed: env_u64(ENV_SEED).unwrap_or(1),
            threads,
        }
    }

    /// Seeded power-loss states per crash point ([`ENV_SEEDS`] overrides).
    pub fn seeds(mut self, n: u64) -> Self {
        if std::env::var_os(ENV_SEEDS).is_none() {
            self.seeds = n;
        }
        self
    }

    /// Also enumerate up to `limit` power-loss states exhaustively per crash
    /// point (0: off).
    pub fn exhaustive(mut self, limit: usize) -> Self {
        self.exhaustive = limit;
        self
    }

    /// Crash again during recovery at every `n`-th crash point (0: never).
    pub fn recovery_crash_every(mut self, n: u64) -> Self {
        self.recovery_crash_every = n;
        self
    }

    /// Whether to include a process kill per crash point (default yes).
    pub fn process_kill(mut self, on: bool) -> Self {
        self.process_kill = on;
        self
    }

    /// Worker threads checking crash points (default: cores, at most 4).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Run `workload` once on a fresh simulated storage, then check every
    /// crash state with `checker`; see [`CrashHarness`].
    ///
    /// `workload` gets the storage (open the crate's types on it through
    /// `Location::dir_on(storage, path)`) and a [`Recorder`] for what it
    /// attempted and what was acknowledged; it should stop at the first error.
    /// `checker` gets a storage holding a crashed state and the events
    /// recorded up to the crash; it recovers and returns `Err` if a promise
    /// is broken.
    pub fn run<E, W, C>(&self, workload: W, checker: C) -> CrashReport
    where
        E: Clone + Send + Sync,
        W: Fn(Arc<dyn Storage>, &Recorder<E>),
        C: Fn(Arc<dyn Storage>, &[E]) -> Result<(), String> + Sync,
    {
        let started = Instant::now();
        let sim = SimStorage::new();
        sim.record_steps();
        let rec = Recorder::new(sim.clone());
        workload(Arc::new(sim.clone()), &rec);
        let steps = sim.steps();
        let events = rec.events();
        let replay_only = std::env::var(ENV_REPLAY).ok().and_then(|v| {
            let (name, point) = v.split_once(':')?;
            (name == self.name).then(|| CrashPoint::parse(point))?
        });

        let states = AtomicU64::new(0);
        let recovery_states = AtomicU64::new(0);
        let truncated_points = AtomicU64::new(0);
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let failures: Mutex<Vec<(CrashPoint, String)>> = Mutex::new(Vec::new());

        let check_point = |k: u64| {
            let Some(alive) = sim.state_after_step(k) else {
                return;
            };
            let evs: Vec<E> = events
                .iter()
                .filter(|(s, _)| *s <= k)
                .map(|(_, e)| e.clone())
                .collect();
            let fail = |point: CrashPoint, msg: String| {
                stop.store(true, Ordering::SeqCst);
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((point, msg));
            };
            let mut choices = Vec::new();
            if !alive.has_unsynced() {
                choices.push(StateChoice::Clean);
            } else {
                if self.process_kill {
                    choices.push(StateChoice::Kill);
                }
                choices.push(StateChoice::Clean);
                for i in 0..self.seeds {
                    choices.push(StateChoice::Seed(mix(self.base_seed, k, i)));
                }
                for i in 0..self.exhaustive {
                    choices.push(StateChoice::Exhaustive(i));
                }
            }
            let mut exhaustive =
                (self.exhaustive > 0).then(|| alive.power_loss_states(self.exhaustive));
            let crash_recovery =
                self.recovery_crash_every > 0 && k.is_multiple_of(self.recovery_crash_every);
            let recovery_choice = choices
                .iter()
                .copied()
                .find(|c| matches!(c, StateChoice::Seed(_)))
                .unwrap_or(StateChoice::Clean);
            for choice in choices {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let crashed = match choice {
                    StateChoice::Kill => alive.after_crash(CrashKind::ProcessKill),
                    StateChoice::Clean => alive.after_crash(CrashKind::LoseUnsynced),
                    StateChoice::Seed(seed) => alive.after_crash(CrashKind::PowerLoss { seed }),
                    StateChoice::Exhaustive(_) => {
                        match exhaustive.as_mut().and_then(Iterator::next) {
                            Some(s) => s,
                            None => continue,
                        }
                    }
                };
                let point = CrashPoint {
                    step: k,
                    choice,
                    recovery_crash: None,
                };
                let pristine = crashed.after_crash(CrashKind::ProcessKill);
                states.fetch_add(1, Ordering::Relaxed);
                if let Err(msg) = run_checker(&checker, &crashed, &evs) {
                    fail(point, msg);
                    return;
                }
                if !(crash_recovery && choice == recovery_choice) {
                    continue;
                }
                let recovery_steps = crashed.steps();
                for j in 0..recovery_steps {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let seed = mix(self.base_seed ^ 0xC0FFEE, k, j);
                    let again = crash_during_recovery(&checker, &pristine, &evs, j, seed);
                    states.fetch_add(1, Ordering::Relaxed);
                    recovery_states.fetch_add(1, Ordering::Relaxed);
                    if let Err(msg) = run_checker(&checker, &again, &evs) {
                        fail(
                            CrashPoint {
                                recovery_crash: Some((j, seed)),
                                ..point
                            },
                            msg,
                        );
                        return;
                    }
                }
            }
            if exhaustive.is_some_and(|e| e.truncated()) {
                truncated_points.fetch_add(1, Ordering::Relaxed);
            }
        };

        if let Some(point) = replay_only {
            eprintln!("{}: replaying crash state {point}", self.name);
            if let Some(msg) = self.replay_one(&sim, &events, point, &checker) {
                failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((point, msg));
            }
            states.store(1, Ordering::Relaxed);
        } else {
            std::thread::scope(|scope| {
                for _ in 0..self.threads {
                    scope.spawn(|| {
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            let k = next.fetch_add(1, Ordering::SeqCst);
                            if k > steps {
                                break;
                            }
                            check_point(k);
                        }
                    });
                }
            });
        }

        let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
        failures.sort_by_key(|(p, _)| p.step);
        let failure = failures
            .into_iter()
            .next()
            .map(|(point, message)| CrashFailure {
                point,
                message,
                replay: self.replay_command(point),
            });
        CrashReport {
            name: self.name.clone(),
            steps,
            states: states.into_inner(),
            recovery_crash_states: recovery_states.into_inner(),
            exhaustive_truncated_points: truncated_points.into_inner(),
            elapsed: started.elapsed(),
            failure,
        }
    }

    fn replay_one<E, C>(
        &self,
        sim: &SimStorage,
        events: &[(u64, E)],
        point: CrashPoint,
        checker: &C,
    ) -> Option<String>
    where
        E: Clone,
        C: Fn(Arc<dyn Storage>, &[E]) -> Result<(), String>,
    {
        let Some(alive) = sim.state_after_step(point.step) else {
            return Some(format!("the workload has no step {}", point.step));
        };
        let evs: Vec<E> = events
            .iter()
            .filter(|(s, _)| *s <= point.step)
            .map(|(_, e)| e.clone())
            .collect();
        let crashed = match point.choice {
            StateChoice::Kill => alive.after_crash(CrashKind::ProcessKill),
            StateChoice::Clean => alive.after_crash(CrashKind::LoseUnsynced),
            StateChoice::Seed(seed) => alive.after_crash(CrashKind::PowerLoss { seed }),
            StateChoice::Exhaustive(i) => alive.power_loss_states(i.saturating_add(1)).nth(i)?,
        };
        eprintln!("{}: files after the crash:", self.name);
        for p in crashed.paths() {
            let len = crashed.read_file(&p).map(|b| b.len());
            eprintln!("  {} {:?}", p.display(), len);
        }
        let target = match point.recovery_crash {
            None => crashed,
            Some((j, seed)) => {
                let pristine = crashed.after_crash(CrashKind::ProcessKill);
                crash_during_recovery(checker, &pristine, &evs, j, seed)
            }
        };
        run_checker(checker, &target, &evs).err()
    }

    fn replay_command(&self, point: CrashPoint) -> String {
        let test = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .map(str::to_string)
            .unwrap_or_default();
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem()?.to_str().map(str::to_string))
            .map(|s| match s.rsplit_once('-') {
                Some((stem, _hash)) => stem.to_string(),
                None => s,
            })
            .unwrap_or_default();
        format!(
            "{ENV_REPLAY}='{}:{point}' cargo test --all-features --test {binary} -- --exact {test} --nocapture",
            self.name
        )
    }
}

/// Run the checker on a fork of `state`, crash it after `j` recovery steps,
/// then a power loss with `seed`; return the result.
fn crash_during_recovery<E, C>(
    checker: &C,
    pristine: &SimStorage,
    evs: &[E],
    j: u64,
    seed: u64,
) -> SimStorage
where
    C: Fn(Arc<dyn Storage>, &[E]) -> Result<(), String>,
{
    let first = pristine.after_crash(CrashKind::ProcessKill);
    first.stop_after_steps(Some(j));
    // Its verdict does not matter: the process dies in the middle.
    let _ = catch_unwind(AssertUnwindSafe(|| checker(Arc::new(first.clone()), evs)));
    first.after_crash(CrashKind::PowerLoss { seed })
}

fn run_checker<E, C>(checker: &C, state: &SimStorage, evs: &[E]) -> Result<(), String>
where
    C: Fn(Arc<dyn Storage>, &[E]) -> Result<(), String>,
{
    match catch_unwind(AssertUnwindSafe(|| checker(Arc::new(state.clone()), evs))) {
        Ok(r) => r,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .map_or_else(
                || "the checker panicked".to_string(),
                |m| format!("panic: {m}"),
            )),
    }
}
