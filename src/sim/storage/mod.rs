//! The simulated file system: a [`Storage`](crate::storage::Storage) that
//! knows what is durable.
//!
//! This module holds the public types and [`SimStorage`]'s own controls
//! (faults, recording, crashes, inspection); `state` the file system state
//! a snapshot or a crash copies; `crash` what a crash leaves of it; `seam`
//! the `Storage` and `StorageFile` implementations.

mod crash;
mod seam;
mod state;
#[cfg(test)]
mod tests;

pub use crash::PowerLossStates;

use crash::{Seeded, Zeros, materialize};
use state::{FsState, Inode, Node, is_root};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The sector size the simulator tears writes at.
pub const SECTOR_BYTES: u64 = 512;

/// What kind of crash [`SimStorage::after_crash`] simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashKind {
    /// A process kill: the page cache survives, so every write, creation,
    /// rename and removal that returned is still there (but still not
    /// durable: a later power loss may lose it).
    ProcessKill,
    /// A power loss that loses every unsynced change cleanly: files hold
    /// exactly their last synced contents and directories their last synced
    /// entries.
    LoseUnsynced,
    /// A power loss whose damage `seed` chooses: every unsynced write (per
    /// 512-byte sector piece) is dropped, kept, zero-filled (past the
    /// durable size; an overwrite in place keeps its old bytes instead) or
    /// torn inside the sector; kept pieces land independently of program
    /// order; a file's
    /// size may land before its data (the gap reads as zeros or garbage); an
    /// unsynced `set_len` may be lost while later writes persist; every
    /// unsynced directory change (creation, rename, removal) is kept or
    /// reverted independently.
    PowerLoss {
        /// Chooses every fate; the same seed on the same state gives the same
        /// result.
        seed: u64,
    },
}

/// Counters of a [`SimStorage`], from [`SimStorage::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Mutating I/O steps performed (every write, `set_len`, file or directory
    /// sync, creation, rename, removal, directory creation), failed ones
    /// included. Reads, listings and locks are not steps.
    pub steps: u64,
    /// `write_at` calls.
    pub writes: u64,
    /// Bytes passed to `write_at` (what was accepted).
    pub bytes_written: u64,
    /// File syncs (`sync_data` + `sync_all`).
    pub file_syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
    /// Operations failed by injected faults.
    pub injected_failures: u64,
    /// `allocate` calls (preallocation without writing zeros).
    pub allocations: u64,
}

#[derive(Debug, Default)]
struct Faults {
    fail_write_at: u64,
    short_write_at: u64,
    fail_file_sync_at: u64,
    fail_dir_sync_at: u64,
    space_left: Option<u64>,
    stop_after_step: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    fs: FsState,
    stats: SimStats,
    faults: Faults,
    stopped: bool,
    generation: u64,
    locks: BTreeSet<PathBuf>,
    recording: Option<Vec<FsState>>,
}

/// A simulated file system for crash testing (feature `sim`).
///
/// It implements the crate's [`Storage`](crate::storage::Storage) seam in
/// memory, so the real [`crate::Wal`],
/// [`crate::checkpoint::CheckpointStore`] and
/// [`crate::tracker::BlockTracker`] run on it unchanged through their
/// constructors, given a `Location::dir_on(storage, path)`. For every file it keeps what the process
/// sees (the page cache) and what is durable, plus the list of changes since
/// the last sync; for the namespace it keeps the live entries, the durable
/// entries and the directory changes not yet made durable by
/// [`Storage::sync_dir`](crate::storage::Storage::sync_dir). `sync_data`
/// and `sync_all` make a file's contents and size durable; `sync_dir` makes
/// a directory's entries durable.
///
/// [`SimStorage::after_crash`] returns the state a crash leaves, following
/// the failure model of `docs/RELIABILITY.md`; the choices a power loss makes
/// are a pure function of the seed and the state, so a failing case replays.
/// [`SimStorage::power_loss_states`] enumerates them all for small cases.
///
/// Faults: [`SimStorage::fail_nth_write`], [`SimStorage::short_nth_write`],
/// [`SimStorage::fail_nth_file_sync`] (a failed sync marks the pages clean
/// without writing them, as Linux does), [`SimStorage::fail_nth_dir_sync`],
/// [`SimStorage::set_space_left`] (ENOSPC), and
/// [`SimStorage::stop_after_steps`] (the process dies: every later mutating
/// call fails).
///
/// Races: [`SimStorage::pause_next_file_sync`] holds one file sync in flight
/// until [`SimStorage::resume_sync`], so a test can make an interleaving
/// (e.g. appenders queuing behind a group-commit leader) deterministic.
///
/// Cloning gives another handle on the same file system. All operations
/// serialize on one lock, so the I/O steps of concurrent callers have a
/// well-defined order. Paths are plain keys: the root (and a relative path's
/// empty parent) always exists; everything else must be created. Renaming a
/// directory is not supported (the crate never does it).
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    inner: Arc<Mutex<Inner>>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

