//! Upgrades of the engine's graph type across checkpoints: what a context
//! does when its newest checkpoint cannot be used, the graph version, and
//! the migration hook (see the README, "Upgrading your job").

use crate::checkpoint::{Checkpoint, CheckpointHeader, GraphEncoding};
use crate::error::{CorruptionKind, Error, Result, Unusable};
use crate::recovery::ContextBuilder;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What [`crate::recovery::ContextBuilder::get_or_create`] does when the
/// newest checkpoint (in write order) exists but cannot be used: it is
/// damaged, its graph does not decode, or newer code wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCheckpointError {
    /// Refuse: [`Error::CheckpointUnusable`] naming the file, the reason
    /// and what to do; nothing is changed. The default: a driver never
    /// forgets its state without being told.
    #[default]
    Fail,
    /// Recover from the newest checkpoint that can be used (with none, the
    /// graph comes from `create` and the journal alone gives the batches).
    /// What was passed over is in
    /// [`crate::recovery::ContextReport::checkpoints_skipped`].
    UseOlder,
    /// Start the graph fresh, as Spark's `createOnError`: the graph comes
    /// from `create`, while the blocks, batches, pending batches and source
    /// offsets still come from the newest checkpoint whose own part checks
    /// (and the journal), so nothing acknowledged is lost. Why is in
    /// [`crate::recovery::ContextReport::graph_not_restored`].
    CreateFresh,
}

/// A graph as a checkpoint stores it, handed to a migration registered
/// with [`crate::recovery::ContextBuilder::migrate_graph`].
#[derive(Debug, Clone, Copy)]
pub struct StoredGraph<'a> {
    version: u32,
    encoding: GraphEncoding,
    bytes: &'a [u8],
}

impl StoredGraph<'_> {
    /// The graph version it was written with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// How its bytes are encoded (CBOR since format version 2; bincode in
    /// older files).
    pub fn encoding(&self) -> GraphEncoding {
        self.encoding
    }

    /// Its bytes as stored.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// Decode it as `T` (typically the engine's old graph type, which the
    /// migration then turns into today's).
    ///
    /// # Errors
    /// [`Error::Decode`] if the bytes are not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.encoding.decode(self.bytes, "checkpoint graph")
    }
}

/// The builder's upgrade settings (beside its other methods in
/// [`crate::recovery`]).
impl<G: DeserializeOwned> ContextBuilder<G> {
    /// The graph version of this code's graph type `G`, written into every
    /// checkpoint. A checkpoint with an older one is handed to the
    /// [migration](ContextBuilder::migrate_graph) (without one, decoded as
    /// `G`, which CBOR allows for added `#[serde(default)]` fields, removed
    /// fields and reordered ones); a newer one is refused
    /// ([`crate::Unusable::GraphVersionTooNew`]). Without this call nothing
    /// is checked and the context keeps the checkpoint's version.
    pub fn graph_version(mut self, version: u32) -> Self {
        self.graph.version = Some(version);
        self
    }

    /// Turn a graph written with an older graph version (than the one set
    /// with [`ContextBuilder::graph_version`]) into today's `G`: called
    /// with the stored graph (its version and bytes;
    /// [`StoredGraph::decode`] reads it as the old type). An error makes
    /// the checkpoint unusable ([`crate::Unusable::GraphDoesNotDecode`]).
    pub fn migrate_graph(
        mut self,
        migrate: impl Fn(StoredGraph<'_>) -> Result<G> + Send + Sync + 'static,
    ) -> Self {
        self.graph.migrate = Some(Migration(Arc::new(migrate)));
        self
    }

    /// What to do when the newest checkpoint exists but cannot be used.
    /// Default [`OnCheckpointError::Fail`].
    pub fn on_checkpoint_error(mut self, policy: OnCheckpointError) -> Self {
        self.graph.on_error = policy;
        self
    }
}

/// A registered migration: old graph in, today's graph out.
pub(crate) struct Migration<G>(pub(crate) Arc<dyn Fn(StoredGraph<'_>) -> Result<G> + Send + Sync>);

impl<G> fmt::Debug for Migration<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Migration")
    }
}

/// How a context turns stored graphs into `G`.
#[derive(Debug)]
pub(crate) struct GraphPolicy<G> {
    /// The code's graph version; `None`: not declared (no version check,
    /// the context keeps the checkpoint's version).
    pub(crate) version: Option<u32>,
    pub(crate) migrate: Option<Migration<G>>,
    pub(crate) on_error: OnCheckpointError,
}

impl<G: DeserializeOwned> GraphPolicy<G> {
    /// Decode the graph of `raw` (read from `file`, with `header`): refuse
    /// a newer graph version, migrate an older one, decode the same one.
    ///
    /// # Errors
    /// [`Error::CheckpointUnusable`] with [`Unusable::GraphVersionTooNew`]
    /// or [`Unusable::GraphDoesNotDecode`] (the decoder's or the
    /// migration's error as its source).
    pub(crate) fn decode(
        &self,
        file: &Path,
        header: &CheckpointHeader,
        raw: &Checkpoint<Vec<u8>>,
    ) -> Result<G> {
        let stored = StoredGraph {
            version: raw.graph_version,
            encoding: header.graph_encoding,
            bytes: &raw.graph,
        };
        let code = self.version.unwrap_or(stored.version);
        if stored.version > code {
            return Err(Error::CheckpointUnusable {
                file: file.to_path_buf(),
                why: Unusable::GraphVersionTooNew {
                    found: stored.version,
                    supported: code,
                },
                source: None,
            });
        }
        let decoded = match &self.migrate {
            Some(m) if stored.version < code => (m.0)(stored),
            _ => stored.decode(),
        };
        decoded.map_err(|e| Error::CheckpointUnusable {
            file: file.to_path_buf(),
            why: Unusable::GraphDoesNotDecode {
                graph_version: stored.version,
                code_version: code,
            },
            source: Some(Box::new(e)),
        })
    }
}

/// `reason` (why a checkpoint file was skipped) as the error a context
/// returns for it.
pub(crate) fn unusable(file: &Path, reason: Error) -> Error {
    let why = match &reason {
        Error::CheckpointUnusable { .. } => return reason,
        Error::Corruption {
            kind: CorruptionKind::UnsupportedVersion { found, supported },
            ..
        } if found > supported => Unusable::FormatTooNew {
            found: *found,
            supported: *supported,
        },
        _ => Unusable::Damaged,
    };
    Error::CheckpointUnusable {
        file: file.to_path_buf(),
        why,
        source: Some(Box::new(reason)),
    }
}
