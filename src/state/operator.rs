//! One operator's keyed state in memory: typed once the engine registers it
//! ([`Typed`]), or as the encoded bytes recovery read until then ([`Raw`]).
//!
//! A live map is an [`imbl::OrdMap`], whose clone is O(1) and shares
//! structure: a snapshot takes a clone and encodes it on another thread
//! while the batch loop changes the live map. It keeps an undo log of the
//! open batch (the slot each key had before the batch first touched it),
//! which is also the list of keys the batch's delta holds, and an expiry
//! index, so that a batch boundary finds the keys that time out without
//! scanning the map.

use super::packed::Packed;
use super::record::{EncodeEach, Visit};
use crate::codec;
use crate::error::{Error, Result};
use imbl::OrdMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What the store needs of an operator, whatever its key and value types.
pub(crate) trait Operator: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Remove every key that expires at or before `batch_time`, as a change
    /// of the open batch.
    fn expire(&mut self, batch_time: u64) -> Result<()>;
    /// Put back what the open batch changed.
    fn undo(&mut self);
    /// The open batch committed: forget its undo log.
    fn commit(&mut self);
    /// Whether the open batch changed a key.
    fn has_changes(&self) -> bool;
    /// The open batch's changes, encoded on demand: each key it touched
    /// once, with its slot now (`None`: removed).
    fn changes(&self) -> Box<dyn EncodeEach + '_>;
    /// An immutable copy of the current map, O(1).
    fn frozen(&self) -> Box<dyn Frozen>;
    fn len(&self) -> usize;
}

/// An immutable version of one operator's map, encoded off the batch loop:
/// every key and slot.
pub(crate) trait Frozen: EncodeEach + Send {}

/// A value and the batch time it expires at (`None`: never).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot<V> {
    pub(crate) value: V,
    pub(crate) expires_at: Option<u64>,
    /// The generation of the batch that wrote it: equal to the map's
    /// current one iff the open batch did.
    written_in: u64,
    /// If the open batch wrote it: its entry in the undo log.
    touch: usize,
}

/// A key the open batch touched: the slot it had before, and its value
/// and expiry now (`None`: removed), kept here so that the delta is
/// encoded without looking each key up again in a large map.
#[derive(Clone)]
struct Touched<K, V> {
    key: K,
    before: Option<Slot<V>>,
    now: Option<(V, Option<u64>)>,
}

/// A map with an undo log and an expiry index; the one implementation
/// behind both forms.
#[derive(Clone)]
pub(crate) struct Versioned<K: Ord + Clone, V: Clone> {
    map: OrdMap<K, Slot<V>>,
    expiry: BTreeSet<(u64, K)>,
    /// Keys the open batch touched, each once, in the order it first did.
    undo: Vec<Touched<K, V>>,
    /// Keys the open batch removed, with their undo entries (the map no
    /// longer says whether the batch touched them).
    removed: BTreeMap<K, usize>,
    /// The open batch's generation; slots recovery loads carry 0.
    generation: u64,
}

impl<K: Ord + Clone, V: Clone> Default for Versioned<K, V> {
    fn default() -> Self {
        Versioned {
            map: OrdMap::new(),
            expiry: BTreeSet::new(),
            undo: Vec::new(),
            removed: BTreeMap::new(),
            generation: 1,
        }
    }
}

impl<K: Ord + Clone, V: Clone> Versioned<K, V> {
    /// A map holding `entries` (sorted by key, each key once), nothing
    /// open.
    pub(crate) fn from_sorted(entries: Vec<(K, V, Option<u64>)>) -> Self {
        let expiry = entries
            .iter()
            .filter_map(|(k, _, at)| at.map(|at| (at, k.clone())))
            .collect();
        let map = entries
            .into_iter()
            .map(|(k, value, expires_at)| {
                let slot = Slot {
                    value,
                    expires_at,
                    written_in: 0,
                    touch: 0,
                };
                (k, slot)
            })
            .collect();
        Versioned {
            map,
            expiry,
            ..Versioned::default()
        }
    }

