//! What keyed state looks like in bytes: the state log's one record kind (a
//! committed batch's delta) and a snapshot's body. Both are bincode (see
//! [`crate::codec`]) inside containers that checksum them: a delta is one
//! record of the state log (a [`crate::Wal`]), a snapshot is the graph of a
//! checkpoint file in the snapshot store (a [`crate::CheckpointStore`]).
//! docs/FORMAT.md ("Keyed state") has the layout.

use crate::codec;
use crate::error::{CorruptionKind, Error, Result};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The version of the delta and snapshot bodies this build writes and the
/// newest it reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// One key's value as stored: encoded bytes, and the batch time at or
/// after which it expires (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub struct RawSlot {
    /// The value, encoded.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The first batch time at whose start the key is removed.
    pub expires_at: Option<u64>,
}

/// One live key of an operator, as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub struct RawEntry {
    /// The key, encoded.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its value and expiry.
    pub slot: RawSlot,
}

/// One key a batch changed: its last value, or `None` for a key removed
/// (deleted, or timed out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub struct RawChange {
    /// The key, encoded.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its value and expiry after the batch; `None`: removed.
    pub slot: Option<RawSlot>,
}

/// A committed batch's changes to every operator: one record of the state
/// log. The record's presence is the state's commit of that batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub struct StateDelta {
    /// [`STATE_FORMAT_VERSION`] when written.
    pub format: u32,
    /// The context's state identity: every delta and snapshot of one
    /// context carries the same one.
    pub state_id: u64,
    /// The batch whose changes these are.
    pub batch_time: u64,
    /// Per operator (by name, ascending), the keys it changed, each once
    /// (in the operator's key order; readers must not rely on any order).
    pub operators: Vec<(String, Vec<RawChange>)>,
}

/// The whole state as of one committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub struct SnapshotBody {
    /// [`STATE_FORMAT_VERSION`] when written.
    pub format: u32,
    /// As in [`StateDelta::state_id`].
    pub state_id: u64,
    /// The last batch whose changes are in it.
    pub batch_time: u64,
    /// Every state-log record up to this LSN is in it.
    pub log_lsn: u64,
    /// Per operator (by name, ascending), every live key and its slot,
    /// each key once (in the operator's key order; readers must not rely
    /// on any order).
    pub operators: Vec<(String, Vec<RawEntry>)>,
}

/// What [`EncodeEach::each`] feeds: a key and its value and expiry
/// (`None`: removed); returns `false` to stop.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], Option<(&[u8], Option<u64>)>) -> bool + 'a;

/// A source of encoded keys and slots, fed one at a time to `f` (which
/// returns `false` to stop): how the writers below read an operator's map
/// without copying it into `Vec`s first. `f`'s slot is `None` for a
/// removed key. The count must be exact.
pub(crate) trait EncodeEach {
    fn count(&self) -> usize;
    fn each(&self, f: &mut Visit<'_>) -> Result<()>;
}

/// A delta encoded straight from the operators: the same bytes as the
/// [`StateDelta`] holding the same changes.
pub(crate) struct DeltaOut<'a> {
    pub(crate) state_id: u64,
    pub(crate) batch_time: u64,
    pub(crate) operators: Vec<(&'a str, &'a dyn EncodeEach)>,
}

/// A snapshot body encoded straight from frozen maps: the same bytes as
/// the [`SnapshotBody`] holding the same entries.
pub(crate) struct SnapshotOut<'a> {
    pub(crate) state_id: u64,
    pub(crate) batch_time: u64,
    pub(crate) log_lsn: u64,
    pub(crate) operators: Vec<(&'a str, &'a dyn EncodeEach)>,
}

impl Serialize for DeltaOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("StateDelta", 4)?;
        st.serialize_field("format", &STATE_FORMAT_VERSION)?;
        st.serialize_field("state_id", &self.state_id)?;
        st.serialize_field("batch_time", &self.batch_time)?;
        st.serialize_field("operators", &Operators(&self.operators, true))?;
        st.end()
    }
}

impl Serialize for SnapshotOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SnapshotBody", 5)?;
        st.serialize_field("format", &STATE_FORMAT_VERSION)?;
        st.serialize_field("state_id", &self.state_id)?;
        st.serialize_field("batch_time", &self.batch_time)?;
        st.serialize_field("log_lsn", &self.log_lsn)?;
        st.serialize_field("operators", &Operators(&self.operators, false))?;
        st.end()
    }
}

