//! Checkpoints as objects, with epoch fencing.
//!
//! Objects under the location's prefix (numbers in 20 decimal digits,
//! integers little-endian, every object ending in a CRC32 of what precedes
//! it):
//! - `epochs/epoch-E`, the *fence* of epoch `E`: created with a conditional
//!   PUT (never replaced) by the store that takes epoch `E`; 28 bytes:
//!   magic `SWFENCE1`, `E`, and a random nonce by which its creator
//!   recognises it (a retried conditional PUT that finds the object already
//!   there reads it back and compares).
//! - `epochs/seal-E`, the *seal* of epoch `E`: written (conditional PUT)
//!   after fence `E` exists, listing every checkpoint of an older epoch that
//!   existed at that moment: magic `SWSEAL01`, `E`, a count, then (batch
//!   time, epoch) pairs.
//! - `checkpoints/checkpoint-T-E.ckpt`: the checkpoint of batch time `T`
//!   written in epoch `E`, in the checkpoint file format of docs/FORMAT.md,
//!   one PUT (atomic).
//!
//! The rule: a checkpoint of epoch `e` counts unless a fence newer than `e`
//! exists; then it counts only if the seal of the oldest such fence lists it.
//! While that seal is missing (a takeover half done) nothing is decided:
//! reads fail with [`Error::TakeoverInProgress`]. Readers list checkpoints
//! before fences (see `verdict`). A writer returns `Ok` only if
//! it found no newer fence after its PUT, so its object was there before
//! that fence, and so before the listing of that fence's seal: an
//! acknowledged checkpoint is always sealed in. What a fenced driver writes
//! after the seal is never listed, so it never counts, for any reader.

use super::location::{Created, ObjectLocation};
use crate::checkpoint::{
    CHECKPOINT_HEADER_BYTES, Checkpoint, CheckpointHeader, CheckpointOptions, CheckpointStore,
    EncodedCheckpoint, decode_file,
};
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::DECODE_BYTES_MAX;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// A checkpoint object by (batch time, epoch).
type Named = (u64, u64);

const EPOCHS: &str = "epochs";
const CHECKPOINTS: &str = "checkpoints";
const FENCE_MAGIC: &[u8; 8] = b"SWFENCE1";
const SEAL_MAGIC: &[u8; 8] = b"SWSEAL01";
const FENCE_BYTES: usize = 28;
/// Most checkpoints one seal lists (retention keeps far fewer).
const SEAL_ENTRIES_MAX: usize = 1 << 20;
const DIGITS: usize = 20;
/// Attempts at taking an epoch when other stores keep taking them first.
const TAKEOVER_ATTEMPTS: usize = 32;
/// Times `latest` lists again when an object it listed vanished (deleted
/// by another store's retention meanwhile).
const RELIST_ATTEMPTS: usize = 3;

fn fence_name(epoch: u64) -> String {
    format!("{EPOCHS}/epoch-{epoch:0DIGITS$}")
}

