//! One operator's keyed state in memory: typed once the engine registers it
//! ([`Typed`]), or as the encoded bytes recovery read until then ([`Raw`]).
//!
//! Both keep their map in an [`imbl::OrdMap`], whose clone is O(1) and
//! shares structure: a snapshot takes a clone and encodes it on another
//! thread while the batch loop changes the live map. Both keep an undo log
//! of the open batch (the value each key had before the batch first touched
//! it), so an aborted batch leaves no trace, and an expiry index, so a
//! batch boundary finds the keys that time out without scanning the map.

use super::record::RawSlot;
use crate::codec;
use crate::error::{Error, Result};
use imbl::OrdMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeSet;

/// What the store needs of an operator, whatever its key and value types.
pub(crate) trait Operator: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Remove every key that expires at or before `batch_time`, as a change
    /// of the open batch; their encoded keys.
    fn expire(&mut self, batch_time: u64) -> Result<Vec<Vec<u8>>>;
    /// Put back what the open batch changed.
    fn undo(&mut self);
    /// The open batch committed: forget its undo log.
    fn commit(&mut self);
    /// An immutable copy of the current map, O(1).
    fn frozen(&self) -> Box<dyn Frozen>;
    fn len(&self) -> usize;
}

/// An immutable version of one operator's map, encoded off the batch loop.
pub(crate) trait Frozen: Send {
    /// Every key and slot, encoded, in key order.
    fn entries(&self) -> Result<Vec<(Vec<u8>, RawSlot)>>;
}

/// A value and the batch time it expires at (`None`: never).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot<V> {
    pub(crate) value: V,
    pub(crate) expires_at: Option<u64>,
}

/// A map with an undo log and an expiry index; the one implementation
/// behind both forms.
#[derive(Clone)]
pub(crate) struct Versioned<K: Ord + Clone, V: Clone> {
    map: OrdMap<K, Slot<V>>,
    expiry: BTreeSet<(u64, K)>,
    /// Keys the open batch touched, with the slot each had before.
    undo: Vec<(K, Option<Slot<V>>)>,
    touched: BTreeSet<K>,
}

