//! Checkpoints as objects, with epoch fencing.
//!
//! Objects under the location's prefix:
//! - `epochs/epoch-EEEEEEEEEEEEEEEEEEEE`: created (conditional PUT, never
//!   replaced) by the store that took epoch `E`. It holds `E` and a *bound*:
//!   the newest batch time among the checkpoints that existed when epoch
//!   `E` began (28 bytes: magic `SWEPOCH1`, epoch, bound, CRC32 of the first
//!   24 bytes; integers little-endian).
//! - `checkpoints/checkpoint-TTTTTTTTTTTTTTTTTTTT-EEEEEEEEEEEEEEEEEEEE.ckpt`:
//!   the checkpoint of batch time `T` written in epoch `E`, in the checkpoint
//!   file format of docs/FORMAT.md, written with one PUT (atomic).
//!
//! The fencing rule: a checkpoint of epoch `E` is *accepted* unless epoch
//! `E + 1` exists and the checkpoint's batch time is beyond that epoch's
//! bound. The driver of epoch `E` writes checkpoints with growing batch
//! times; everything it wrote before epoch `E + 1` began is at or below the
//! bound, so what it writes after being fenced is above it and is never
//! returned by `latest`, whichever store reads.

use super::location::{Created, ObjectLocation};
use crate::checkpoint::{
    CHECKPOINT_HEADER_BYTES, Checkpoint, CheckpointHeader, CheckpointOptions, CheckpointStore,
    EncodedCheckpoint, decode_file,
};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::DECODE_BYTES_MAX;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

const EPOCHS: &str = "epochs";
const CHECKPOINTS: &str = "checkpoints";
const EPOCH_MAGIC: &[u8; 8] = b"SWEPOCH1";
const EPOCH_BYTES: usize = 28;
const DIGITS: usize = 20;
/// Attempts at taking an epoch when other stores keep taking them first.
const TAKEOVER_ATTEMPTS: usize = 32;

/// A checkpoint object by (batch time, epoch).
type Named = (u64, u64);

fn epoch_name(epoch: u64) -> String {
    format!("{EPOCHS}/epoch-{epoch:0DIGITS$}")
}

fn checkpoint_name(batch_time: u64, epoch: u64) -> String {
    format!("{CHECKPOINTS}/checkpoint-{batch_time:0DIGITS$}-{epoch:0DIGITS$}.ckpt")
}