fn seal_name(epoch: u64) -> String {
    format!("{EPOCHS}/seal-{epoch:0DIGITS$}")
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
fn parse_fence(file: &str) -> Option<u64> {
    digits(file.strip_prefix("epoch-")?)
}

/// `seal-E` -> E.
fn parse_seal(file: &str) -> Option<u64> {
    digits(file.strip_prefix("seal-")?)
}

/// `checkpoint-T-E.ckpt` -> (T, E).
fn parse_checkpoint(file: &str) -> Option<Named> {
    let stem = file.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    let (t, e) = stem.split_once('-')?;
    Some((digits(t)?, digits(e)?))
}

fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Check the trailing CRC32, the magic and the epoch; return the body
/// between the epoch and the CRC.
fn check_object<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    epoch: u64,
) -> std::result::Result<&'a [u8], CorruptionKind> {
    if bytes.len() < 20 {
        return Err(CorruptionKind::BadHeader("epoch object too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut c = [0u8; 4];
    c.copy_from_slice(crc);
    let (expected, actual) = (u32::from_le_bytes(c), crc32fast::hash(body));
    if expected != actual {
        return Err(CorruptionKind::ChecksumMismatch { expected, actual });
    }
    if &body[..8] != magic {
        return Err(CorruptionKind::BadMagic);
    }
    if u64_at(body, 8) != epoch {
        return Err(CorruptionKind::BadHeader(
            "epoch object's epoch does not match its name",
        ));
    }
    Ok(&body[16..])
}

fn encode_fence(epoch: u64, nonce: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(FENCE_BYTES);
    b.extend_from_slice(FENCE_MAGIC);
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&nonce.to_le_bytes());
    with_crc(b)
}

fn decode_fence(bytes: &[u8], epoch: u64) -> std::result::Result<u64, CorruptionKind> {
    let body = check_object(bytes, FENCE_MAGIC, epoch)?;
    if body.len() != 8 {
        return Err(CorruptionKind::BadHeader("fence object has the wrong size"));
    }
    Ok(u64_at(body, 0))
}

fn encode_seal(epoch: u64, sealed: &BTreeSet<Named>) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + 16 * sealed.len());
    b.extend_from_slice(SEAL_MAGIC);
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    for &(t, e) in sealed {
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&e.to_le_bytes());
    }
    with_crc(b)
}

fn decode_seal(bytes: &[u8], epoch: u64) -> std::result::Result<BTreeSet<Named>, CorruptionKind> {
    let body = check_object(bytes, SEAL_MAGIC, epoch)?;
    let bad = CorruptionKind::BadHeader("seal object's count does not match its size");
    let (count, pairs) = body.split_at_checked(4).ok_or(bad.clone())?;
    let mut c = [0u8; 4];
    c.copy_from_slice(count);
    let count = u32::from_le_bytes(c) as usize;
    if count > SEAL_ENTRIES_MAX || pairs.len() != count * 16 {
        return Err(bad);
    }
    Ok(pairs
        .chunks_exact(16)
        .map(|p| (u64_at(p, 0), u64_at(p, 8)))
        .collect())
}

fn seal_bytes_max() -> u64 {
    (24 + 16 * SEAL_ENTRIES_MAX) as u64
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
    /// The newest counting checkpoint that passed every check, with its
    /// object's name; `None` if there is none.
    pub checkpoint: Option<(PathBuf, Checkpoint<G>)>,
    /// Newer counting checkpoints that were skipped, newest first.
    pub skipped: Vec<SkippedObject>,
    /// Checkpoints that do not count, as (batch time, epoch), newest first:
    /// written by a driver after a newer one took over and sealed.
    pub fenced: Vec<Named>,
}

/// A checkpoint read by [`ObjectCheckpointStore::read_all_raw`]: batch
/// time, object, and the checkpoint (graph as bytes) or why it is unusable.
pub type RawObject = (u64, PathBuf, Result<Checkpoint<Vec<u8>>>);

/// The checkpoints by whether they count.
struct Verdict {
    /// Counting, newest first.
    counting: Vec<Named>,
    /// Not counting because a sealed fence leaves them out: safe to delete.
    excluded: Vec<Named>,
    /// Not counting because the fence that decides is not sealed yet.
    unsealed: Vec<Named>,
}

/// Checkpoints under an object-storage prefix, fenced by epochs.
///
/// [`ObjectCheckpointStore::open`] takes a new epoch (see the module's
/// documentation); a store opened earlier on the same prefix then gets
/// [`Error::Fenced`] from `write`, and what it writes after the new store's
/// seal never counts. [`ObjectCheckpointStore::open_read_only`] reads
/// without taking an epoch (for tools and monitors: it fences nobody).
#[derive(Debug)]
pub struct ObjectCheckpointStore {
    loc: ObjectLocation,
    keep: usize,
    /// `None`: read-only.
    epoch: Option<u64>,
    /// Held by writes: the next write sequence number within this epoch.
    write_lock: Mutex<u64>,
}