/// The sync gate: lets a test hold one file sync in flight.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Gate {
    #[default]
    Open,
    /// The next file sync will block.
    Armed,
    /// A file sync is blocked, waiting for `resume_sync`.
    Holding,
    /// Released; the blocked sync goes on.
    Released,
}

fn eio(msg: &str) -> io::Error {
    io::Error::other(format!("simulated: {msg}"))
}

fn not_found() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "simulated: no such file or directory",
    )
}

impl SimStorage {
    /// An empty file system.
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn from_state(fs: FsState) -> SimStorage {
        SimStorage {
            inner: Arc::new(Mutex::new(Inner {
                fs,
                ..Inner::default()
            })),
            gate: Arc::default(),
        }
    }

    /// Make the next file sync block before it takes effect (and before it
    /// counts as a step) until [`SimStorage::resume_sync`], so a test can
    /// run other threads while one sync is in flight (e.g. appenders joining
    /// the next group-commit batch), deterministically.
    pub fn pause_next_file_sync(&self) {
        let (m, _) = &*self.gate;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = Gate::Armed;
    }

    /// Block until a file sync is held by [`SimStorage::pause_next_file_sync`].
    pub fn wait_until_sync_paused(&self) {
        let (m, c) = &*self.gate;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        while *g != Gate::Holding {
            g = c.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Let the held file sync go on (or disarm a pause not yet reached).
    pub fn resume_sync(&self) {
        let (m, c) = &*self.gate;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        *g = if *g == Gate::Holding {
            Gate::Released
        } else {
            Gate::Open
        };
        c.notify_all();
    }

    fn gate_file_sync(&self) {
        let (m, c) = &*self.gate;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        if *g != Gate::Armed {
            return;
        }
        *g = Gate::Holding;
        c.notify_all();
        while *g != Gate::Released {
            g = c.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        *g = Gate::Open;
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Mutating I/O steps so far (see [`SimStats::steps`]).
    pub fn steps(&self) -> u64 {
        self.lock().stats.steps
    }

    /// Fail the `n`-th `write_at` from now (1 = the next) with EIO, writing
    /// nothing. 0 cancels.
    pub fn fail_nth_write(&self, n: u64) {
        let mut g = self.lock();
        g.faults.fail_write_at = if n == 0 { 0 } else { g.stats.writes + n };
    }

    /// Make the `n`-th `write_at` from now a short write: only the first half
    /// of its bytes reach the page cache, then it fails with EIO. 0 cancels.
    pub fn short_nth_write(&self, n: u64) {
        let mut g = self.lock();
        g.faults.short_write_at = if n == 0 { 0 } else { g.stats.writes + n };
    }

    /// Fail the `n`-th file sync (`sync_data` or `sync_all`) from now with
    /// EIO. Like Linux after a writeback error, the file's dirty pages are
    /// marked clean without being written: the process still reads the new
    /// bytes, a power loss loses them, and the next sync succeeds. 0 cancels.
    pub fn fail_nth_file_sync(&self, n: u64) {
        let mut g = self.lock();
        g.faults.fail_file_sync_at = if n == 0 { 0 } else { g.stats.file_syncs + n };
    }

    /// Fail the `n`-th directory sync from now with EIO, making nothing
    /// durable. 0 cancels.
    pub fn fail_nth_dir_sync(&self, n: u64) {
        let mut g = self.lock();
        g.faults.fail_dir_sync_at = if n == 0 { 0 } else { g.stats.dir_syncs + n };
    }

    /// Allow `bytes` more bytes of writes, then fail with ENOSPC
    /// (`io::ErrorKind::StorageFull`); the write that crosses the limit
    /// writes the prefix that fits. `None` lifts the limit. Every byte passed
    /// to `write_at` counts, overwrites included.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.lock().faults.space_left = bytes;
    }

    /// Let `n` more mutating steps happen, then stop the "process": every
    /// later mutating call fails with EIO and changes nothing, as if the
    /// process had died right after step `n` (reads still work). `None`
    /// lifts it.
    pub fn stop_after_steps(&self, n: Option<u64>) {
        let mut g = self.lock();
        g.faults.stop_after_step = n.map(|n| g.stats.steps + n);
        g.stopped = false;
    }

    /// Lift every injected fault (including a stop).
    pub fn clear_faults(&self) {
        let mut g = self.lock();
        g.faults = Faults::default();
        g.stopped = false;
    }

    /// Start keeping a snapshot of the state after every mutating step (and
    /// of the state now, as step [`SimStorage::steps`]), for
    /// [`SimStorage::state_after_step`]. Snapshots share unchanged file
    /// contents, so they cost about one copy of each file written per step.
    pub fn record_steps(&self) {
        let mut g = self.lock();
        let now = g.fs.clone();
        let mut snaps = Vec::new();
        // Index by absolute step: pad earlier steps with the current state.
        for _ in 0..=g.stats.steps {
            snaps.push(now.clone());
        }
        g.recording = Some(snaps);
    }

    /// The state right after mutating step `step` (0: before the first) as
    /// a new, independent storage whose process is still alive (nothing
    /// lost yet); pass it to [`SimStorage::after_crash`]. Requires
    /// [`SimStorage::record_steps`]; `None` if not recording or the step has
    /// not happened.
    pub fn state_after_step(&self, step: u64) -> Option<SimStorage> {
        let g = self.lock();
        let snaps = g.recording.as_ref()?;
        let fs = snaps.get(usize::try_from(step).ok()?)?.clone();
        Some(SimStorage::from_state(fs))
    }

    /// True if anything is not durable: a file with unsynced changes (or
    /// pages a failed sync dropped) or a directory change not yet synced.
    pub fn has_unsynced(&self) -> bool {
        let g = self.lock();
        !g.fs.meta.is_empty()
            || g.fs.live != g.fs.durable
            || g.fs
                .inodes
                .values()
                .any(|i| !i.pending.is_empty() || !Arc::ptr_eq(&i.cache, &i.durable))
    }

    /// The state a crash of `kind` leaves, as a new, independent storage
    /// with no open files and no locks. This storage is unchanged.
    pub fn after_crash(&self, kind: CrashKind) -> SimStorage {
        let g = self.lock();
        let fs = match kind {
            CrashKind::ProcessKill => g.fs.clone(),
            CrashKind::LoseUnsynced => materialize(&g.fs, &mut Zeros),
            CrashKind::PowerLoss { seed } => materialize(&g.fs, &mut Seeded::new(seed)),
        };
        SimStorage::from_state(fs)
    }

    /// Crash in place: replace this file system's state with what a crash
    /// of `kind` leaves. Files opened before fail every later call with
    /// EIO (their process is gone), locks are released, faults and
    /// recording are cleared; counters keep counting.
    pub fn crash(&self, kind: CrashKind) {
        let after = self.after_crash(kind);
        let fs = std::mem::take(&mut after.lock().fs);
        let mut g = self.lock();
        g.fs = fs;
        g.generation += 1;
        g.locks.clear();
        g.faults = Faults::default();
        g.stopped = false;
        g.recording = None;
    }

    /// Every state a power loss can leave from the current state, enumerated
    /// exhaustively (each choice the seeded mode makes at random, in turn),
    /// up to `limit` states. The first is [`CrashKind::LoseUnsynced`]. For
    /// small cases: the count grows exponentially with the unsynced changes.
    pub fn power_loss_states(&self, limit: usize) -> PowerLossStates {
        PowerLossStates {
            fs: self.lock().fs.clone(),
            next: Some(Vec::new()),
            limit,
            produced: 0,
        }
    }

    /// The bytes of the file at `path` as the process sees them.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let g = self.lock();
        match g.fs.live.get(path)? {
            Node::File(ino) => g.fs.inodes.get(ino).map(|i| i.cache.to_vec()),
            Node::Dir => None,
        }
    }

    /// Replace the contents of the file at `path`, durably (as bit rot or a
    /// hostile edit would), creating it and its directories durably if
    /// needed. Not a step.
    pub fn put_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut g = self.lock();
        let fs = &mut g.fs;
        for a in path.ancestors().skip(1) {
            if !is_root(a) {
                fs.live.insert(a.to_path_buf(), Node::Dir);
                fs.durable.insert(a.to_path_buf(), Node::Dir);
            }
        }
        let ino = match fs.live.get(path) {
            Some(Node::File(ino)) => *ino,
            _ => {
                fs.next_ino += 1;
                let ino = fs.next_ino;
                fs.live.insert(path.to_path_buf(), Node::File(ino));
                fs.durable.insert(path.to_path_buf(), Node::File(ino));
                ino
            }
        };
        let data = Arc::new(bytes);
        fs.inodes.insert(
            ino,
            Inode {
                cache: data.clone(),
                durable: data,
                pending: Arc::default(),
                diverged: false,
            },
        );
    }

    /// The paths of every file and directory the process sees, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().fs.live.keys().cloned().collect()
    }

    /// Start a mutating step: fail if the process is stopped; count it.
    fn step(g: &mut Inner, generation: Option<u64>) -> io::Result<()> {
        if generation.is_some_and(|gen_| gen_ != g.generation) {
            return Err(eio("file handle from before a crash"));
        }
        if g.stopped {
            return Err(eio("process stopped (crash point reached)"));
        }
        if let Some(at) = g.faults.stop_after_step
            && g.stats.steps >= at
        {
            g.stopped = true;
            return Err(eio("process stopped (crash point reached)"));
        }
        g.stats.steps += 1;
        Ok(())
    }

    /// End a mutating step: keep a snapshot if recording.
    fn stepped(g: &mut Inner) {
        if let Some(snaps) = g.recording.as_mut() {
            snaps.push(g.fs.clone());
        }
    }
}
