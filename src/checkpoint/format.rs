//! The pure codec for checkpoint files. No I/O.
//!
//! Every offset below is the one "Checkpoint files" section of `docs/FORMAT.md` names. All
//! integers are little-endian.
//!
//! A checkpoint file is a 48-byte header followed by the body:
//!
//! ```text
//!  0  magic           8  b"STRMCKPT"
//!  8  format_version  4  u32 = 1
//! 12  header_bytes    4  u32 = 48
//! 16  batch_time      8  u64, equals the file name's and the body's
//! 24  journal_lsn     8  u64, equals the body's
//! 32  body_len        8  u64, bytes after the header; the file is exactly 48 + body_len
//! 40  body_crc        4  u32, CRC32 of the body (bytes 48..48+body_len)
//! 44  header_crc      4  u32, CRC32 of bytes 0..44
//! 48  body            body_len bytes: the bincode encoding of `Envelope`
//! ```
//!
//! The body is the [`crate::codec`] encoding of `Envelope`: every field of
//! [`Checkpoint`], except that the graph is kept as its own bincode bytes
//! (`graph_bytes`) next to its `graph_version`, so a later version can hand
//! old graph bytes to a migration hook instead of decoding them as today's
//! type.

use super::Checkpoint;
use crate::codec;
use crate::error::{CorruptionKind, Error, Result};
use crate::limits::DECODE_BYTES_MAX;
use crate::tracker::TrackerState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The eight bytes every checkpoint file starts with.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"STRMCKPT";

/// The checkpoint format version this build writes, and the newest it reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// Size of a checkpoint file's header, in bytes. The body starts here.
pub const CHECKPOINT_HEADER_BYTES: usize = 48;

const HDR: usize = CHECKPOINT_HEADER_BYTES;

/// The decoded fields of a checkpoint file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The checkpoint's batch time; equals the number in the file name and
    /// the `batch_time` in the body.
    pub batch_time: u64,
    /// The checkpoint's journal position; equals `journal_lsn` in the body.
    /// In the header so retention of the journal can learn every kept
    /// checkpoint's position from 48 bytes per file.
    pub journal_lsn: u64,
    /// Length of the body in bytes (the file is exactly header + body).
    pub body_len: u64,
    /// CRC32 of the body.
    pub body_crc: u32,
}

impl CheckpointHeader {
    /// Encode into the 48 on-disk bytes.
    pub fn encode(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..12].copy_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HDR as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.batch_time.to_le_bytes());
        b[24..32].copy_from_slice(&self.journal_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.body_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check the header at the start of `b` (a prefix of the
    /// file, at least 48 bytes long to pass). Checks, in order: length,
    /// magic, version, header checksum, header size, body length bound.
    /// The damage is at offset 0 of the file in every case.
    pub fn decode(b: &[u8]) -> Result<CheckpointHeader, CorruptionKind> {
        if b.len() < HDR {
            return Err(CorruptionKind::Truncated);
        }
        if b[0..8] != CHECKPOINT_MAGIC {
            return Err(CorruptionKind::BadMagic);
        }
        let version = le_u32(&b[8..12]);
        if version != CHECKPOINT_FORMAT_VERSION {
            return Err(CorruptionKind::UnsupportedVersion {
                found: version,
                supported: CHECKPOINT_FORMAT_VERSION,
            });
        }
        let stored = le_u32(&b[44..48]);
        let actual = crc32fast::hash(&b[0..44]);
        if stored != actual {
            return Err(CorruptionKind::ChecksumMismatch {
                expected: stored,
                actual,
            });
        }
        if le_u32(&b[12..16]) as usize != HDR {
            return Err(CorruptionKind::BadHeader("header size is not 48"));
        }
        let header = CheckpointHeader {
            batch_time: le_u64(&b[16..24]),
            journal_lsn: le_u64(&b[24..32]),
            body_len: le_u64(&b[32..40]),
            body_crc: le_u32(&b[40..44]),
        };
        if header.body_len > DECODE_BYTES_MAX as u64 {
            return Err(CorruptionKind::LengthOutOfBounds {
                len: header.body_len,
                max: DECODE_BYTES_MAX as u64,
            });
        }
        Ok(header)
    }

    /// Check that a file of `file_len` bytes holds exactly this header and
    /// its body. A shorter file is [`CorruptionKind::Truncated`]; a longer
    /// one is [`CorruptionKind::BadHeader`]. The damage is at offset 48.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), CorruptionKind> {
        let have = file_len.saturating_sub(HDR as u64);
        if have < self.body_len {
            Err(CorruptionKind::Truncated)
        } else if have > self.body_len {
            Err(CorruptionKind::BadHeader(
                "file is longer than header + body",
            ))
        } else {
            Ok(())
        }
    }
}

