//! Keys and slots of one operator as recovery holds them: the bytes back to
//! back in one buffer and a small fixed-size item per key, so that a
//! million keys cost two allocations instead of two million, and sorting
//! or merging them moves items, not heap strings.

use super::record::{EncodeEach, Visit};
use crate::error::Result;

/// Keys, each with its value and expiry or a removal, packed.
#[derive(Default)]
pub(crate) struct Packed {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

/// One key: `key_len` bytes at `at`, then its value's `value_len`.
#[derive(Clone, Copy)]
struct Item {
    at: usize,
    key_len: usize,
    value_len: usize,
    expires_at: Option<u64>,
    /// `false`: the key was removed (a delta's change); its value is empty.
    present: bool,
}

/// A key and its value and expiry (`None`: removed), borrowed.
pub(crate) type SlotView<'a> = Option<(&'a [u8], Option<u64>)>;

impl Packed {
    pub(crate) fn with_capacity(items: usize, bytes: usize) -> Packed {
        Packed {
            bytes: Vec::with_capacity(bytes),
            items: Vec::with_capacity(items),
        }
    }

    pub(crate) fn push(&mut self, key: &[u8], slot: SlotView<'_>) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let (value, expires_at) = slot.unwrap_or((&[], None));
        self.bytes.extend_from_slice(value);
        self.items.push(Item {
            at,
            key_len: key.len(),
            value_len: value.len(),
            expires_at,
            present: slot.is_some(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held, keys and values.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let it = &self.items[i];
        &self.bytes[it.at..it.at + it.key_len]
    }

    pub(crate) fn slot(&self, i: usize) -> SlotView<'_> {
        let it = &self.items[i];
        let value_at = it.at + it.key_len;
        it.present.then(|| {
            (
                &self.bytes[value_at..value_at + it.value_len],
                it.expires_at,
            )
        })
    }

    pub(crate) fn get(&self, i: usize) -> (&[u8], SlotView<'_>) {
        (self.key(i), self.slot(i))
    }

    /// The earliest expiry of a present key.
    pub(crate) fn first_expiry(&self) -> Option<u64> {
        self.items
            .iter()
            .filter(|it| it.present)
            .filter_map(|it| it.expires_at)
            .min()
    }

    /// Whether the keys are strictly ascending (sorted, each once).
    pub(crate) fn is_strictly_sorted(&self) -> bool {
        (1..self.len()).all(|i| self.key(i - 1) < self.key(i))
    }

    /// The positions of the keys in key order; of equal keys, the earlier
    /// position first. Sorting positions by each key's first bytes, read
    /// from the position array, keeps most comparisons off the buffer.
    pub(crate) fn sorted_order(&self) -> Vec<usize> {
        let mut order: Vec<(u64, usize)> = (0..self.len())
            .map(|i| (key_prefix(self.key(i)), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.key(a.1).cmp(self.key(b.1)))
                .then(a.1.cmp(&b.1))
        });
        order.into_iter().map(|(_, i)| i).collect()
    }
}

/// A key's first 8 bytes (zero-padded) as a big-endian number: where two
/// differ, they order the keys as the bytes do.
fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl EncodeEach for Packed {
    fn count(&self) -> usize {
        self.len()
    }
    fn each(&self, f: &mut Visit<'_>) -> Result<()> {
        for i in 0..self.len() {
            let (key, slot) = self.get(i);
            if !f(key, slot) {
                break;
            }
        }
        Ok(())
    }
}