impl ObjectCheckpointStore {
    /// Open the store at `loc` without taking an epoch: `latest`, `list`
    /// and `journal_floor` work, `write` fails with [`Error::ReadOnly`].
    pub fn open_read_only(loc: ObjectLocation) -> ObjectCheckpointStore {
        ObjectCheckpointStore {
            loc,
            keep: usize::MAX,
            epoch: None,
            write_lock: Mutex::new(1),
        }
    }

    /// Open the store at `loc` and take a new epoch:
    /// 1. create the fence of the next epoch with a conditional PUT (if
    ///    another store created it first, try the next epoch; a PUT that
    ///    finds an object is told apart from a retry of its own by the
    ///    nonce);
    /// 2. seal every fence up to this one that has no seal yet, listing the
    ///    checkpoints of older epochs as they are now.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if `keep` is 0; [`Error::Remote`] if a
    /// request fails (a fence may have been created: the next opening
    /// seals it); [`Error::Corruption`] if the epochs are exhausted or an
    /// object this needs is damaged.
    pub fn open(loc: ObjectLocation, opts: CheckpointOptions) -> Result<ObjectCheckpointStore> {
        if opts.keep == 0 {
            return Err(Error::InvalidOptions("keep must be at least 1"));
        }
        let nonce = crate::wal::random_id();
        let mut owned = None;
        for _ in 0..TAKEOVER_ATTEMPTS {
            let newest = list_fences(&loc)?.last().copied().unwrap_or(0);
            let epoch = newest.checked_add(1).ok_or_else(|| {
                Error::corruption(
                    loc.display(&fence_name(newest)),
                    0,
                    CorruptionKind::BadHeader("no epoch left after this fence"),
                )
            })?;
            let name = fence_name(epoch);
            let created = loc.put_new(&name, encode_fence(epoch, nonce))? == Created::Yes;
            // A conditional PUT can fail after it landed (and be retried),
            // or fail spuriously: only the object says whose it is.
            let ours = created
                || match loc.get(&name, FENCE_BYTES as u64)? {
                    Some(bytes) => {
                        decode_fence(&bytes, epoch)
                            .map_err(|k| Error::corruption(loc.display(&name), 0, k))?
                            == nonce
                    }
                    None => false,
                };
            if ours {
                owned = Some(epoch);
                break;
            }
        }
        let Some(epoch) = owned else {
            return Err(Error::Remote {
                op: "take epoch",
                location: loc.url().to_string(),
                source: "other stores kept taking every new epoch first".into(),
            });
        };
        let store = ObjectCheckpointStore {
            loc,
            keep: opts.keep,
            epoch: Some(epoch),
            write_lock: Mutex::new(1),
        };
        store.seal_up_to(epoch)?;
        Ok(store)
    }

    /// Write the missing seals of fences up to `epoch`.
    fn seal_up_to(&self, epoch: u64) -> Result<()> {
        let sealed: BTreeSet<u64> = self
            .loc
            .list(EPOCHS)?
            .iter()
            .filter_map(|f| parse_seal(f))
            .collect();
        for fence in list_fences(&self.loc)? {
            if fence > epoch || sealed.contains(&fence) {
                continue;
            }
            // Listed after the fence exists: everything acknowledged before
            // it is here.
            let older: BTreeSet<Named> = list_checkpoints(&self.loc)?
                .into_iter()
                .filter(|&(_, e)| e < fence)
                .collect();
            if older.len() > SEAL_ENTRIES_MAX {
                return Err(Error::TooLarge {
                    size: older.len() as u64,
                    max: SEAL_ENTRIES_MAX as u64,
                });
            }
            // Another store may seal it first; any seal listed after the
            // fence is a correct one, and the first one stays.
            self.loc
                .put_new(&seal_name(fence), encode_seal(fence, &older))?;
        }
        Ok(())
    }

