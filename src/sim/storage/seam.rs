//! The crate's storage seam on the simulator: [`Storage`] for
//! [`SimStorage`], its files and its directory locks.

use super::state::{Inode, MetaOp, Node, Pending, dir_exists, is_root, parent_of};
use super::{Inner, SimStorage, eio, not_found};
use crate::storage::{DirEntry, DirLock, EntryType, OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