/// Operators and their entries; `changes`: each slot is an `Option` (a
/// delta's [`RawChange`]), else always present (a snapshot's
/// [`RawEntry`]).
struct Operators<'a, 'b>(&'b [(&'a str, &'a dyn EncodeEach)], bool);

impl Serialize for Operators<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (name, source) in self.0 {
            seq.serialize_element(&(name, Entries(*source, self.1)))?;
        }
        seq.end()
    }
}

struct Entries<'a>(&'a dyn EncodeEach, bool);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let expected = self.0.count();
        let mut seq = s.serialize_seq(Some(expected))?;
        let (mut written, mut failed) = (0usize, None);
        let changes = self.1;
        let walked = self.0.each(&mut |key, slot| {
            let key = serde_bytes::Bytes::new(key);
            let slot = slot.map(|(value, expires_at)| SlotOut {
                value: serde_bytes::Bytes::new(value),
                expires_at,
            });
            let got = match (changes, slot) {
                (true, slot) => seq.serialize_element(&(key, slot)),
                (false, Some(slot)) => seq.serialize_element(&(key, slot)),
                (false, None) => Err(S::Error::custom("a snapshot entry without a value")),
            };
            match got {
                Ok(()) => {
                    written += 1;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        walked.map_err(|e| S::Error::custom(e.with_causes()))?;
        if written != expected {
            return Err(S::Error::custom(
                "an operator's entry count changed while encoding",
            ));
        }
        seq.end()
    }
}

/// [`RawSlot`], borrowed.
#[derive(Serialize)]
struct SlotOut<'a> {
    value: &'a serde_bytes::Bytes,
    expires_at: Option<u64>,
}

/// Decode a state-log record that passed its checksum. `file` names the
/// log in errors.
///
/// # Errors
/// [`Error::Decode`] if the bytes are not a delta; [`Error::Corruption`]
/// ([`CorruptionKind::UnsupportedVersion`]) for a newer format.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn decode_delta(file: &Path, bytes: &[u8]) -> Result<StateDelta> {
    let delta: StateDelta = codec::decode(bytes, "state delta")?;
    check_format(file, delta.format)?;
    Ok(delta)
}

/// [`RawSlot`], borrowed from the record it is decoded from.
#[derive(Deserialize)]
pub(crate) struct SlotRef<'a> {
    #[serde(borrow)]
    pub(crate) value: &'a [u8],
    pub(crate) expires_at: Option<u64>,
}

impl<'a> SlotRef<'a> {
    pub(crate) fn view(&self) -> (&'a [u8], Option<u64>) {
        (self.value, self.expires_at)
    }
}

/// [`RawChange`], borrowed.
pub(crate) type ChangeRef<'a> = (&'a [u8], Option<SlotRef<'a>>);

/// [`RawEntry`], borrowed.
pub(crate) type EntryRef<'a> = (&'a [u8], SlotRef<'a>);

/// [`StateDelta`], borrowed: recovery decodes a million changes without
/// an allocation each.
#[derive(Deserialize)]
pub(crate) struct DeltaRef<'a> {
    pub(crate) format: u32,
    pub(crate) state_id: u64,
    pub(crate) batch_time: u64,
    #[serde(borrow)]
    pub(crate) operators: Vec<(&'a str, Vec<ChangeRef<'a>>)>,
}

/// [`SnapshotBody`], borrowed.
#[derive(Deserialize)]
pub(crate) struct SnapshotRef<'a> {
    pub(crate) format: u32,
    pub(crate) state_id: u64,
    pub(crate) batch_time: u64,
    pub(crate) log_lsn: u64,
    #[serde(borrow)]
    pub(crate) operators: Vec<(&'a str, Vec<EntryRef<'a>>)>,
}

/// [`decode_delta`], borrowed.
pub(crate) fn decode_delta_ref<'a>(file: &Path, bytes: &'a [u8]) -> Result<DeltaRef<'a>> {
    let delta: DeltaRef<'a> = codec::decode_borrowed(bytes, "state delta")?;
    check_format(file, delta.format)?;
    Ok(delta)
}