    /// The epoch this store took; `None` if it is read-only.
    pub fn epoch(&self) -> Option<u64> {
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

    /// Write an encoded checkpoint as one object (one conditional PUT:
    /// readers see all of it or none), then apply retention. Returns the
    /// object's name. When `Ok` returns, no newer epoch existed after the
    /// PUT, so the checkpoint counts for every reader from now on, and it is
    /// stored as the object store stores objects (S3: redundantly, once the
    /// PUT returned).
    ///
    /// # Errors
    /// - [`Error::Fenced`] if a newer epoch exists. Found before the PUT:
    ///   nothing was written. Found after it: the checkpoint counts only if
    ///   it landed before the new epoch's seal; treat it as not written and
    ///   stop using this store.
    /// - [`Error::Remote`] if a request fails: the checkpoint may or may not
    ///   have landed; treat it as not written. Earlier checkpoints are
    ///   untouched (retention runs only after a write succeeded).
    /// - [`Error::ReadOnly`] for a read-only store.
    pub fn write_encoded(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf> {
        let Some(epoch) = self.epoch else {
            return Err(Error::ReadOnly);
        };
        let mut next = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.check_not_fenced(epoch)?;
        let name = checkpoint_name(ckpt.batch_time(), epoch);
        // Write order within the epoch; epochs order the stores.
        let seq = *next;
        *next += 1;
        let (header, body) = ckpt.stamped(seq);
        let mut bytes = Vec::with_capacity(header.len() + body.len());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(body);
        if self.loc.put_new(&name, bytes)? == Created::AlreadyExists {
            // This epoch wrote this batch time before (or a retry of this
            // PUT landed): fine if the bytes are the same, but for the
            // write sequence number.
            let max = ckpt.as_bytes().len() as u64;
            let existing = match self.loc.get(&name, max) {
                Ok(bytes) => bytes,
                Err(Error::TooLarge { .. }) => None,
                Err(e) => return Err(e),
            };
            let same = existing.as_deref().is_some_and(|e| {
                let theirs = CheckpointHeader::decode(e).map(|h| h.write_seq);
                theirs.is_ok_and(|s| {
                    let (h, b) = ckpt.stamped(s);
                    e.len() == h.len() + b.len() && e[..h.len()] == h && &e[h.len()..] == b
                })
            });
            if !same {
                return Err(Error::Remote {
                    op: "put checkpoint",
                    location: self.loc.display(&name).display().to_string(),
                    source: "another checkpoint of this batch time exists in this epoch".into(),
                });
            }
        }
        self.check_not_fenced(epoch)?;
        // The checkpoint is written and counts; a failed cleanup is not a
        // failed write, and the next write retries it.
        let _ = self.retain(ckpt.batch_time(), epoch);
        Ok(self.loc.display(&name))
    }

    fn check_not_fenced(&self, epoch: u64) -> Result<()> {
        let newest = list_fences(&self.loc)?.last().copied().unwrap_or(0);
        if newest > epoch {
            return Err(Error::Fenced {
                epoch,
                newer: newest,
            });
        }
        Ok(())
    }

    /// [`Self::verdict`], refusing to answer while a takeover is half done:
    /// without the seal, checkpoints that count (acknowledged ones among
    /// them) cannot be told from a fenced driver's stragglers.
    fn settled_verdict(&self) -> Result<Verdict> {
        let v = self.verdict()?;
        if !v.unsealed.is_empty() {
            let fences = list_fences(&self.loc)?;
            let oldest = v.unsealed.iter().map(|&(_, e)| e).min().unwrap_or(0);
            let fence = fences.into_iter().find(|&f| f > oldest).unwrap_or(0);
            return Err(Error::TakeoverInProgress { fence });
        }
        let mut v = v;
        v.counting = self.in_write_order(v.counting)?;
        Ok(v)
    }

    /// `counting` newest first in write order: by epoch, then the write
    /// sequence number in each header, then batch time (see
    /// `checkpoint::backend::rank`). Reads one header per checkpoint.
    fn in_write_order(&self, counting: Vec<Named>) -> Result<Vec<Named>> {
        let mut listed = Vec::with_capacity(counting.len());
        for (t, e) in counting {
            let name = checkpoint_name(t, e);
            let order = match self.loc.get_head(&name, CHECKPOINT_HEADER_BYTES as u64)? {
                Some(head) => CheckpointHeader::decode(&head)
                    .ok()
                    .filter(|h| h.batch_time == t)
                    .map(|h| (e, h.write_seq)),
                None => None,
            };
            listed.push(((t, e), order));
        }
        Ok(
            crate::checkpoint::rank(listed, |&((t, _), order)| (t, order))
                .into_iter()
                .map(|(named, _)| named)
                .collect(),
        )
    }

    /// Sort every checkpoint by whether it counts.
    fn verdict(&self) -> Result<Verdict> {
        // The order of these listings is load-bearing: checkpoints first,
        // then fences. A checkpoint that landed after the seal of the fence
        // that decides it was listed after that fence existed, so the fence
        // listing taken next includes that fence (and every older one).
        // Listing fences first would judge a late checkpoint against a stale
        // fence list and count it.
        let checkpoints = list_checkpoints(&self.loc)?;
        let fences = list_fences(&self.loc)?;
        let mut seals: BTreeMap<u64, Option<BTreeSet<Named>>> = BTreeMap::new();
        let mut v = Verdict {
            counting: Vec::new(),
            excluded: Vec::new(),
            unsealed: Vec::new(),
        };
        for (t, e) in checkpoints {
            // The oldest fence newer than the checkpoint's epoch decides.
            let Some(&fence) = fences.iter().find(|&&f| f > e) else {
                v.counting.push((t, e));
                continue;
            };
            let seal = match seals.entry(fence) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(self.read_seal(fence)?)
                }
            };
            match seal {
                Some(sealed) if sealed.contains(&(t, e)) => v.counting.push((t, e)),
                Some(_) => v.excluded.push((t, e)),
                None => v.unsealed.push((t, e)),
            }
        }
        for list in [&mut v.counting, &mut v.excluded, &mut v.unsealed] {
            list.sort_unstable_by(|a, b| b.cmp(a));
        }
        Ok(v)
    }