/// What the body holds, for encoding: borrows from the checkpoint. Field
/// order is the on-disk order and must match [`Envelope`].
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    batch_time: u64,
    batch_interval_ms: u64,
    graph_version: u32,
    graph_bytes: codec::BytesRef<'a>,
    pending_batches: &'a Vec<u64>,
    journal_lsn: u64,
    tracker: &'a TrackerState,
    source_offsets: &'a BTreeMap<String, String>,
}

/// What the body holds, decoded. Field order is the on-disk order.
#[derive(Deserialize)]
struct Envelope {
    batch_time: u64,
    batch_interval_ms: u64,
    graph_version: u32,
    graph_bytes: codec::ByteBuf,
    pending_batches: Vec<u64>,
    journal_lsn: u64,
    tracker: TrackerState,
    source_offsets: BTreeMap<String, String>,
}

/// Encode `ckpt` into the whole file's bytes (header and body).
///
/// # Errors
/// - [`Error::Encode`] if the graph (or anything else) refuses to serialize.
/// - [`Error::TooLarge`] if the graph or the body exceeds
///   [`DECODE_BYTES_MAX`]: a reader would reject it.
pub fn encode_file<G: Serialize>(ckpt: &Checkpoint<G>) -> Result<Vec<u8>> {
    let graph_bytes = codec::encode(&ckpt.graph, "checkpoint graph")?;
    check_size(graph_bytes.len())?;
    let envelope = EnvelopeRef {
        batch_time: ckpt.batch_time,
        batch_interval_ms: ckpt.batch_interval_ms,
        graph_version: ckpt.graph_version,
        graph_bytes: codec::BytesRef(&graph_bytes),
        pending_batches: &ckpt.pending_batches,
        journal_lsn: ckpt.journal_lsn,
        tracker: &ckpt.tracker,
        source_offsets: &ckpt.source_offsets,
    };
    let body = codec::encode(&envelope, "checkpoint")?;
    check_size(body.len())?;
    let header = CheckpointHeader {
        batch_time: ckpt.batch_time,
        journal_lsn: ckpt.journal_lsn,
        body_len: body.len() as u64,
        body_crc: crc32fast::hash(&body),
    };
    let mut out = Vec::with_capacity(HDR + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    debug_assert_eq!(CheckpointHeader::decode(&out), Ok(header));
    debug_assert_eq!(header.check_file_len(out.len() as u64), Ok(()));
    Ok(out)
}

fn check_size(len: usize) -> Result<()> {
    if len > DECODE_BYTES_MAX {
        return Err(Error::TooLarge {
            size: len as u64,
            max: DECODE_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// Decode and check the body of a checkpoint whose header is `header`.
/// `file` names the file in errors. Checks, in order: body length, body
/// checksum; then decodes the envelope, checks its batch time against the
/// header's, and decodes the graph as `G`.
///
/// # Errors
/// - [`Error::Corruption`] (offset 48) if the body is shorter or longer than
///   the header says, fails its checksum, or disagrees with the header.
/// - [`Error::Decode`] if bytes that passed the checksum do not decode: the
///   envelope (`what = "checkpoint"`), or the graph as `G`
///   (`what = "checkpoint graph"`: the engine's graph type changed).
pub fn decode_body<G: DeserializeOwned>(
    file: &Path,
    header: &CheckpointHeader,
    body: &[u8],
) -> Result<Checkpoint<G>> {
    let raw = decode_body_raw(file, header, body)?;
    let graph = codec::decode(&raw.graph, "checkpoint graph")?;
    Ok(raw.with_graph(graph))
}

/// [`decode_body`] without decoding the graph: `graph` holds the graph's
/// encoded bytes as stored, for tools that do not know the engine's type.
///
/// # Errors
/// As [`decode_body`], except that the graph is never decoded.
pub fn decode_body_raw(
    file: &Path,
    header: &CheckpointHeader,
    body: &[u8],
) -> Result<Checkpoint<Vec<u8>>> {
    let corrupt = |kind| Error::corruption(file, HDR as u64, kind);
    header
        .check_file_len((HDR as u64).saturating_add(body.len() as u64))
        .map_err(corrupt)?;
    let actual = crc32fast::hash(body);
    if actual != header.body_crc {
        return Err(corrupt(CorruptionKind::ChecksumMismatch {
            expected: header.body_crc,
            actual,
        }));
    }
    let env: Envelope = codec::decode(body, "checkpoint")?;
    if env.batch_time != header.batch_time || env.journal_lsn != header.journal_lsn {
        return Err(corrupt(CorruptionKind::BadHeader(
            "batch time or journal LSN in the header and the body differ",
        )));
    }
    Ok(Checkpoint {
        batch_time: env.batch_time,
        batch_interval_ms: env.batch_interval_ms,
        graph: env.graph_bytes.0,
        graph_version: env.graph_version,
        pending_batches: env.pending_batches,
        journal_lsn: env.journal_lsn,
        tracker: env.tracker,
        source_offsets: env.source_offsets,
    })
}

/// [`decode_file`] without decoding the graph (see [`decode_body_raw`]).
///
/// # Errors
/// As [`decode_file`], except that the graph is never decoded.
pub fn decode_file_raw(file: &Path, bytes: &[u8]) -> Result<Checkpoint<Vec<u8>>> {
    let header = CheckpointHeader::decode(bytes).map_err(|k| Error::corruption(file, 0, k))?;
    decode_body_raw(file, &header, &bytes[HDR..])
}

/// Decode and check a whole checkpoint file held in `bytes`; `file` names
/// it in errors. Checks, in order: length >= 48, magic, version, header
/// checksum, header size, body length bound, body length = file length - 48,
/// body checksum; only then decodes. Never panics, never allocates from a
/// length it has not checked.
///
/// # Errors
/// - [`Error::Corruption`] for any failed check (a version this build does
///   not read is [`CorruptionKind::UnsupportedVersion`] naming both).
/// - [`Error::Decode`] as for [`decode_body`].
pub fn decode_file<G: DeserializeOwned>(file: &Path, bytes: &[u8]) -> Result<Checkpoint<G>> {
    let header = CheckpointHeader::decode(bytes).map_err(|k| Error::corruption(file, 0, k))?;
    decode_body(file, &header, &bytes[HDR..])
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint<Vec<String>> {
        Checkpoint {
            batch_time: 7_000,
            batch_interval_ms: 1_000,
            graph: vec!["map".into(), "reduce".into()],
            graph_version: 3,
            pending_batches: vec![6_000, 7_000],
            journal_lsn: 42,
            tracker: TrackerState::default(),
            source_offsets: [("kafka/0".to_string(), "17".to_string())].into(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let c = sample();
        let bytes = encode_file(&c).expect("encode");
        assert_eq!(&bytes[0..8], b"STRMCKPT");
        assert_eq!(le_u32(&bytes[8..12]), 1);
        assert_eq!(le_u32(&bytes[12..16]), 48);
        assert_eq!(le_u64(&bytes[16..24]), 7_000);
        assert_eq!(le_u64(&bytes[24..32]), 42);
        assert_eq!(le_u64(&bytes[32..40]), (bytes.len() - 48) as u64);
        assert_eq!(le_u32(&bytes[40..44]), crc32fast::hash(&bytes[48..]));
        assert_eq!(le_u32(&bytes[44..48]), crc32fast::hash(&bytes[..44]));
        let back: Checkpoint<Vec<String>> = decode_file(Path::new("f"), &bytes).expect("decode");
        assert_eq!(back, c);
    }

    #[test]
    fn body_starts_with_the_documented_fields() {
        // bincode standard: varint integers (>= 251 takes a marker byte 251
        // then a u16), a byte vector as varint length then the bytes.
        let c = sample();
        let bytes = encode_file(&c).expect("encode");
        let graph = codec::encode(&c.graph, "g").expect("encode graph");
        let mut want = vec![251, 0x58, 0x1B, 251, 0xE8, 0x03, 3, graph.len() as u8];
        want.extend_from_slice(&graph);
        assert_eq!(&bytes[HDR..HDR + want.len()], want.as_slice());
    }

    #[test]
    fn header_checks_in_order() {
        let bytes = encode_file(&sample()).expect("encode");
        assert_eq!(
            CheckpointHeader::decode(&bytes[..47]),
            Err(CorruptionKind::Truncated)
        );
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert_eq!(CheckpointHeader::decode(&b), Err(CorruptionKind::BadMagic));
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            CheckpointHeader::decode(&b),
            Err(CorruptionKind::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        let mut b = bytes.clone();
        b[20] ^= 0x80;
        assert!(matches!(
            CheckpointHeader::decode(&b),
            Err(CorruptionKind::ChecksumMismatch { .. })
        ));
        // A header whose checksum is right but whose body length is absurd.
        let mut h = CheckpointHeader::decode(&bytes).expect("header");
        h.body_len = u64::MAX;
        assert!(matches!(
            CheckpointHeader::decode(&h.encode()),
            Err(CorruptionKind::LengthOutOfBounds { .. })
        ));
    }

    #[test]
    fn body_length_must_match_the_file() {
        let bytes = encode_file(&sample()).expect("encode");
        let f = Path::new("f");
        let short = decode_file::<Vec<String>>(f, &bytes[..bytes.len() - 1]);
        assert!(matches!(
            short,
            Err(Error::Corruption {
                offset: 48,
                kind: CorruptionKind::Truncated,
                ..
            })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_file::<Vec<String>>(f, &long),
            Err(Error::Corruption {
                kind: CorruptionKind::BadHeader(_),
                ..
            })
        ));
    }

    #[test]
    fn a_changed_graph_type_is_a_decode_error() {
        let bytes = encode_file(&sample()).expect("encode");
        let r = decode_file::<(u64, u64, u64)>(Path::new("f"), &bytes);
        assert!(
            matches!(
                r,
                Err(Error::Decode {
                    what: "checkpoint graph",
                    ..
                })
            ),
            "{r:?}"
        );
    }
}