    pub(crate) fn map(&self) -> &OrdMap<K, Slot<V>> {
        &self.map
    }

    /// Set `key` to `value` expiring at `expires_at` (`None` removes it) as
    /// a change of the open batch; the slot it had.
    pub(crate) fn set(&mut self, key: K, value: Option<(V, Option<u64>)>) -> Option<Slot<V>> {
        if value.is_none() && !self.map.contains_key(&key) {
            return None; // removing a key that is not there changes nothing
        }
        // Where the key's undo entry is if this is its first touch; fixed
        // below if it is not.
        let next = self.undo.len();
        let slot = value.clone().map(|(value, expires_at)| Slot {
            value,
            expires_at,
            written_in: self.generation,
            touch: next,
        });
        let old = self.raw_set(key.clone(), slot);
        let touched = match &old {
            Some(s) if s.written_in == self.generation => Some(s.touch),
            Some(_) => None,
            None => self.removed.get(&key).copied(),
        };
        let at = match touched {
            Some(at) => {
                if value.is_some()
                    && let Some(s) = self.map.get_mut(&key)
                {
                    s.touch = at;
                }
                self.undo[at].now = value;
                at
            }
            None => {
                self.undo.push(Touched {
                    key: key.clone(),
                    before: old.clone(),
                    now: value,
                });
                next
            }
        };
        if self.undo[at].now.is_none() {
            self.removed.insert(key, at);
        }
        old
    }

    /// Set without undo (undo itself).
    fn raw_set(&mut self, key: K, slot: Option<Slot<V>>) -> Option<Slot<V>> {
        if let Some(at) = slot.as_ref().and_then(|s| s.expires_at) {
            self.expiry.insert((at, key.clone()));
        }
        let old = match slot {
            Some(s) => self.map.insert(key.clone(), s),
            None => self.map.remove(&key),
        };
        if let Some(at) = old.as_ref().and_then(|s| s.expires_at) {
            // The new slot may carry the same expiry: keep its entry.
            let same = self.map.get(&key).and_then(|s| s.expires_at) == Some(at);
            if !same {
                self.expiry.remove(&(at, key));
            }
        }
        old
    }

    /// Keys expiring at or before `batch_time`, removed; with their slots.
    pub(crate) fn expire(&mut self, batch_time: u64) -> Vec<(K, Slot<V>)> {
        let due: Vec<(u64, K)> = self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= batch_time)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (_, key) in due {
            if let Some(old) = self.set(key.clone(), None) {
                out.push((key, old));
            }
        }
        out
    }

    pub(crate) fn undo(&mut self) {
        while let Some(t) = self.undo.pop() {
            self.raw_set(t.key, t.before);
        }
        self.removed.clear();
        self.generation += 1;
    }

    pub(crate) fn commit(&mut self) {
        self.undo.clear();
        self.removed.clear();
        self.generation += 1;
    }

    /// The same map with keys and values converted (a recovered operator
    /// registered, possibly in the middle of a batch). `f` must keep the
    /// key order.
    fn convert<L: Ord + Clone, W: Clone>(
        &self,
        key: impl Fn(&K) -> Result<L>,
        value: impl Fn(&V) -> Result<W>,
    ) -> Result<Versioned<L, W>> {
        let slot = |s: &Slot<V>| -> Result<Slot<W>> {
            Ok(Slot {
                value: value(&s.value)?,
                expires_at: s.expires_at,
                written_in: s.written_in,
                touch: s.touch,
            })
        };
        let mut out = Versioned {
            generation: self.generation,
            ..Versioned::default()
        };
        for (k, s) in self.map.iter() {
            let k = key(k)?;
            if let Some(at) = s.expires_at {
                out.expiry.insert((at, k.clone()));
            }
            out.map.insert(k, slot(s)?);
        }
        for t in &self.undo {
            out.undo.push(Touched {
                key: key(&t.key)?,
                before: t.before.as_ref().map(slot).transpose()?,
                now: match &t.now {
                    Some((v, at)) => Some((value(v)?, *at)),
                    None => None,
                },
            });
        }
        for (k, at) in &self.removed {
            out.removed.insert(key(k)?, *at);
        }
        Ok(out)
    }
}

