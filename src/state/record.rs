//! What keyed state looks like in bytes: the state log's one record kind (a
//! committed batch's delta) and a snapshot's body. Both are bincode (see
//! [`crate::codec`]) inside containers that checksum them: a delta is one
//! record of the state log (a [`crate::Wal`]), a snapshot is the graph of a
//! checkpoint file in the snapshot store (a [`crate::CheckpointStore`]).
//! docs/FORMAT.md ("Keyed state") has the layout.

use crate::codec;
use crate::error::{CorruptionKind, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The version of the delta and snapshot bodies this build writes and the
/// newest it reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// One key's value as stored: encoded bytes, and the batch time at or
/// after which it expires (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawSlot {
    /// The value, encoded.
    pub value: Vec<u8>,
    /// The first batch time at whose start the key is removed.
    pub expires_at: Option<u64>,
}

/// Every key an operator changed in one batch: its last value, or `None`
/// for a key removed (deleted, or timed out).
pub type RawChanges = Vec<(Vec<u8>, Option<RawSlot>)>;

/// Every live key of an operator and its slot.
pub type RawEntries = Vec<(Vec<u8>, RawSlot)>;

/// A committed batch's changes to every operator: one record of the state
/// log. The record's presence is the state's commit of that batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDelta {
    /// [`STATE_FORMAT_VERSION`] when written.
    pub format: u32,
    /// The context's state identity: every delta and snapshot of one
    /// context carries the same one.
    pub state_id: u64,
    /// The batch whose changes these are.
    pub batch_time: u64,
    /// Per operator (by name, ascending), its changed keys (ascending by
    /// encoded key).
    pub operators: Vec<(String, RawChanges)>,
}

/// The whole state as of one committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// [`STATE_FORMAT_VERSION`] when written.
    pub format: u32,
    /// As in [`StateDelta::state_id`].
    pub state_id: u64,
    /// The last batch whose changes are in it.
    pub batch_time: u64,
    /// Every state-log record up to this LSN is in it.
    pub log_lsn: u64,
    /// Per operator (by name, ascending), every live key and its slot.
    pub operators: Vec<(String, RawEntries)>,
}

/// Decode a state-log record that passed its checksum. `file` names the
/// log in errors.
///
/// # Errors
/// [`Error::Decode`] if the bytes are not a delta; [`Error::Corruption`]
/// ([`CorruptionKind::UnsupportedVersion`]) for a newer format.
pub fn decode_delta(file: &Path, bytes: &[u8]) -> Result<StateDelta> {
    let delta: StateDelta = codec::decode(bytes, "state delta")?;
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
}
