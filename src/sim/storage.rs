//! The simulated file system: a [`Storage`] that knows what is durable.

use crate::storage::{DirEntry, DirLock, EntryType, OpenMode, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Arc<[u8]> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What the process sees.
    cache: Arc<Vec<u8>>,
    /// What survives a power loss for sure.
    durable: Arc<Vec<u8>>,
    /// Changes since the last sync, in program order.
    pending: Arc<Vec<Pending>>,
    /// A failed sync dropped pages: `durable` is not `cache` minus `pending`.
    diverged: bool,
}

#[derive(Debug, Clone)]
enum MetaOp {
    Create {
        path: PathBuf,
        node: Node,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        node: Node,
    },
    Remove {
        path: PathBuf,
    },
}

/// The part of the state a snapshot or a crash copies.
#[derive(Debug, Clone, Default)]
struct FsState {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// The namespace the process sees.
    live: BTreeMap<PathBuf, Node>,
    /// The namespace that survives a power loss for sure.
    durable: BTreeMap<PathBuf, Node>,
    /// Directory changes not yet made durable, in program order.
    meta: Vec<MetaOp>,
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
/// It implements the crate's [`Storage`] seam in memory, so the real
/// [`crate::Wal`], [`crate::checkpoint::CheckpointStore`] and
/// [`crate::tracker::BlockTracker`] run on it unchanged through their
/// `open_with_storage` constructors. For every file it keeps what the process
/// sees (the page cache) and what is durable, plus the list of changes since
/// the last sync; for the namespace it keeps the live entries, the durable
/// entries and the directory changes not yet made durable by
/// [`Storage::sync_dir`]. `sync_data` and `sync_all` make a file's contents
/// and size durable; `sync_dir` makes a directory's entries durable.
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

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p.parent().is_none()
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

fn dir_exists(ns: &BTreeMap<PathBuf, Node>, p: &Path) -> bool {
    is_root(p) || ns.get(p) == Some(&Node::Dir)
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

/// Chooses among `n` alternatives; `0` is always "lose the change".
trait Chooser {
    fn pick(&mut self, n: usize) -> usize;
}

struct Zeros;

impl Chooser for Zeros {
    fn pick(&mut self, _n: usize) -> usize {
        0
    }
}

/// splitmix64.
struct Seeded(u64);

impl Seeded {
    fn new(seed: u64) -> Seeded {
        Seeded(seed ^ 0x005E_ED0F_C0A5_4ED5)
    }
}

impl Chooser for Seeded {
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if n <= 1 { 0 } else { (z % n as u64) as usize }
    }
}

/// Replays a prefix of choices, then picks 0; records what it was asked.
struct Odometer {
    prefix: Vec<usize>,
    picks: Vec<(usize, usize)>,
}

impl Chooser for Odometer {
    fn pick(&mut self, n: usize) -> usize {
        let v = self
            .prefix
            .get(self.picks.len())
            .copied()
            .unwrap_or(0)
            .min(n.saturating_sub(1));
        self.picks.push((v, n));
        v
    }
}

/// The states [`SimStorage::power_loss_states`] enumerates.
#[derive(Debug)]
pub struct PowerLossStates {
    fs: FsState,
    next: Option<Vec<usize>>,
    limit: usize,
    produced: usize,
}

impl PowerLossStates {
    /// True if the enumeration stopped at the limit with states left.
    pub fn truncated(&self) -> bool {
        self.next.is_some() && self.produced >= self.limit
    }
}

impl Iterator for PowerLossStates {
    type Item = SimStorage;