    /// The seal of `fence`, or `None` if it is not written yet.
    fn read_seal(&self, fence: u64) -> Result<Option<BTreeSet<Named>>> {
        let name = seal_name(fence);
        let corrupt = |kind| Error::corruption(self.loc.display(&name), 0, kind);
        match self.loc.get(&name, seal_bytes_max()) {
            Ok(Some(bytes)) => Ok(Some(decode_seal(&bytes, fence).map_err(corrupt)?)),
            Ok(None) => Ok(None),
            Err(Error::TooLarge { .. }) => Err(corrupt(CorruptionKind::BadHeader(
                "seal object is too large",
            ))),
            Err(e) => Err(e),
        }
    }

    /// Delete counting checkpoints beyond the newest `keep` (never the one
    /// just written) and those a sealed fence leaves out.
    fn retain(&self, batch_time: u64, epoch: u64) -> Result<()> {
        let v = self.settled_verdict()?;
        let old = v
            .counting
            .iter()
            .skip(self.keep)
            .filter(|&&n| n != (batch_time, epoch));
        for &(t, e) in old.chain(v.excluded.iter()) {
            self.loc.delete(&checkpoint_name(t, e))?;
        }
        Ok(())
    }

    /// The checkpoints that count, newest first in write order, as (batch
    /// time, epoch): by epoch, then the write sequence number in each
    /// header (one header read per checkpoint), then batch time.
    ///
    /// # Errors
    /// [`Error::Remote`]; [`Error::Corruption`] for a damaged fence or seal;
    /// [`Error::TakeoverInProgress`] while a newer fence has no seal yet.
    pub fn list(&self) -> Result<Vec<Named>> {
        Ok(self.settled_verdict()?.counting)
    }