/// How an operator's keys or values become bytes: appended to the buffer.
type EncodeFn<T> = fn(&T, &mut Vec<u8>) -> Result<()>;

fn encode_key<K: Serialize>(k: &K, out: &mut Vec<u8>) -> Result<()> {
    codec::encode_into(k, out, "state key")
}

fn encode_value<V: Serialize>(v: &V, out: &mut Vec<u8>) -> Result<()> {
    codec::encode_into(v, out, "state value")
}

/// Feed one slot to an [`EncodeEach`] callback, encoding into the scratch
/// buffers (which keep their allocations from key to key).
fn feed<K, V>(
    (key, slot): (&K, Option<(&V, Option<u64>)>),
    enc: (EncodeFn<K>, EncodeFn<V>),
    bufs: &mut (Vec<u8>, Vec<u8>),
    f: &mut Visit<'_>,
) -> Result<bool> {
    bufs.0.clear();
    enc.0(key, &mut bufs.0)?;
    Ok(match slot {
        Some((value, expires_at)) => {
            bufs.1.clear();
            enc.1(value, &mut bufs.1)?;
            f(&bufs.0, Some((&bufs.1, expires_at)))
        }
        None => f(&bufs.0, None),
    })
}

/// The open batch's changes of a live map.
struct Changes<'a, K: Ord + Clone, V: Clone> {
    state: &'a Versioned<K, V>,
    enc: (EncodeFn<K>, EncodeFn<V>),
}

impl<K: Ord + Clone, V: Clone> EncodeEach for Changes<'_, K, V> {
    fn count(&self) -> usize {
        self.state.undo.len()
    }
    fn each(&self, f: &mut Visit<'_>) -> Result<()> {
        let mut bufs = (Vec::new(), Vec::new());
        for t in &self.state.undo {
            let now = t.now.as_ref().map(|(v, at)| (v, *at));
            if !feed((&t.key, now), self.enc, &mut bufs, f)? {
                break;
            }
        }
        Ok(())
    }
}

/// A frozen live map.
struct FrozenMap<K: Ord + Clone, V: Clone> {
    map: OrdMap<K, Slot<V>>,
    enc: (EncodeFn<K>, EncodeFn<V>),
}

impl<K: Ord + Clone, V: Clone> EncodeEach for FrozenMap<K, V> {
    fn count(&self) -> usize {
        self.map.len()
    }
    fn each(&self, f: &mut Visit<'_>) -> Result<()> {
        let mut bufs = (Vec::new(), Vec::new());
        for (key, slot) in self.map.iter() {
            if !feed(
                (key, Some((&slot.value, slot.expires_at))),
                self.enc,
                &mut bufs,
                f,
            )? {
                break;
            }
        }
        Ok(())
    }
}

impl<K: Ord + Clone + Send + Sync, V: Clone + Send + Sync> Frozen for FrozenMap<K, V> {}

/// What recovery read for an operator: its entries sorted by key bytes,
/// each key once.
pub(crate) struct RecoveredEntries {
    pub(crate) entries: Packed,
    /// The earliest expiry among them.
    pub(crate) first_expiry: Option<u64>,
}

impl RecoveredEntries {
    pub(crate) fn new(entries: Packed) -> Self {
        RecoveredEntries {
            first_expiry: entries.first_expiry(),
            entries,
        }
    }

    /// Every entry, in key-byte order: key, value, expiry.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> {
        (0..self.entries.len()).filter_map(|i| {
            let (key, slot) = self.entries.get(i);
            slot.map(|(value, at)| (key, value, at))
        })
    }
}