impl<K: Ord + Clone, V: Clone> Default for Versioned<K, V> {
    fn default() -> Self {
        Versioned {
            map: OrdMap::new(),
            expiry: BTreeSet::new(),
            undo: Vec::new(),
            touched: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Versioned<K, V> {
    pub(crate) fn map(&self) -> &OrdMap<K, Slot<V>> {
        &self.map
    }

    /// Set `key` to `slot` (`None` removes it) as a change of the open
    /// batch; the slot it had.
    pub(crate) fn set(&mut self, key: K, slot: Option<Slot<V>>) -> Option<Slot<V>> {
        let old = self.raw_set(key.clone(), slot);
        if self.touched.insert(key.clone()) {
            self.undo.push((key, old.clone()));
        }
        old
    }

    /// Set without undo (recovery, and undo itself).
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

    /// Recovery's apply: no undo log.
    pub(crate) fn apply(&mut self, key: K, slot: Option<Slot<V>>) {
        self.raw_set(key, slot);
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
        while let Some((key, old)) = self.undo.pop() {
            self.raw_set(key, old);
        }
        self.touched.clear();
    }

    pub(crate) fn commit(&mut self) {
        self.undo.clear();
        self.touched.clear();
    }

    fn undo_log(&self) -> &[(K, Option<Slot<V>>)] {
        &self.undo
    }
}

/// An operator recovery read that the engine has not registered yet: keys
/// and values as bytes. It still times keys out at batch boundaries, so
/// that the state is the same whether or not this run touches it.
#[derive(Clone, Default)]
pub(crate) struct Raw(pub(crate) Versioned<Vec<u8>, Vec<u8>>);

impl Raw {
    pub(crate) fn apply(&mut self, key: Vec<u8>, slot: Option<RawSlot>) {
        self.0.apply(
            key,
            slot.map(|s| Slot {
                value: s.value,
                expires_at: s.expires_at,
            }),
        );
    }
}

impl Operator for Raw {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn expire(&mut self, batch_time: u64) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .0
            .expire(batch_time)
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    fn undo(&mut self) {
        self.0.undo()
    }
    fn commit(&mut self) {
        self.0.commit()
    }
    fn frozen(&self) -> Box<dyn Frozen> {
        Box::new(RawFrozen(self.0.map().clone()))
    }
    fn len(&self) -> usize {
        self.0.map().len()
    }
}

/// A raw operator's frozen map: already bytes, copied out as they are.
struct RawFrozen(OrdMap<Vec<u8>, Slot<Vec<u8>>>);

impl Frozen for RawFrozen {
    fn entries(&self) -> Result<Vec<(Vec<u8>, RawSlot)>> {
        Ok(self
            .0
            .iter()
            .map(|(k, s)| {
                let slot = RawSlot {
                    value: s.value.clone(),
                    expires_at: s.expires_at,
                };
                (k.clone(), slot)
            })
            .collect())
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
    /// Decode a recovered operator (its open batch's undo log too, if it is
    /// registered in the middle of a batch).
    pub(crate) fn from_raw(name: &str, raw: &Raw) -> Result<Typed<K, V>> {
        let bad = |source| Error::StateDecode {
            operator: name.to_string(),
            source,
        };
        let key = |b: &[u8]| codec::decode::<K>(b, "state key").map_err(|e| bad(Box::new(e)));
        let slot = |s: &Slot<Vec<u8>>| -> Result<Slot<V>> {
            Ok(Slot {
                value: codec::decode::<V>(&s.value, "state value").map_err(|e| bad(Box::new(e)))?,
                expires_at: s.expires_at,
            })
        };
        let mut state = Versioned::default();
        for (k, s) in raw.0.map().iter() {
            state.apply(key(k)?, Some(slot(s)?));
        }
        for (k, old) in raw.0.undo_log() {
            let old = old.as_ref().map(slot).transpose()?;
            let k = key(k)?;
            state.touched.insert(k.clone());
            state.undo.push((k, old));
        }
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
    fn expire(&mut self, batch_time: u64) -> Result<Vec<Vec<u8>>> {
        let gone = self.state.expire(batch_time);
        let mut keys = Vec::with_capacity(gone.len());
        for (k, slot) in gone {
            keys.push(codec::encode(&k, "state key")?);
            self.expired.push((k, slot.value));
        }
        Ok(keys)
    }
    fn undo(&mut self) {
        self.state.undo();
        self.expired.clear();
    }
    fn commit(&mut self) {
        self.state.commit();
        self.expired.clear();
    }
    fn frozen(&self) -> Box<dyn Frozen> {
        Box::new(self.state.map().clone())
    }
    fn len(&self) -> usize {
        self.state.map().len()
    }
}

impl<K: StateKey, V: StateValue> Frozen for OrdMap<K, Slot<V>> {
    fn entries(&self) -> Result<Vec<(Vec<u8>, RawSlot)>> {
        self.iter()
            .map(|(k, s)| {
                let slot = RawSlot {
                    value: codec::encode(&s.value, "state value")?,
                    expires_at: s.expires_at,
                };
                Ok((codec::encode(k, "state key")?, slot))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_every_touched_key_and_its_expiry() {
        let mut v: Versioned<u32, &str> = Versioned::default();
        v.apply(
            1,
            Some(Slot {
                value: "one",
                expires_at: Some(50),
            }),
        );
        v.commit();
        v.set(
            1,
            Some(Slot {
                value: "uno",
                expires_at: None,
            }),
        );
        v.set(
            2,
            Some(Slot {
                value: "two",
                expires_at: Some(10),
            }),
        );
        v.set(1, None);
        v.undo();
        assert_eq!(v.map().len(), 1);
        assert_eq!(v.map().get(&1).map(|s| s.value), Some("one"));
        // Key 2's expiry went with it; key 1's came back.
        assert!(v.expire(20).is_empty());
        assert_eq!(v.expire(50).len(), 1);
        assert!(v.map().is_empty());
    }
}
