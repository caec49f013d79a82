//! The state of the simulated file system: inodes with their live and
//! durable contents, the live and durable namespaces, and the changes not
//! yet synced. A snapshot or a crash copies it whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
pub(super) enum Pending {
    Write { offset: u64, data: Arc<[u8]> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
pub(super) struct Inode {
    /// What the process sees.
    pub(super) cache: Arc<Vec<u8>>,
    /// What survives a power loss for sure.
    pub(super) durable: Arc<Vec<u8>>,
    /// Changes since the last sync, in program order.
    pub(super) pending: Arc<Vec<Pending>>,
    /// A failed sync dropped pages: `durable` is not `cache` minus `pending`.
    pub(super) diverged: bool,
}

#[derive(Debug, Clone)]
pub(super) enum MetaOp {
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
pub(super) struct FsState {
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) next_ino: u64,
    /// The namespace the process sees.
    pub(super) live: BTreeMap<PathBuf, Node>,
    /// The namespace that survives a power loss for sure.
    pub(super) durable: BTreeMap<PathBuf, Node>,
    /// Directory changes not yet made durable, in program order.
    pub(super) meta: Vec<MetaOp>,
}

pub(super) fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p.parent().is_none()
}

pub(super) fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

pub(super) fn dir_exists(ns: &BTreeMap<PathBuf, Node>, p: &Path) -> bool {
    is_root(p) || ns.get(p) == Some(&Node::Dir)
}