    fn next(&mut self) -> Option<SimStorage> {
        if self.produced >= self.limit {
            return None;
        }
        let prefix = self.next.take()?;
        let mut od = Odometer {
            prefix,
            picks: Vec::new(),
        };
        let fs = materialize(&self.fs, &mut od);
        // The next choice sequence: bump the last choice that has room.
        let mut picks = od.picks;
        while let Some((v, n)) = picks.pop() {
            if v + 1 < n {
                let mut next: Vec<usize> = picks.iter().map(|&(v, _)| v).collect();
                next.push(v + 1);
                self.next = Some(next);
                break;
            }
        }
        self.produced += 1;
        Some(SimStorage::from_state(fs))
    }
}

/// A deterministic stand-in for garbage bytes.
fn garbage(i: u64) -> u8 {
    (i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn apply_meta(ns: &mut BTreeMap<PathBuf, Node>, op: &MetaOp) {
    match op {
        MetaOp::Create { path, node } => {
            ns.insert(path.clone(), *node);
        }
        MetaOp::Rename { from, to, node } => {
            // Only if the source entry survived; the rename is atomic.
            if ns.get(from) == Some(node) {
                ns.remove(from);
                ns.insert(to.clone(), *node);
            }
        }
        MetaOp::Remove { path } => {
            ns.remove(path);
        }
    }
}

/// The state a power loss leaves, every choice made by `ch`.
fn materialize(fs: &FsState, ch: &mut dyn Chooser) -> FsState {
    let mut ns = fs.durable.clone();
    for op in &fs.meta {
        if ch.pick(2) == 1 {
            apply_meta(&mut ns, op);
        }
    }
    // An entry whose directory did not survive is gone.
    let orphans: Vec<PathBuf> = ns
        .keys()
        .filter(|p| !p.ancestors().skip(1).all(|a| dir_exists(&ns, a)))
        .cloned()
        .collect();
    for p in orphans {
        ns.remove(&p);
    }
    let mut inodes = BTreeMap::new();
    for node in ns.values() {
        if let Node::File(ino) = *node
            && !inodes.contains_key(&ino)
        {
            let inode = fs.inodes.get(&ino).cloned().unwrap_or_default();
            inodes.insert(ino, materialize_file(&inode, ch));
        }
    }
    FsState {
        inodes,
        next_ino: fs.next_ino,
        live: ns.clone(),
        durable: ns,
        meta: Vec::new(),
    }
}

fn materialize_file(inode: &Inode, ch: &mut dyn Chooser) -> Inode {
    if inode.pending.is_empty() {
        return Inode {
            cache: inode.durable.clone(),
            durable: inode.durable.clone(),
            pending: Arc::default(),
            diverged: false,
        };
    }
    // The size: the durable one or the one after any pending change.
    let old_len = inode.durable.len() as u64;
    let mut lens = vec![old_len];
    let mut cur = old_len;
    for op in inode.pending.iter() {
        cur = match op {
            Pending::Write { offset, data } => cur.max(offset + data.len() as u64),
            Pending::SetLen(l) => *l,
        };
        if !lens.contains(&cur) {
            lens.push(cur);
        }
    }
    let len = lens[ch.pick(lens.len())];
    let mut data = inode.durable.to_vec();
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len > old_len {
        let garbage_fill = ch.pick(2) == 1;
        data.resize(len_usize, 0);
        if garbage_fill {
            for (i, b) in data.iter_mut().enumerate().skip(inode.durable.len()) {
                *b = garbage(i as u64);
            }
        }
    } else {
        data.truncate(len_usize);
    }
    // The data: every unsynced write, cut at sector boundaries into pieces.
    let mut pieces: Vec<(u64, &[u8])> = Vec::new();
    for op in inode.pending.iter() {
        if let Pending::Write {
            offset,
            data: bytes,
        } = op
        {
            let mut at = *offset;
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                let room = (SECTOR_BYTES - at % SECTOR_BYTES) as usize;
                let (piece, tail) = rest.split_at(room.min(rest.len()));
                pieces.push((at, piece));
                at += piece.len() as u64;
                rest = tail;
            }
        }
    }
    // 0: each piece's fate independently; 1: an in-order prefix survives.
    let prefix_mode = ch.pick(2) == 1;
    let cut = if prefix_mode {
        ch.pick(pieces.len() + 1)
    } else {
        0
    };
    for (k, &(at, piece)) in pieces.iter().enumerate() {
        if at >= len {
            continue;
        }
        // 0 lost, 1 kept, 2 zero-filled, 3 torn (a prefix of it kept).
        let fate = if !prefix_mode {
            ch.pick(4)
        } else if k < cut {
            1
        } else if k == cut {
            [0, 2, 3][ch.pick(3)]
        } else {
            0
        };
        let keep = match fate {
            1 => piece.len(),
            3 if piece.len() > 1 => {
                let cuts = [1, piece.len() / 2, piece.len() - 1];
                cuts[ch.pick(3)].max(1)
            }
            _ => 0,
        };
        let start = at as usize;
        let end = (start + piece.len()).min(data.len());
        if fate == 2 {
            // Zeros appear only in newly allocated blocks (past the durable
            // size); an in-place overwrite leaves the old bytes instead.
            let from = start.max(inode.durable.len()).min(end);
            data[from..end].fill(0);
        } else if keep > 0 {
            let end = (start + keep).min(data.len());
            data[start..end].copy_from_slice(&piece[..end - start]);
        }
    }
    let data = Arc::new(data);
    Inode {
        cache: data.clone(),
        durable: data,
        pending: Arc::default(),
        diverged: false,
    }
}

#[derive(Debug)]
struct SimFile {
    sim: SimStorage,
    ino: u64,
    generation: u64,
    writable: bool,
}

#[derive(Debug)]
struct SimLock {
    sim: SimStorage,
    dir: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut g = self.sim.lock();
        if g.generation == self.generation {
            g.locks.remove(&self.dir);
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut g = self.lock();
        let mut missing = Vec::new();
        for a in dir.ancestors() {
            if is_root(a) {
                break;
            }
            match g.fs.live.get(a) {
                Some(Node::Dir) => break,
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        "simulated: not a directory",
                    ));
                }
                None => missing.push(a.to_path_buf()),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Self::step(&mut g, None)?;
        for d in missing.into_iter().rev() {
            g.fs.live.insert(d.clone(), Node::Dir);
            g.fs.meta.push(MetaOp::Create {
                path: d,
                node: Node::Dir,
            });
        }
        Self::stepped(&mut g);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let g = self.lock();
        if !dir_exists(&g.fs.live, dir) {
            return Err(not_found());
        }
        Ok(g.fs
            .live
            .iter()
            .filter(|(p, _)| parent_of(p) == dir)
            .filter_map(|(p, node)| {
                let kind = match node {
                    Node::Dir => EntryType::Dir,
                    _ => EntryType::File,
                };
                Some(DirEntry::new(p.file_name()?.to_str()?, kind))
            })
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut g = self.lock();
        let ino = match (mode, g.fs.live.get(path).copied()) {
            (_, Some(Node::Dir)) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "simulated: is a directory",
                ));
            }
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "simulated: file exists",
                ));
            }
            (OpenMode::CreateNew, None) => {
                if !dir_exists(&g.fs.live, parent_of(path)) {
                    return Err(not_found());
                }
                Self::step(&mut g, None)?;
                g.fs.next_ino += 1;
                let ino = g.fs.next_ino;
                g.fs.inodes.insert(ino, Inode::default());
                g.fs.live.insert(path.to_path_buf(), Node::File(ino));
                g.fs.meta.push(MetaOp::Create {
                    path: path.to_path_buf(),
                    node: Node::File(ino),
                });
                Self::stepped(&mut g);
                ino
            }
            (_, Some(Node::File(ino))) => ino,
            (_, None) => return Err(not_found()),
        };
        Ok(Arc::new(SimFile {
            sim: self.clone(),
            ino,
            generation: g.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut g = self.lock();
        let node = match g.fs.live.get(from) {
            Some(Node::File(ino)) => Node::File(*ino),
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "simulated: renaming a directory",
                ));
            }
            None => return Err(not_found()),
        };
        if !dir_exists(&g.fs.live, parent_of(to)) {
            return Err(not_found());
        }
        if g.fs.live.get(to) == Some(&Node::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "simulated: is a directory",
            ));
        }
        Self::step(&mut g, None)?;
        g.fs.live.remove(from);
        g.fs.live.insert(to.to_path_buf(), node);
        g.fs.meta.push(MetaOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            node,
        });
        Self::stepped(&mut g);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut g = self.lock();
        match g.fs.live.get(path) {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "simulated: is a directory",
                ));
            }
            None => return Err(not_found()),
        }
        Self::step(&mut g, None)?;
        g.fs.live.remove(path);
        g.fs.meta.push(MetaOp::Remove {
            path: path.to_path_buf(),
        });
        Self::stepped(&mut g);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut g = self.lock();
        if !dir_exists(&g.fs.live, dir) {
            return Err(not_found());
        }
        Self::step(&mut g, None)?;
        g.stats.dir_syncs += 1;
        if g.stats.dir_syncs == g.faults.fail_dir_sync_at {
            g.stats.injected_failures += 1;
            Self::stepped(&mut g);
            return Err(eio("injected EIO on directory sync"));
        }
        let fs = &mut g.fs;
        fs.durable.retain(|p, _| parent_of(p) != dir);
        for (p, node) in &fs.live {
            if parent_of(p) == dir {
                fs.durable.insert(p.clone(), *node);
            }
        }
        // Changes in `dir` are durable now; a rename between two directories
        // keeps its other half pending.
        let mut meta = Vec::with_capacity(fs.meta.len());
        for op in fs.meta.drain(..) {
            match op {
                MetaOp::Create { ref path, .. } | MetaOp::Remove { ref path }
                    if parent_of(path) == dir => {}
                MetaOp::Rename { from, to, node } => {
                    match (parent_of(&from) == dir, parent_of(&to) == dir) {
                        (true, true) => {}
                        (true, false) => meta.push(MetaOp::Create { path: to, node }),
                        (false, true) => meta.push(MetaOp::Remove { path: from }),
                        (false, false) => meta.push(MetaOp::Rename { from, to, node }),
                    }
                }
                other => meta.push(other),
            }
        }
        fs.meta = meta;
        Self::stepped(&mut g);
        Ok(())
    }

    /// Calls must happen in a reproducible order on the caller's threads.
    fn allows_background_io(&self) -> bool {
        false
    }
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let mut g = self.lock();
        if !dir_exists(&g.fs.live, dir) {
            return Err(not_found());
        }
        if !g.locks.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            sim: self.clone(),
            dir: dir.to_path_buf(),
            generation: g.generation,
        })))
    }
}