/// Refuse a body written by a newer format than this build reads.
pub(crate) fn check_format(file: &Path, format: u32) -> Result<()> {
    if format > STATE_FORMAT_VERSION || format == 0 {
        return Err(Error::corruption(
            file,
            0,
            CorruptionKind::UnsupportedVersion {
                found: format,
                supported: STATE_FORMAT_VERSION,
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let delta = StateDelta {
            format: STATE_FORMAT_VERSION + 1,
            state_id: 7,
            batch_time: 1_000,
            operators: vec![],
        };
        let bytes = codec::encode(&delta, "state delta").unwrap();
        let got = decode_delta(Path::new("state"), &bytes);
        assert!(
            matches!(
                got,
                Err(Error::Corruption {
                    kind: CorruptionKind::UnsupportedVersion { found: 2, .. },
                    ..
                })
            ),
            "{got:?}"
        );
        let ok = StateDelta {
            format: STATE_FORMAT_VERSION,
            ..delta
        };
        let bytes = codec::encode(&ok, "state delta").unwrap();
        assert_eq!(decode_delta(Path::new("state"), &bytes).unwrap(), ok);
    }

    /// Changes or entries held in a `Vec`, for comparing the streamed
    /// encoding with the derived one.
    type HeldSlot = Option<(Vec<u8>, Option<u64>)>;
    struct Held(Vec<(Vec<u8>, HeldSlot)>);

    impl EncodeEach for Held {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn each(&self, f: &mut Visit<'_>) -> Result<()> {
            for (k, slot) in &self.0 {
                if !f(k, slot.as_ref().map(|(v, e)| (v.as_slice(), *e))) {
                    break;
                }
            }
            Ok(())
        }
    }

    #[test]
    fn streamed_delta_and_snapshot_are_the_derived_bytes() {
        let held = Held(vec![
            (b"a".to_vec(), Some((vec![1, 2, 3], None))),
            (vec![0xff; 300], None),
            (b"c".to_vec(), Some((vec![9; 200], Some(u64::MAX)))),
        ]);
        let present = Held(
            held.0
                .iter()
                .filter(|(_, s)| s.is_some())
                .cloned()
                .collect(),
        );
        let slot = |s: &HeldSlot| {
            s.as_ref().map(|(value, expires_at)| RawSlot {
                value: value.clone(),
                expires_at: *expires_at,
            })
        };
        let derived = StateDelta {
            format: STATE_FORMAT_VERSION,
            state_id: 7,
            batch_time: 1_000,
            operators: vec![
                ("counts".into(), vec![]),
                (
                    "sessions".into(),
                    held.0
                        .iter()
                        .map(|(key, s)| RawChange {
                            key: key.clone(),
                            slot: slot(s),
                        })
                        .collect(),
                ),
            ],
        };
        let empty = Held(vec![]);
        let streamed = DeltaOut {
            state_id: 7,
            batch_time: 1_000,
            operators: vec![("counts", &empty), ("sessions", &held)],
        };
        let bytes = codec::encode(&streamed, "state delta").unwrap();
        assert_eq!(bytes, codec::encode(&derived, "state delta").unwrap());
        assert_eq!(decode_delta(Path::new("state"), &bytes).unwrap(), derived);

        let derived = SnapshotBody {
            format: STATE_FORMAT_VERSION,
            state_id: 7,
            batch_time: 1_000,
            log_lsn: 42,
            operators: vec![(
                "sessions".into(),
                present
                    .0
                    .iter()
                    .map(|(key, s)| RawEntry {
                        key: key.clone(),
                        slot: slot(s).unwrap(),
                    })
                    .collect(),
            )],
        };
        let streamed = SnapshotOut {
            state_id: 7,
            batch_time: 1_000,
            log_lsn: 42,
            operators: vec![("sessions", &present)],
        };
        assert_eq!(
            codec::encode(&streamed, "snapshot").unwrap(),
            codec::encode(&derived, "snapshot").unwrap()
        );
        // A snapshot source that yields a removed key is refused, not
        // written as something else.
        let bad = SnapshotOut {
            operators: vec![("sessions", &held)],
            ..streamed
        };
        assert!(codec::encode(&bad, "snapshot").is_err());
    }
}
