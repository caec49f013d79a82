//! Keyed operator state that recovers exactly at the last committed batch.
//!
//! An engine keeps, per operator, a map from keys `K` to values `V` (any
//! serde types): running counts, sessions, the last value per key. Each
//! batch's changes become one delta, appended durably to the state log (a
//! [`crate::Wal`]) when the batch commits; a background thread writes a
//! snapshot of the whole state every few batches (or bytes of deltas) from
//! an immutable version, and the deltas older than the oldest kept snapshot
//! are retired. Recovery loads the newest snapshot that passes its checks
//! and replays the deltas after it, so the state is exactly as of the last
//! committed batch: changes of a batch that did not commit are gone.
//!
//! In a [`crate::StreamingContext`] the state lives in `state/` below the
//! context, and [`crate::StreamingContext::commit_batch`] makes the state's
//! delta durable before the batch's commit in the tracker; recovery finishes
//! the tracker's commit if a crash fell between the two, so the state and
//! the commit log never disagree.
//!
//! ```
//! use streamwal::StreamingContext;
//! # fn main() -> streamwal::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("ctx");
//! let ctx = StreamingContext::get_or_create(&dir, 1_000, || ())?;
//! let counts = ctx.state::<String, u64>("counts")?;
//! ctx.begin_batch(1_000)?;
//! for word in ["to", "be", "or", "not", "to", "be"] {
//!     let n = counts.get(&word.to_string())?.unwrap_or(0);
//!     counts.put(word.to_string(), n + 1)?;
//! }
//! ctx.commit_batch(1_000)?; // durable: state and commit together
//! drop((counts, ctx));
//!
//! let ctx = StreamingContext::get_or_create(&dir, 1_000, || ())?;
//! let counts = ctx.state::<String, u64>("counts")?;
//! assert_eq!(counts.get(&"to".to_string())?, Some(2));
//! assert_eq!(ctx.state.version(), Some(1_000));
//! # Ok(())
//! # }
//! ```
//!
//! **Timeouts.** [`KeyedState::put_with_timeout`] gives a key an idle
//! timeout: unless written again, it is removed at the start of the first
//! batch whose time is at least the timeout after the batch that wrote it,
//! and [`KeyedState::expired`] lists it for that batch (to emit a final
//! value, as `mapWithState`'s timeout does). Removal happens at batch
//! boundaries and is part of the batch's delta, so a replay removes the
//! same keys.
//!
//! docs/DESIGN.md ("Keyed state") has the protocol and why each crash point
//! is safe; docs/FORMAT.md the bytes.

mod operator;
mod packed;
pub(crate) mod record;
mod recover;
mod store;

pub use operator::{StateKey, StateValue};
pub use record::STATE_FORMAT_VERSION;
/// The state record codec, for the crate's own tools (feature `internals`;
/// no stability promise).
#[cfg(feature = "internals")]
pub use record::{RawChange, RawEntry, RawSlot, SnapshotBody, StateDelta, decode_delta};
pub use store::{STATE_LOG_NAME, STATE_SNAPSHOTS_NAME, StateReport, StateStats, StateStore};

use crate::error::Result;
use crate::wal::WalOptions;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

/// Options of a [`StateStore`].
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Start a background snapshot after this many batches that changed
    /// the state (default 10).
    pub snapshot_every_batches: u64,
    /// ... or after this many bytes of deltas (default 64 MiB).
    pub snapshot_every_bytes: u64,
    /// How many snapshots to keep (default 2): a damaged newest one falls
    /// back to the one before it plus the deltas after that one.
    pub snapshots_kept: usize,
    /// Options of the state log (one record per committed batch; must use
    /// [`crate::SyncPolicy::Always`]). Default: 4 MiB segments (a larger
    /// delta gets a segment of its own), deltas up to 256 MiB, and no
    /// preallocation: a log of one record per batch gains little from it,
    /// and zero-filling a first segment made every context open 2.4 times
    /// slower in the recovery model test.
    pub log: WalOptions,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            snapshot_every_batches: 10,
            snapshot_every_bytes: 64 << 20,
            snapshots_kept: 2,
            log: WalOptions {
                segment_bytes: 4 << 20,
                max_record_bytes: 256 << 20,
                preallocate: false,
                ..WalOptions::default()
            },
        }
    }
}