impl EncodeEach for Arc<RecoveredEntries> {
    fn count(&self) -> usize {
        self.entries.len()
    }
    fn each(&self, f: &mut Visit<'_>) -> Result<()> {
        self.entries.each(f)
    }
}

impl Frozen for Arc<RecoveredEntries> {}

/// An operator recovery read that the engine has not registered yet: keys
/// and values as bytes. It still times keys out at batch boundaries, so
/// that the state is the same whether or not this run touches it: until a
/// key does, it stays the sorted entries recovery built (shared with the
/// snapshots that freeze it); then it becomes a live map.
pub(crate) enum Raw {
    Recovered(Arc<RecoveredEntries>),
    Live(Versioned<Vec<u8>, Vec<u8>>),
}

impl Default for Raw {
    fn default() -> Self {
        Raw::Recovered(Arc::new(RecoveredEntries::new(Packed::default())))
    }
}

const RAW_ENC: (EncodeFn<Vec<u8>>, EncodeFn<Vec<u8>>) = (copy_vec, copy_vec);

// The type is `EncodeFn<Vec<u8>>`'s, which takes `&T`.
#[allow(clippy::ptr_arg)]
fn copy_vec(b: &Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(b);
    Ok(())
}

impl Operator for Raw {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn expire(&mut self, batch_time: u64) -> Result<()> {
        if let Raw::Recovered(r) = self {
            if r.first_expiry.is_none_or(|at| at > batch_time) {
                return Ok(());
            }
            let sorted = r
                .iter()
                .map(|(k, v, at)| (k.to_vec(), v.to_vec(), at))
                .collect();
            *self = Raw::Live(Versioned::from_sorted(sorted));
        }
        if let Raw::Live(v) = self {
            v.expire(batch_time);
        }
        Ok(())
    }
    fn undo(&mut self) {
        if let Raw::Live(v) = self {
            v.undo()
        }
    }
    fn commit(&mut self) {
        if let Raw::Live(v) = self {
            v.commit()
        }
    }
    fn has_changes(&self) -> bool {
        matches!(self, Raw::Live(v) if !v.undo.is_empty())
    }
    fn changes(&self) -> Box<dyn EncodeEach + '_> {
        match self {
            Raw::Live(state) => Box::new(Changes {
                state,
                enc: RAW_ENC,
            }),
            Raw::Recovered(_) => Box::new(NoChanges),
        }
    }
    fn frozen(&self) -> Box<dyn Frozen> {
        match self {
            Raw::Recovered(r) => Box::new(r.clone()),
            Raw::Live(v) => Box::new(FrozenMap {
                map: v.map.clone(),
                enc: RAW_ENC,
            }),
        }
    }
    fn len(&self) -> usize {
        match self {
            Raw::Recovered(r) => r.entries.len(),
            Raw::Live(v) => v.map.len(),
        }
    }
}

/// A recovered operator's changes: none until a key times out.
struct NoChanges;

impl EncodeEach for NoChanges {
    fn count(&self) -> usize {
        0
    }
    fn each(&self, _: &mut Visit<'_>) -> Result<()> {
        Ok(())
    }
}

/// The bounds a key type needs.
pub trait StateKey: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateKey for T {}

/// The bounds a value type needs.
pub trait StateValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateValue for T {}

/// A registered operator: keys `K`, values `V`.
pub(crate) struct Typed<K: StateKey, V: StateValue> {
    pub(crate) state: Versioned<K, V>,
    /// What timed out at the open batch's start, for the engine to see.
    pub(crate) expired: Vec<(K, V)>,
}

impl<K: StateKey, V: StateValue> Typed<K, V> {
    const ENC: (EncodeFn<K>, EncodeFn<V>) = (encode_key::<K>, encode_value::<V>);