impl SimFile {
    fn check_gen(&self, g: &Inner) -> io::Result<()> {
        if g.generation != self.generation {
            return Err(eio("file handle from before a crash"));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.sim.gate_file_sync();
        let mut g = self.sim.lock();
        SimStorage::step(&mut g, Some(self.generation))?;
        g.stats.file_syncs += 1;
        let failed = g.stats.file_syncs == g.faults.fail_file_sync_at;
        if failed {
            g.stats.injected_failures += 1;
        }
        if let Some(inode) = g.fs.inodes.get_mut(&self.ino) {
            if failed {
                // The pages are marked clean without being written.
                inode.diverged = true;
            } else if !inode.diverged {
                inode.durable = inode.cache.clone();
            } else {
                // Only what was written since the failed sync reaches the
                // disk: the dropped pages stay lost.
                let durable = Arc::make_mut(&mut inode.durable);
                for op in inode.pending.iter() {
                    match op {
                        Pending::Write { offset, data } => {
                            let off = usize::try_from(*offset).unwrap_or(usize::MAX);
                            let end = off.saturating_add(data.len());
                            if durable.len() < end {
                                durable.resize(end, 0);
                            }
                            durable[off..end].copy_from_slice(data);
                        }
                        Pending::SetLen(l) => {
                            durable.resize(usize::try_from(*l).unwrap_or(usize::MAX), 0);
                        }
                    }
                }
                if inode.durable == inode.cache {
                    inode.durable = inode.cache.clone();
                    inode.diverged = false;
                }
            }
            inode.pending = Arc::default();
        }
        SimStorage::stepped(&mut g);
        if failed {
            return Err(eio("injected EIO on file sync"));
        }
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let g = self.sim.lock();
        self.check_gen(&g)?;
        let Some(inode) = g.fs.inodes.get(&self.ino) else {
            return Ok(0);
        };
        let data = &inode.cache;
        let Ok(off) = usize::try_from(offset) else {
            return Ok(0);
        };
        if off >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "simulated: file opened read-only",
            ));
        }
        let off = usize::try_from(offset).map_err(|_| eio("offset too large"))?;
        let mut g = self.sim.lock();
        SimStorage::step(&mut g, Some(self.generation))?;
        g.stats.writes += 1;
        let mut take = buf.len();
        let mut err = None;
        if g.stats.writes == g.faults.fail_write_at {
            take = 0;
            err = Some(eio("injected EIO on write"));
        } else if g.stats.writes == g.faults.short_write_at {
            take = buf.len() / 2;
            err = Some(eio("injected short write"));
        }
        if let Some(left) = g.faults.space_left {
            let left = usize::try_from(left).unwrap_or(usize::MAX);
            if take > left {
                take = left;
                err = Some(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated: no space left on device (injected)",
                ));
            }
            g.faults.space_left = Some((left - take) as u64);
        }
        if err.is_some() {
            g.stats.injected_failures += 1;
        }
        g.stats.bytes_written += take as u64;
        if take > 0
            && let Some(inode) = g.fs.inodes.get_mut(&self.ino)
        {
            let end = off
                .checked_add(take)
                .ok_or_else(|| eio("offset too large"))?;
            let cache = Arc::make_mut(&mut inode.cache);
            if cache.len() < end {
                cache.resize(end, 0);
            }
            cache[off..end].copy_from_slice(&buf[..take]);
            Arc::make_mut(&mut inode.pending).push(Pending::Write {
                offset,
                data: Arc::from(&buf[..take]),
            });
        }
        SimStorage::stepped(&mut g);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn len(&self) -> io::Result<u64> {
        let g = self.sim.lock();
        self.check_gen(&g)?;
        Ok(g.fs
            .inodes
            .get(&self.ino)
            .map_or(0, |i| i.cache.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "simulated: file opened read-only",
            ));
        }
        let new_len = usize::try_from(len).map_err(|_| eio("length too large"))?;
        let mut g = self.sim.lock();
        SimStorage::step(&mut g, Some(self.generation))?;
        if let Some(inode) = g.fs.inodes.get_mut(&self.ino) {
            Arc::make_mut(&mut inode.cache).resize(new_len, 0);
            Arc::make_mut(&mut inode.pending).push(Pending::SetLen(len));
        }
        SimStorage::stepped(&mut g);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    /// Modelled as growing the file with zeros: one step, durable only
    /// after a sync, and (like any unsynced length change) losable.
    fn allocate(&self, len: u64) -> io::Result<bool> {
        self.sim.lock().stats.allocations += 1;
        if len > self.len()? {
            self.set_len(len)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn setup() -> SimStorage {
        let sim = SimStorage::new();
        sim.create_dir_all(&p("/d")).unwrap();
        sim.sync_dir(&p("/")).unwrap();
        sim
    }

    #[test]
    fn unsynced_entries_and_data_are_lost_cleanly() {
        let sim = setup();
        let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        // Data durable, entry not.
        let lost = sim.after_crash(CrashKind::LoseUnsynced);
        assert!(lost.read_file(&p("/d/a")).is_none());
        assert_eq!(
            sim.after_crash(CrashKind::ProcessKill)
                .read_file(&p("/d/a")),
            Some(b"hello".to_vec())
        );
        sim.sync_dir(&p("/d")).unwrap();
        f.write_at(b"HE", 0).unwrap();
        let lost = sim.after_crash(CrashKind::LoseUnsynced);
        assert_eq!(lost.read_file(&p("/d/a")), Some(b"hello".to_vec()));
        assert!(!lost.has_unsynced());
        assert!(sim.has_unsynced());
    }

    #[test]
    fn a_renamed_over_target_reverts() {
        let sim = setup();
        for (name, data) in [("t", b"old"), ("n", b"new")] {
            let f = sim
                .open(&p(&format!("/d/{name}")), OpenMode::CreateNew)
                .unwrap();
            f.write_at(data, 0).unwrap();
            f.sync_data().unwrap();
        }
        sim.sync_dir(&p("/d")).unwrap();
        sim.rename(&p("/d/n"), &p("/d/t")).unwrap();
        let lost = sim.after_crash(CrashKind::LoseUnsynced);
        assert_eq!(lost.read_file(&p("/d/t")), Some(b"old".to_vec()));
        assert_eq!(lost.read_file(&p("/d/n")), Some(b"new".to_vec()));
        // Enumerated: the rename either happened or not, atomically.
        let mut outcomes = BTreeSet::new();
        for s in sim.power_loss_states(100) {
            outcomes.insert((s.read_file(&p("/d/t")), s.read_file(&p("/d/n"))));
        }
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    }

    #[test]
    fn a_failed_fsync_drops_the_pages() {
        let sim = setup();
        let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(&p("/d")).unwrap();
        f.write_at(b"v1", 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(b"v2", 0).unwrap();
        sim.fail_nth_file_sync(1);
        assert!(f.sync_data().is_err());
        // The next sync succeeds but writes nothing: the pages are clean.
        f.sync_data().unwrap();
        let mut buf = [0u8; 2];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"v2");
        for s in sim.power_loss_states(100) {
            assert_eq!(s.read_file(&p("/d/a")), Some(b"v1".to_vec()));
        }
        assert_eq!(sim.stats().injected_failures, 1);
    }

    #[test]
    fn power_loss_tears_extends_and_zero_fills() {
        let sim = setup();
        let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(&p("/d")).unwrap();
        f.write_at(&[7u8; 1000], 0).unwrap();
        let mut lens = BTreeSet::new();
        let mut zero_tail = false;
        let mut garbage_tail = false;
        let mut torn = false;
        let mut all = 0;
        let mut states = sim.power_loss_states(10_000);
        for s in states.by_ref() {
            all += 1;
            let d = s.read_file(&p("/d/a")).unwrap();
            lens.insert(d.len());
            if d.len() == 1000 {
                zero_tail |= d[900..].iter().all(|&b| b == 0);
                garbage_tail |= d[900..].iter().any(|&b| b != 0 && b != 7);
                torn |= d[..512].iter().all(|&b| b == 7) && d[512..].iter().any(|&b| b != 7);
            }
        }
        assert!(!states.truncated());
        assert_eq!(lens, BTreeSet::from([0, 1000]));
        assert!(zero_tail && garbage_tail && torn, "{all} states");
        // Seeds give some of the same variety, deterministically.
        let a = sim.after_crash(CrashKind::PowerLoss { seed: 9 });
        let b = sim.after_crash(CrashKind::PowerLoss { seed: 9 });
        assert_eq!(a.read_file(&p("/d/a")), b.read_file(&p("/d/a")));
    }

    #[test]
    fn steps_stop_and_snapshots() {
        let sim = SimStorage::new();
        sim.record_steps();
        sim.create_dir_all(&p("/d")).unwrap();
        let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"x", 0).unwrap();
        assert_eq!(sim.steps(), 3);
        assert!(
            sim.state_after_step(1)
                .unwrap()
                .read_file(&p("/d/a"))
                .is_none()
        );
        assert_eq!(
            sim.state_after_step(3).unwrap().read_file(&p("/d/a")),
            Some(b"x".to_vec())
        );
        sim.stop_after_steps(Some(1));
        f.write_at(b"y", 0).unwrap();
        assert!(f.write_at(b"z", 0).is_err());
        assert!(f.sync_data().is_err());
        assert_eq!(sim.read_file(&p("/d/a")), Some(b"y".to_vec()));
        sim.crash(CrashKind::ProcessKill);
        assert!(f.len().is_err(), "handles from before a crash are dead");
        assert_eq!(sim.read_file(&p("/d/a")), Some(b"y".to_vec()));
        sim.crash(CrashKind::LoseUnsynced);
        assert!(sim.read_file(&p("/d/a")).is_none());
    }

    #[test]
    fn enospc_and_short_writes() {
        let sim = setup();
        let f = sim.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        sim.set_space_left(Some(10));
        let e = f.write_at(&[1u8; 16], 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 10);
        sim.set_space_left(None);
        sim.short_nth_write(2);
        f.write_at(&[2u8; 4], 0).unwrap();
        assert!(f.write_at(&[3u8; 8], 0).is_err());
        assert_eq!(sim.read_file(&p("/d/a")).unwrap()[..5], [3, 3, 3, 3, 1]);
        sim.fail_nth_write(1);
        assert!(f.write_at(&[4u8; 8], 0).is_err());
        assert_eq!(sim.read_file(&p("/d/a")).unwrap()[0], 3);
    }
}