/// The state of one operator: keys `K`, values `V`. Made by
/// [`StateStore::operator`] (or [`crate::StreamingContext::state`]); cheap
/// to clone, and every clone shares the one map.
///
/// Reads work at any time and see the open batch's changes; writes need an
/// open batch ([`StateStore::begin_batch`]) and become durable when it
/// commits.
pub struct KeyedState<K, V> {
    store: Arc<StateStore>,
    name: Arc<str>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for KeyedState<K, V> {
    fn clone(&self) -> Self {
        KeyedState {
            store: self.store.clone(),
            name: self.name.clone(),
            types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for KeyedState<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedState")
            .field("operator", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K: StateKey, V: StateValue> KeyedState<K, V> {
    fn new(store: Arc<StateStore>, name: &str) -> Self {
        KeyedState {
            store,
            name: name.into(),
            types: PhantomData,
        }
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// [`crate::Error::Poisoned`] after a failed commit.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.read(|op| op.state.map().get(key).map(|s| s.value.clone()))
    }

    /// Set `key` to `value` (no timeout) in the open batch; the old value.
    ///
    /// # Errors
    /// [`crate::Error::StateMisuse`] with no batch open. Keys and values
    /// are encoded when the batch commits: one that refuses to serialize
    /// fails [`StateStore::commit_batch`] with [`crate::Error::Encode`],
    /// and the batch stays open, to be aborted.
    pub fn put(&self, key: K, value: V) -> Result<Option<V>> {
        self.write(key, Some(value), None)
    }

    /// Set `key` to `value` with an idle timeout of `timeout_ms`: unless
    /// written again, it is removed at the start of the first batch whose
    /// time is at least the open batch's time plus `timeout_ms`.
    ///
    /// # Errors
    /// As [`KeyedState::put`].
    pub fn put_with_timeout(&self, key: K, value: V, timeout_ms: u64) -> Result<Option<V>> {
        self.write(key, Some(value), Some(timeout_ms))
    }

    /// Remove `key` in the open batch; its old value.
    ///
    /// # Errors
    /// As [`KeyedState::put`].
    pub fn delete(&self, key: &K) -> Result<Option<V>> {
        self.write(key.clone(), None, None)
    }

    /// Every key and value in `range`, in key order.
    ///
    /// # Errors
    /// [`crate::Error::Poisoned`] after a failed commit.
    pub fn range(&self, range: impl RangeBounds<K>) -> Result<Vec<(K, V)>> {
        self.read(|op| {
            op.state
                .map()
                .range(range)
                .map(|(k, s)| (k.clone(), s.value.clone()))
                .collect()
        })
    }

    /// Every key and value, in key order.
    ///
    /// # Errors
    /// As [`KeyedState::range`].
    pub fn iter(&self) -> Result<Vec<(K, V)>> {
        self.range(..)
    }

    /// How many keys the operator holds.
    ///
    /// # Errors
    /// As [`KeyedState::range`].
    pub fn len(&self) -> Result<usize> {
        self.read(|op| op.state.map().len())
    }

    /// Whether the operator holds no key.
    ///
    /// # Errors
    /// As [`KeyedState::range`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys (with their last values) that timed out at the start of
    /// the open batch; empty with no batch open.
    ///
    /// # Errors
    /// As [`KeyedState::range`].
    pub fn expired(&self) -> Result<Vec<(K, V)>> {
        self.read(|op| op.expired.clone())
    }

    fn read<R>(&self, f: impl FnOnce(&operator::Typed<K, V>) -> R) -> Result<R> {
        self.store
            .with_operator::<K, V, R>(&self.name, false, |op, _| Ok(f(op)))
    }

    fn write(&self, key: K, value: Option<V>, timeout_ms: Option<u64>) -> Result<Option<V>> {
        self.store
            .with_operator::<K, V, _>(&self.name, true, |op, open| {
                let expires_at = timeout_ms.and_then(|t| open.map(|batch| batch.saturating_add(t)));
                let old = op.state.set(key, value.map(|v| (v, expires_at)));
                Ok(old.map(|s| s.value))
            })
    }
}