    /// The newest counting checkpoint that passes every check, trying in
    /// write order (as [`Self::list`]); damaged, undecodable or unreadable ones
    /// are skipped and listed. If one vanishes between the listing and the
    /// read (another store's retention), lists again. Writes nothing.
    ///
    /// # Errors
    /// [`Error::Remote`] if listing fails; [`Error::Corruption`] if a fence
    /// or seal is damaged (the rule cannot be applied without it, so nothing
    /// is guessed); [`Error::TakeoverInProgress`] if a driver has taken a
    /// newer epoch but not yet sealed it (retry shortly; a taker that died
    /// there is sealed by the next one to open).
    pub fn latest<G: DeserializeOwned>(&self) -> Result<ObjectLatest<G>> {
        let mut attempt = 0;
        'relist: loop {
            attempt += 1;
            let v = self.settled_verdict()?;
            let fenced = v.excluded;
            let mut skipped = Vec::new();
            for (t, e) in v.counting {
                let name = checkpoint_name(t, e);
                let object = self.loc.display(&name);
                match self.read(&name, t) {
                    Ok(Some(ckpt)) => {
                        return Ok(ObjectLatest {
                            checkpoint: Some((object, ckpt)),
                            skipped,
                            fenced,
                        });
                    }
                    Ok(None) if attempt < RELIST_ATTEMPTS => continue 'relist,
                    Ok(None) => skipped.push(SkippedObject {
                        object: object.clone(),
                        reason: Error::corruption(object, 0, CorruptionKind::ObjectVanished),
                    }),
                    Err(reason) => skipped.push(SkippedObject { object, reason }),
                }
            }
            return Ok(ObjectLatest {
                checkpoint: None,
                skipped,
                fenced,
            });
        }
    }

    /// Every counting checkpoint, newest first, read and checked with its
    /// graph left as bytes (for tools that do not know the graph's type):
    /// (batch time, object, the checkpoint or why it is unusable). A
    /// checkpoint deleted since the listing is left out.
    ///
    /// # Errors
    /// As [`ObjectCheckpointStore::list`].
    pub fn read_all_raw(&self) -> Result<Vec<RawObject>> {
        let max = (CHECKPOINT_HEADER_BYTES + DECODE_BYTES_MAX) as u64;
        let mut out = Vec::new();
        for (t, e) in self.settled_verdict()?.counting {
            let name = checkpoint_name(t, e);
            let object = self.loc.display(&name);
            let checked = match self.loc.get(&name, max) {
                Ok(None) => continue,
                Ok(Some(bytes)) => {
                    crate::checkpoint::decode_file_raw(&object, &bytes).and_then(|c| {
                        if c.batch_time == t {
                            Ok(c)
                        } else {
                            Err(Error::corruption(
                                &object,
                                0,
                                CorruptionKind::BadHeader("batch time does not match the name"),
                            ))
                        }
                    })
                }
                Err(e) => Err(e),
            };
            out.push((t, object, checked));
        }
        Ok(out)
    }

    /// One checkpoint object; `Ok(None)` if it is gone.
    fn read<G: DeserializeOwned>(
        &self,
        name: &str,
        batch_time: u64,
    ) -> Result<Option<Checkpoint<G>>> {
        let object = self.loc.display(name);
        let max = (CHECKPOINT_HEADER_BYTES + DECODE_BYTES_MAX) as u64;
        let Some(bytes) = self.loc.get(name, max)? else {
            return Ok(None);
        };
        let ckpt: Checkpoint<G> = decode_file(&object, &bytes)?;
        if ckpt.batch_time != batch_time {
            return Err(Error::corruption(
                &object,
                0,
                CorruptionKind::BadHeader("batch time does not match the object's name"),
            ));
        }
        Ok(Some(ckpt))
    }

    /// The smallest journal position among the counting checkpoints whose
    /// header checks (see [`CheckpointStore::journal_floor`]). Reads one
    /// header per object.
    ///
    /// # Errors
    /// As [`ObjectCheckpointStore::list`], and [`Error::Remote`] if a header
    /// cannot be read: a floor computed without it could retire journal
    /// events that checkpoint needs.
    pub fn journal_floor(&self) -> Result<Option<u64>> {
        let mut floor: Option<u64> = None;
        for (t, e) in self.settled_verdict()?.counting {
            let name = checkpoint_name(t, e);
            let Some(head) = self.loc.get_head(&name, CHECKPOINT_HEADER_BYTES as u64)? else {
                continue; // deleted by retention meanwhile: no longer needed
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

impl crate::checkpoint::CheckpointBackend for ObjectCheckpointStore {
    fn put(&self, ckpt: &EncodedCheckpoint) -> Result<PathBuf> {
        self.write_encoded(ckpt)
    }

    fn list(&self) -> Result<crate::checkpoint::Listing> {
        let listed = self
            .list()?
            .into_iter()
            .map(|(batch_time, epoch)| {
                let name = checkpoint_name(batch_time, epoch);
                crate::checkpoint::Listed {
                    batch_time,
                    shown: self.loc.display(&name),
                    name,
                    order: Some((epoch, 0)),
                }
            })
            .collect();
        Ok((listed, Vec::new()))
    }

    fn get(&self, listed: &crate::checkpoint::Listed) -> Result<Option<Vec<u8>>> {
        let max = (CHECKPOINT_HEADER_BYTES + DECODE_BYTES_MAX) as u64;
        self.loc.get(&listed.name, max)
    }

    fn journal_floor(&self) -> Result<Option<u64>> {
        self.journal_floor()
    }

    fn epoch(&self) -> Option<u64> {
        self.epoch
    }
}

/// The fences' epochs, ascending.
fn list_fences(loc: &ObjectLocation) -> Result<Vec<u64>> {
    let mut fences: Vec<u64> = loc
        .list(EPOCHS)?
        .iter()
        .filter_map(|f| parse_fence(f))
        .collect();
    fences.sort_unstable();
    Ok(fences)
}

/// Every checkpoint object's (batch time, epoch), unsorted.
fn list_checkpoints(loc: &ObjectLocation) -> Result<Vec<Named>> {
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
            parse_fence(fence_name(9).rsplit('/').next().unwrap()),
            Some(9)
        );
        assert_eq!(
            parse_seal(seal_name(9).rsplit('/').next().unwrap()),
            Some(9)
        );
        for stray in [
            "checkpoint-1-2.ckpt",
            "epoch-x",
            "checkpoint-.ckpt",
            "LOCK",
            "seal-1",
        ] {
            assert_eq!(parse_checkpoint(stray), None);
            assert_eq!(parse_fence(stray), None);
            assert_eq!(parse_seal(stray), None);
        }
    }

    #[test]
    fn fences_and_seals_reject_every_damage() {
        let fence = encode_fence(3, 1234);
        assert_eq!(decode_fence(&fence, 3), Ok(1234));
        assert!(decode_fence(&fence, 4).is_err());
        let sealed: BTreeSet<Named> = [(10, 1), (20, 2)].into_iter().collect();
        let seal = encode_seal(3, &sealed);
        assert_eq!(decode_seal(&seal, 3), Ok(sealed));
        for good in [&fence, &seal] {
            for cut in 0..good.len() {
                assert!(decode_fence(&good[..cut], 3).is_err());
                assert!(decode_seal(&good[..cut], 3).is_err());
            }
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    assert!(decode_fence(&bad, 3).is_err(), "byte {i} bit {bit}");
                    assert!(decode_seal(&bad, 3).is_err(), "byte {i} bit {bit}");
                }
            }
        }
        // A fence never passes as a seal, nor the other way round.
        assert!(decode_seal(&fence, 3).is_err());
        assert!(decode_fence(&seal, 3).is_err());
    }
}
