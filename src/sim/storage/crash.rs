//! The crash model: what a power loss leaves of the state, every choice
//! made by a [`Chooser`] (none, a seed, or an exhaustive enumeration).

use super::state::{FsState, Inode, MetaOp, Node, Pending, dir_exists};
use super::{SECTOR_BYTES, SimStorage};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Chooses among `n` alternatives; `0` is always "lose the change".
pub(super) trait Chooser {
    fn pick(&mut self, n: usize) -> usize;
}

pub(super) struct Zeros;

impl Chooser for Zeros {
    fn pick(&mut self, _n: usize) -> usize {
        0
    }
}

/// splitmix64.
pub(super) struct Seeded(u64);

impl Seeded {
    pub(super) fn new(seed: u64) -> Seeded {
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
    pub(super) fs: FsState,
    pub(super) next: Option<Vec<usize>>,
    pub(super) limit: usize,
    pub(super) produced: usize,
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
pub(super) fn materialize(fs: &FsState, ch: &mut dyn Chooser) -> FsState {
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