fn digits(s: &str) -> Option<u64> {
    (s.len() == DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `epoch-E` -> E.
fn parse_epoch(file: &str) -> Option<u64> {
    digits(file.strip_prefix("epoch-")?)
}

/// `checkpoint-T-E.ckpt` -> (T, E).
fn parse_checkpoint(file: &str) -> Option<(u64, u64)> {
    let stem = file.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    let (t, e) = stem.split_once('-')?;
    Some((digits(t)?, digits(e)?))
}

fn encode_epoch(epoch: u64, bound: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(EPOCH_BYTES);
    b.extend_from_slice(EPOCH_MAGIC);
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&bound.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The bound an epoch object holds, after every check.
fn decode_epoch(bytes: &[u8], epoch: u64) -> std::result::Result<u64, CorruptionKind> {
    if bytes.len() != EPOCH_BYTES {
        return Err(CorruptionKind::BadHeader("epoch object has the wrong size"));
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[24..28]);
    let (expected, actual) = (u32::from_le_bytes(crc), crc32fast::hash(&bytes[..24]));
    if expected != actual {
        return Err(CorruptionKind::ChecksumMismatch { expected, actual });
    }
    if &bytes[..8] != EPOCH_MAGIC {
        return Err(CorruptionKind::BadMagic);
    }
    if u64_at(8) != epoch {
        return Err(CorruptionKind::BadHeader(
            "epoch object's epoch does not match its name",
        ));
    }
    Ok(u64_at(16))
}

/// A checkpoint object [`ObjectCheckpointStore::latest`] passed over, and why.
#[derive(Debug)]
pub struct SkippedObject {
    /// The object (URL and name).
    pub object: PathBuf,
    /// Why: [`Error::Corruption`], [`Error::Decode`], [`Error::TooLarge`] or
    /// [`Error::Remote`] (it could not be read).
    pub reason: Error,
}

/// What [`ObjectCheckpointStore::latest`] found.
#[derive(Debug)]
pub struct ObjectLatest<G> {
    /// The newest accepted checkpoint that passed every check, with its
    /// object's name; `None` if there is none.
    pub checkpoint: Option<(PathBuf, Checkpoint<G>)>,
    /// Newer accepted checkpoints that were skipped, newest first.
    pub skipped: Vec<SkippedObject>,
    /// Checkpoints written by a driver after a newer epoch began (fenced
    /// out; never returned), as (batch time, epoch).
    pub fenced: Vec<(u64, u64)>,
}

/// Checkpoints under an object-storage prefix, fenced by epochs.
///
/// Opening a store takes a new epoch (see the module's documentation); from
/// then on a store opened earlier on the same prefix gets
/// [`Error::Fenced`] from [`ObjectCheckpointStore::write`], and what it
/// manages to write anyway is never returned by `latest`.
#[derive(Debug)]
pub struct ObjectCheckpointStore {
    loc: ObjectLocation,
    keep: usize,
    epoch: u64,
    write_lock: Mutex<()>,
}

impl ObjectCheckpointStore {
    /// Open the store at `url` (see [`ObjectLocation::parse`]) and take a
    /// new epoch.
    ///
    /// # Errors
    /// As [`ObjectLocation::parse`] and [`ObjectCheckpointStore::open_at`].
    pub fn open(url: &str, opts: CheckpointOptions) -> Result<ObjectCheckpointStore> {
        ObjectCheckpointStore::open_at(ObjectLocation::parse(url)?, opts)
    }

    /// Open the store at `loc` and take a new epoch: list the epochs and the
    /// checkpoints, then create the next epoch's object, holding the newest
    /// batch time listed as its bound, with a conditional PUT. If another
    /// store created that epoch first, try the next one.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if `keep` is 0; [`Error::Remote`] if a
    /// request fails; [`Error::Corruption`] if an object name is ours but
    /// its epoch numbers do not parse.
    pub fn open_at(loc: ObjectLocation, opts: CheckpointOptions) -> Result<ObjectCheckpointStore> {
        if opts.keep == 0 {
            return Err(Error::InvalidOptions("keep must be at least 1"));
        }
        for _ in 0..TAKEOVER_ATTEMPTS {
            let newest = newest_epoch(&loc)?;
            let bound = list_checkpoints(&loc)?
                .iter()
                .map(|&(t, _)| t)
                .max()
                .unwrap_or(0);
            let epoch = newest + 1;
            if loc.put_new(&epoch_name(epoch), encode_epoch(epoch, bound))? == Created::Yes {
                return Ok(ObjectCheckpointStore {
                    loc,
                    keep: opts.keep,
                    epoch,
                    write_lock: Mutex::new(()),
                });
            }
        }
        Err(Error::Remote {
            op: "take epoch",
            location: loc.url().to_string(),
            source: "other stores kept taking every new epoch first".into(),
        })
    }

    /// The epoch this store took.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The location.
    pub fn location(&self) -> &ObjectLocation {
        &self.loc
    }

    /// Encode `ckpt` and write it; see [`ObjectCheckpointStore::write_encoded`].
    ///
    /// # Errors
    /// As [`CheckpointStore::encode`] and [`ObjectCheckpointStore::write_encoded`].
    pub fn write<G: Serialize>(&self, ckpt: &Checkpoint<G>) -> Result<PathBuf> {
        self.write_encoded(&CheckpointStore::encode(ckpt)?)
    }

    /// Write an encoded checkpoint as one object (one PUT, atomic: readers
    /// see all of it or none), then apply retention. Returns the object's
    /// name. Checks for a newer epoch before the PUT and after it: when `Ok`
    /// returns, this store was still the newest when its checkpoint landed,
    /// and the checkpoint is durable as the store defines durability (S3:
    /// stored redundantly once the PUT returned).
    ///
    /// # Errors
    /// - [`Error::Fenced`] if a newer epoch exists (before or after the
    ///   PUT): stop using this store; a checkpoint written after the newer
    ///   epoch began is never returned by `latest`.
    /// - [`Error::Remote`] if a request fails; earlier checkpoints are
    ///   untouched. Treat the checkpoint as not written.
    pub fn write_encoded(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf> {
        let _serial = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.check_not_fenced()?;
        let name = checkpoint_name(ckpt.batch_time(), self.epoch);
        self.loc.put(&name, ckpt.as_bytes().to_vec())?;
        self.check_not_fenced()?;
        self.retain(ckpt.batch_time())?;
        Ok(self.loc.display(&name))
    }

    fn check_not_fenced(&self) -> Result<()> {
        let newest = newest_epoch(&self.loc)?;
        if newest > self.epoch {
            return Err(Error::Fenced {
                epoch: self.epoch,
                newer: newest,
            });
        }
        Ok(())
    }

    /// Every epoch's bound, by epoch.
    fn bounds(&self) -> Result<BTreeMap<u64, u64>> {
        let mut bounds = BTreeMap::new();
        for file in self.loc.list(EPOCHS)? {
            let Some(epoch) = parse_epoch(&file) else {
                continue;
            };
            let name = epoch_name(epoch);
            let corrupt = |kind| Error::corruption(self.loc.display(&name), 0, kind);
            let bytes = self
                .loc
                .get(&name, EPOCH_BYTES as u64)
                .map_err(|e| match e {
                    Error::TooLarge { .. } => {
                        corrupt(CorruptionKind::BadHeader("epoch object has the wrong size"))
                    }
                    other => other,
                })?
                .ok_or_else(|| corrupt(CorruptionKind::ObjectVanished))?;
            bounds.insert(epoch, decode_epoch(&bytes, epoch).map_err(corrupt)?);
        }
        Ok(bounds)
    }

    /// Checkpoints split into accepted (newest first) and fenced out.
    fn accepted(&self) -> Result<(Vec<Named>, Vec<Named>)> {
        let bounds = self.bounds()?;
        let (mut ok, mut fenced): (Vec<_>, Vec<_>) = list_checkpoints(&self.loc)?
            .into_iter()
            .partition(|&(t, e)| bounds.get(&(e + 1)).is_none_or(|&bound| t <= bound));
        ok.sort_unstable_by(|a, b| b.cmp(a));
        fenced.sort_unstable_by(|a, b| b.cmp(a));
        Ok((ok, fenced))
    }

    /// Delete accepted checkpoints beyond the newest `keep` (never
    /// `just_written`'s), and fenced-out ones.
    fn retain(&self, just_written: u64) -> Result<()> {
        let (ok, fenced) = self.accepted()?;
        let old = ok
            .iter()
            .skip(self.keep)
            .filter(|&&(t, _)| t != just_written);
        for &(t, e) in old.chain(fenced.iter()) {
            self.loc.delete(&checkpoint_name(t, e))?;
        }
        Ok(())
    }

    /// The accepted checkpoints, newest first, as (batch time, epoch), by
    /// name alone.
    ///
    /// # Errors
    /// [`Error::Remote`]; [`Error::Corruption`] for a damaged epoch object.
    pub fn list(&self) -> Result<Vec<(u64, u64)>> {
        Ok(self.accepted()?.0)
    }

    /// The newest accepted checkpoint that passes every check, trying from
    /// the newest batch time down; damaged, undecodable or unreadable ones
    /// are skipped and listed. Reads objects; writes nothing.
    ///
    /// # Errors
    /// [`Error::Remote`] if listing fails; [`Error::Corruption`] if an epoch
    /// object is damaged (the fencing rule cannot be applied without it, so
    /// nothing is guessed).
    pub fn latest<G: DeserializeOwned>(&self) -> Result<ObjectLatest<G>> {
        let (ok, fenced) = self.accepted()?;
        let mut skipped = Vec::new();
        for (t, e) in ok {
            let name = checkpoint_name(t, e);
            let object = self.loc.display(&name);
            match self.read(&name, t) {
                Ok(ckpt) => {
                    return Ok(ObjectLatest {
                        checkpoint: Some((object, ckpt)),
                        skipped,
                        fenced,
                    });
                }
                Err(reason) => skipped.push(SkippedObject { object, reason }),
            }
        }
        Ok(ObjectLatest {
            checkpoint: None,
            skipped,
            fenced,
        })
    }

    fn read<G: DeserializeOwned>(&self, name: &str, batch_time: u64) -> Result<Checkpoint<G>> {
        let object = self.loc.display(name);
        let max = (CHECKPOINT_HEADER_BYTES + DECODE_BYTES_MAX) as u64;
        let bytes = self
            .loc
            .get(name, max)?
            .ok_or_else(|| Error::corruption(&object, 0, CorruptionKind::ObjectVanished))?;
        let ckpt: Checkpoint<G> = decode_file(&object, &bytes)?;
        if ckpt.batch_time != batch_time {
            return Err(Error::corruption(
                &object,
                0,
                CorruptionKind::BadHeader("batch time does not match the object's name"),
            ));
        }
        Ok(ckpt)
    }

    /// The smallest journal position among the accepted checkpoints whose
    /// header checks (see [`CheckpointStore::journal_floor`]). Reads 48
    /// bytes per object.
    ///
    /// # Errors
    /// As [`ObjectCheckpointStore::list`].
    pub fn journal_floor(&self) -> Result<Option<u64>> {
        let mut floor: Option<u64> = None;
        for (t, e) in self.accepted()?.0 {
            let name = checkpoint_name(t, e);
            let Ok(Some(head)) = self.loc.get_head(&name, CHECKPOINT_HEADER_BYTES as u64) else {
                continue;
            };
            if let Ok(h) = CheckpointHeader::decode(&head)
                && h.batch_time == t
            {
                floor = Some(floor.map_or(h.journal_lsn, |f| f.min(h.journal_lsn)));
            }
        }
        Ok(floor)
    }
}

fn newest_epoch(loc: &ObjectLocation) -> Result<u64> {
    Ok(loc
        .list(EPOCHS)?
        .iter()
        .filter_map(|f| parse_epoch(f))
        .max()
        .unwrap_or(0))
}

/// Every checkpoint object's (batch time, epoch), unsorted.
fn list_checkpoints(loc: &ObjectLocation) -> Result<Vec<(u64, u64)>> {
    Ok(loc
        .list(CHECKPOINTS)?
        .iter()
        .filter_map(|f| parse_checkpoint(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strays_are_ignored() {
        assert_eq!(
            parse_checkpoint(checkpoint_name(42, 7).rsplit('/').next().unwrap()),
            Some((42, 7))
        );
        assert_eq!(
            parse_epoch(epoch_name(9).rsplit('/').next().unwrap()),
            Some(9)
        );
        for stray in ["checkpoint-1-2.ckpt", "epoch-x", "checkpoint-.ckpt", "LOCK"] {
            assert_eq!(parse_checkpoint(stray), None);
            assert_eq!(parse_epoch(stray), None);
        }
    }

    #[test]
    fn an_epoch_object_rejects_every_damage() {
        let good = encode_epoch(3, 1234);
        assert_eq!(decode_epoch(&good, 3), Ok(1234));
        assert!(decode_epoch(&good, 4).is_err());
        assert!(decode_epoch(&good[..27], 3).is_err());
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_epoch(&bad, 3).is_err(), "byte {i} bit {bit}");
            }
        }
    }
}