    /// Decode a recovered operator (its open batch's undo log too, if it is
    /// registered in the middle of a batch).
    ///
    /// # Errors
    /// [`Error::StateDecode`] if a key or value does not decode, or if two
    /// stored keys decode to the same key.
    pub(crate) fn from_raw(name: &str, raw: &Raw) -> Result<Typed<K, V>> {
        let bad = |source| Error::StateDecode {
            operator: name.to_string(),
            source,
        };
        let key = |b: &[u8]| codec::decode::<K>(b, "state key").map_err(|e| bad(Box::new(e)));
        let value = |b: &[u8]| codec::decode::<V>(b, "state value").map_err(|e| bad(Box::new(e)));
        let state = match raw {
            Raw::Live(v) => v.convert(|k| key(k), |v| value(v))?,
            Raw::Recovered(r) => {
                let mut decoded = Vec::with_capacity(r.entries.len());
                for (k, v, at) in r.iter() {
                    decoded.push((key(k)?, value(v)?, at));
                }
                // Byte order is the key order for some encodings (fixed-size
                // byte arrays, strings) and not for others (integers).
                if !decoded.is_sorted_by(|a, b| a.0 < b.0) {
                    decoded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    if decoded.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(bad("two stored keys decode to the same key".into()));
                    }
                }
                Versioned::from_sorted(decoded)
            }
        };
        Ok(Typed {
            state,
            expired: Vec::new(),
        })
    }
}

impl<K: StateKey, V: StateValue> Operator for Typed<K, V> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn expire(&mut self, batch_time: u64) -> Result<()> {
        for (k, slot) in self.state.expire(batch_time) {
            self.expired.push((k, slot.value));
        }
        Ok(())
    }
    fn undo(&mut self) {
        self.state.undo();
        self.expired.clear();
    }
    fn commit(&mut self) {
        self.state.commit();
        self.expired.clear();
    }
    fn has_changes(&self) -> bool {
        !self.state.undo.is_empty()
    }
    fn changes(&self) -> Box<dyn EncodeEach + '_> {
        Box::new(Changes {
            state: &self.state,
            enc: Self::ENC,
        })
    }
    fn frozen(&self) -> Box<dyn Frozen> {
        Box::new(FrozenMap {
            map: self.state.map.clone(),
            enc: Self::ENC,
        })
    }
    fn len(&self) -> usize {
        self.state.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_every_touched_key_and_its_expiry() {
        let mut v: Versioned<u32, &str> = Versioned::from_sorted(vec![(1, "one", Some(50))]);
        v.set(1, Some(("uno", None)));
        v.set(2, Some(("two", Some(10))));
        v.set(1, None);
        v.set(2, None);
        v.set(2, Some(("deux", None)));
        // Each key once in the batch's changes, whatever it went through.
        let touched: Vec<u32> = v.undo.iter().map(|t| t.key).collect();
        assert_eq!(touched, vec![1, 2]);
        v.undo();
        assert_eq!(v.map().len(), 1);
        assert_eq!(v.map().get(&1).map(|s| s.value), Some("one"));
        // Key 2's expiry went with it; key 1's came back.
        assert!(v.expire(20).is_empty());
        assert_eq!(v.expire(50).len(), 1);
        assert!(v.map().is_empty());
        // The expiry was a change of its own batch.
        assert_eq!(v.undo.len(), 1);
    }

    #[test]
    fn a_committed_key_is_a_change_again_in_the_next_batch() {
        let mut v: Versioned<u32, u32> = Versioned::default();
        v.set(7, Some((1, None)));
        v.commit();
        v.set(7, Some((2, None)));
        v.set(7, Some((3, None)));
        assert_eq!(v.undo.len(), 1);
        assert_eq!(v.undo[0].before.as_ref().map(|s| s.value), Some(1));
        assert_eq!(v.undo[0].now, Some((3, None)));
        v.commit();
        // Removing what is not there is no change.
        v.set(8, None);
        assert!(v.undo.is_empty());
    }
}
