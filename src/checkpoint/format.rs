//! The pure codec for checkpoint files. No I/O.
//!
//! Every offset below is the one "Checkpoint files" section of `docs/FORMAT.md` names. All
//! integers are little-endian.
//!
//! A checkpoint file is a header followed by the body. This build writes
//! format version 2, a 64-byte header:
//!
//! ```text
//!  0  magic           8  b"STRMCKPT"
//!  8  format_version  4  u32 = 2
//! 12  header_bytes    4  u32 = 64
//! 16  batch_time      8  u64, equals the file name's and the body's
//! 24  journal_lsn     8  u64, equals the body's
//! 32  body_len        8  u64, bytes after the header; the file is exactly 64 + body_len
//! 40  body_crc        4  u32, CRC32 of the body (bytes 64..64+body_len)
//! 44  graph_encoding  4  u32, how graph_bytes are encoded: 1 bincode, 2 CBOR
//! 48  write_seq       8  u64, the store's write sequence number (0: none)
//! 56  reserved        4  zero
//! 60  header_crc      4  u32, CRC32 of bytes 0..60
//! 64  body            body_len bytes: the bincode encoding of `Envelope`
//! ```
//!
//! and reads version 1 too, whose 48-byte header is the first 44 bytes
//! above then `header_crc` (CRC32 of bytes 0..44) at 44, with a bincode
//! graph and no write sequence number.
//!
//! The body is the [`crate::codec`] encoding of `Envelope`: every field of
//! [`Checkpoint`], except that the graph is kept as its own bytes
//! (`graph_bytes`, in the header's `graph_encoding`) next to its
//! `graph_version`, so a later version can hand old graph bytes to a
//! migration hook instead of decoding them as today's type.

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
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;

/// The oldest checkpoint format version this build reads.
pub const CHECKPOINT_FORMAT_VERSION_MIN: u32 = 1;

/// Size of the header this build writes, in bytes; the largest header it
/// reads (version 1 headers are [`CHECKPOINT_V1_HEADER_BYTES`]).
pub const CHECKPOINT_HEADER_BYTES: usize = 64;

/// Size of a version 1 header, in bytes.
pub const CHECKPOINT_V1_HEADER_BYTES: usize = 48;

const HDR: usize = CHECKPOINT_HEADER_BYTES;
const HDR_V1: usize = CHECKPOINT_V1_HEADER_BYTES;

/// How a checkpoint's graph is encoded inside its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphEncoding {
    /// bincode 2 through serde (the crate's [`crate::codec`]): compact and
    /// fast, but not self-describing: a field added to or removed from the
    /// graph type, or fields reordered, no longer decode. Version 1 files
    /// always hold it; the keyed state's snapshots use it.
    Bincode,
    /// CBOR (RFC 8949) through serde, structs as maps keyed by field name:
    /// a field added with `#[serde(default)]`, a field removed, or fields
    /// reordered still decode. The default for graphs.
    Cbor,
}

impl GraphEncoding {
    /// The number stored in the header.
    pub fn code(self) -> u32 {
        match self {
            GraphEncoding::Bincode => 1,
            GraphEncoding::Cbor => 2,
        }
    }

    fn from_code(code: u32) -> Option<GraphEncoding> {
        match code {
            1 => Some(GraphEncoding::Bincode),
            2 => Some(GraphEncoding::Cbor),
            _ => None,
        }
    }

    /// Encode `value` this way. `what` names it in errors.
    ///
    /// # Errors
    /// [`Error::Encode`] if `value` refuses to serialize.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, what: &'static str) -> Result<Vec<u8>> {
        match self {
            GraphEncoding::Bincode => codec::encode(value, what),
            GraphEncoding::Cbor => {
                let mut out = Vec::new();
                ciborium::ser::into_writer(value, &mut out).map_err(|e| Error::Encode {
                    what,
                    source: Box::new(e),
                })?;
                Ok(out)
            }
        }
    }

    /// Decode a `T` that must fill `bytes` exactly. Never allocates more
    /// than a bounded multiple of `bytes.len()` from a length inside them.
    ///
    /// # Errors
    /// [`Error::Decode`] if the bytes are not a `T` in this encoding;
    /// [`Error::TooLarge`] above [`DECODE_BYTES_MAX`].
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], what: &'static str) -> Result<T> {
        match self {
            GraphEncoding::Bincode => codec::decode(bytes, what),
            GraphEncoding::Cbor => {
                if bytes.len() > DECODE_BYTES_MAX {
                    return Err(Error::TooLarge {
                        size: bytes.len() as u64,
                        max: DECODE_BYTES_MAX as u64,
                    });
                }
                let mut rest = bytes;
                let value = ciborium::de::from_reader(&mut rest).map_err(|e| Error::Decode {
                    what,
                    source: Box::new(e),
                })?;
                if !rest.is_empty() {
                    return Err(Error::Decode {
                        what,
                        source: "trailing bytes after the encoded value".into(),
                    });
                }
                Ok(value)
            }
        }
    }
}

/// The decoded fields of a checkpoint file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The format version the file was written in (1 or 2).
    pub format_version: u32,
    /// The checkpoint's batch time; equals the number in the file name and
    /// the `batch_time` in the body.
    pub batch_time: u64,
    /// The checkpoint's journal position; equals `journal_lsn` in the body.
    /// In the header so retention of the journal can learn every kept
    /// checkpoint's position from one header per file.
    pub journal_lsn: u64,
    /// Length of the body in bytes (the file is exactly header + body).
    pub body_len: u64,
    /// CRC32 of the body.
    pub body_crc: u32,
    /// How the graph inside the body is encoded (version 1: bincode).
    pub graph_encoding: GraphEncoding,
    /// The store's write sequence number: a checkpoint written later has a
    /// larger one. 0: none (version 1 files, or bytes not yet written by a
    /// store).
    pub write_seq: u64,
}

impl CheckpointHeader {
    /// The size of this header on disk: where the body starts.
    pub fn header_bytes(&self) -> usize {
        if self.format_version == 1 {
            HDR_V1
        } else {
            HDR
        }
    }

    /// Encode into the 64 on-disk bytes of a version 2 header (whatever
    /// `format_version` says: this build writes only version 2).
    pub fn encode(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..12].copy_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HDR as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.batch_time.to_le_bytes());
        b[24..32].copy_from_slice(&self.journal_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.body_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.body_crc.to_le_bytes());
        b[44..48].copy_from_slice(&self.graph_encoding.code().to_le_bytes());
        b[48..56].copy_from_slice(&self.write_seq.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check the header at the start of `b` (a prefix of the
    /// file: 64 bytes, or fewer if the file is shorter). Checks, in order:
    /// length, magic, version, header checksum, header size, graph
    /// encoding, body length bound. The damage is at offset 0 of the file
    /// in every case.
    pub fn decode(b: &[u8]) -> Result<CheckpointHeader, CorruptionKind> {
        if b.len() < 12 {
            return Err(CorruptionKind::Truncated);
        }
        if b[0..8] != CHECKPOINT_MAGIC {
            return Err(CorruptionKind::BadMagic);
        }
        let version = le_u32(&b[8..12]);
        let len = match version {
            CHECKPOINT_FORMAT_VERSION_MIN => HDR_V1,
            CHECKPOINT_FORMAT_VERSION => HDR,
            _ => {
                return Err(CorruptionKind::UnsupportedVersion {
                    found: version,
                    supported: CHECKPOINT_FORMAT_VERSION,
                });
            }
        };
        if b.len() < len {
            return Err(CorruptionKind::Truncated);
        }
        let stored = le_u32(&b[len - 4..len]);
        let actual = crc32fast::hash(&b[0..len - 4]);
        if stored != actual {
            return Err(CorruptionKind::ChecksumMismatch {
                expected: stored,
                actual,
            });
        }
        if le_u32(&b[12..16]) as usize != len {
            return Err(CorruptionKind::BadHeader(
                "header size does not match the format version",
            ));
        }
        let (graph_encoding, write_seq) = if version == 1 {
            (GraphEncoding::Bincode, 0)
        } else {
            let enc = GraphEncoding::from_code(le_u32(&b[44..48]))
                .ok_or(CorruptionKind::BadHeader("unknown graph encoding"))?;
            if b[56..60] != [0; 4] {
                return Err(CorruptionKind::BadHeader(
                    "reserved header bytes are not zero",
                ));
            }
            (enc, le_u64(&b[48..56]))
        };
        let header = CheckpointHeader {
            format_version: version,
            batch_time: le_u64(&b[16..24]),
            journal_lsn: le_u64(&b[24..32]),
            body_len: le_u64(&b[32..40]),
            body_crc: le_u32(&b[40..44]),
            graph_encoding,
            write_seq,
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
    /// one is [`CorruptionKind::BadHeader`]. The damage is at the end of
    /// the header.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), CorruptionKind> {
        let have = file_len.saturating_sub(self.header_bytes() as u64);
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

/// Encode `ckpt` into the whole file's bytes (header and body), the graph
/// in CBOR (see [`encode_file_with`]).
///
/// # Errors
/// As [`encode_file_with`].
pub fn encode_file<G: Serialize>(ckpt: &Checkpoint<G>) -> Result<Vec<u8>> {
    encode_file_with(ckpt, GraphEncoding::Cbor)
}

/// Encode `ckpt` into the whole file's bytes (header and body), the graph
/// in `encoding`. The header's write sequence number is 0: the store
/// stamps it when it writes the file.
///
/// # Errors
/// - [`Error::Encode`] if the graph (or anything else) refuses to serialize.
/// - [`Error::TooLarge`] if the graph or the body exceeds
///   [`DECODE_BYTES_MAX`]: a reader would reject it.
pub fn encode_file_with<G: Serialize>(
    ckpt: &Checkpoint<G>,
    encoding: GraphEncoding,
) -> Result<Vec<u8>> {
    let graph_bytes = encoding.encode(&ckpt.graph, "checkpoint graph")?;
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
        format_version: CHECKPOINT_FORMAT_VERSION,
        batch_time: ckpt.batch_time,
        journal_lsn: ckpt.journal_lsn,
        body_len: body.len() as u64,
        body_crc: crc32fast::hash(&body),
        graph_encoding: encoding,
        write_seq: 0,
    };
    let mut out = Vec::with_capacity(HDR + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    debug_assert_eq!(CheckpointHeader::decode(&out), Ok(header));
    debug_assert_eq!(header.check_file_len(out.len() as u64), Ok(()));
    Ok(out)
}

/// The header of `file_bytes` (a whole file this build encoded) with its
/// write sequence number set to `seq`, checksum recomputed.
pub(crate) fn stamped_header(file_bytes: &[u8], seq: u64) -> [u8; HDR] {
    let mut h = [0u8; HDR];
    h.copy_from_slice(&file_bytes[..HDR]);
    h[48..56].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
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
/// - [`Error::Corruption`] (at the body's offset) if the body is shorter or longer than
///   the header says, fails its checksum, or disagrees with the header.
/// - [`Error::Decode`] if bytes that passed the checksum do not decode: the
///   envelope (`what = "checkpoint"`), or the graph as `G`
///   (`what = "checkpoint graph"`: the engine's graph type changed).
// Used by object storage and the tools (features `object-store`, `internals`).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn decode_body<G: DeserializeOwned>(
    file: &Path,
    header: &CheckpointHeader,
    body: &[u8],
) -> Result<Checkpoint<G>> {
    let raw = decode_body_raw(file, header, body)?;
    let graph = header
        .graph_encoding
        .decode(&raw.graph, "checkpoint graph")?;
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
    let at = header.header_bytes() as u64;
    let corrupt = |kind| Error::corruption(file, at, kind);
    header
        .check_file_len(at.saturating_add(body.len() as u64))
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
// Used by object storage and the tools (features `object-store`, `internals`).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn decode_file_raw(file: &Path, bytes: &[u8]) -> Result<Checkpoint<Vec<u8>>> {
    Ok(decode_file_stored(file, bytes)?.1)
}

/// [`decode_file_raw`], with the header (which says how the graph bytes
/// are encoded).
///
/// # Errors
/// As [`decode_file_raw`].
pub fn decode_file_stored(
    file: &Path,
    bytes: &[u8],
) -> Result<(CheckpointHeader, Checkpoint<Vec<u8>>)> {
    let header = CheckpointHeader::decode(bytes).map_err(|k| Error::corruption(file, 0, k))?;
    let body = bytes.get(header.header_bytes()..).unwrap_or_default();
    Ok((header, decode_body_raw(file, &header, body)?))
}

/// Decode and check a whole checkpoint file held in `bytes`; `file` names
/// it in errors. Checks, in order: the header's length, magic, version, header
/// checksum, header size, body length bound, body length = file length - header,
/// body checksum; only then decodes. Never panics, never allocates from a
/// length it has not checked.
///
/// # Errors
/// - [`Error::Corruption`] for any failed check (a version this build does
///   not read is [`CorruptionKind::UnsupportedVersion`] naming both).
/// - [`Error::Decode`] as for [`decode_body`].
// Used by object storage and the tools (features `object-store`, `internals`).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn decode_file<G: DeserializeOwned>(file: &Path, bytes: &[u8]) -> Result<Checkpoint<G>> {
    let header = CheckpointHeader::decode(bytes).map_err(|k| Error::corruption(file, 0, k))?;
    let body = bytes.get(header.header_bytes()..).unwrap_or_default();
    decode_body(file, &header, body)
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
        assert_eq!(le_u32(&bytes[8..12]), 2);
        assert_eq!(le_u32(&bytes[12..16]), 64);
        assert_eq!(le_u64(&bytes[16..24]), 7_000);
        assert_eq!(le_u64(&bytes[24..32]), 42);
        assert_eq!(le_u64(&bytes[32..40]), (bytes.len() - 64) as u64);
        assert_eq!(le_u32(&bytes[40..44]), crc32fast::hash(&bytes[64..]));
        assert_eq!(le_u32(&bytes[44..48]), 2, "CBOR graph");
        assert_eq!(le_u64(&bytes[48..56]), 0, "not stamped yet");
        assert_eq!(&bytes[56..60], &[0; 4]);
        assert_eq!(le_u32(&bytes[60..64]), crc32fast::hash(&bytes[..60]));
        let back: Checkpoint<Vec<String>> = decode_file(Path::new("f"), &bytes).expect("decode");
        assert_eq!(back, c);
        let stamped = stamped_header(&bytes, 9);
        let h = CheckpointHeader::decode(&stamped).expect("stamped header");
        assert_eq!(h.write_seq, 9);
    }

    /// A version 1 file, as the previous release wrote it: the 48-byte
    /// header and a bincode graph.
    fn v1_file(c: &Checkpoint<Vec<String>>) -> Vec<u8> {
        let v2 = encode_file_with(c, GraphEncoding::Bincode).expect("encode");
        let body = &v2[HDR..];
        let mut b = Vec::new();
        b.extend_from_slice(b"STRMCKPT");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&48u32.to_le_bytes());
        b.extend_from_slice(&c.batch_time.to_le_bytes());
        b.extend_from_slice(&c.journal_lsn.to_le_bytes());
        b.extend_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn version_1_files_still_decode() {
        let c = sample();
        let bytes = v1_file(&c);
        let h = CheckpointHeader::decode(&bytes).expect("v1 header");
        assert_eq!((h.format_version, h.header_bytes()), (1, 48));
        assert_eq!((h.graph_encoding, h.write_seq), (GraphEncoding::Bincode, 0));
        let back: Checkpoint<Vec<String>> = decode_file(Path::new("f"), &bytes).expect("decode");
        assert_eq!(back, c);
    }

    #[test]
    fn cbor_graphs_survive_added_and_removed_fields() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Old {
            name: String,
            dropped: u64,
            count: u64,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct New {
            count: u64,
            name: String,
            #[serde(default)]
            added: Vec<u8>,
        }
        let old = Old {
            name: "x".into(),
            dropped: 5,
            count: 3,
        };
        let bytes = GraphEncoding::Cbor.encode(&old, "g").expect("encode");
        let new: New = GraphEncoding::Cbor.decode(&bytes, "g").expect("decode");
        assert_eq!(
            new,
            New {
                count: 3,
                name: "x".into(),
                added: Vec::new()
            }
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(GraphEncoding::Cbor.decode::<New>(&trailing, "g").is_err());
    }

    #[test]
    fn body_starts_with_the_documented_fields() {
        // bincode standard: varint integers (>= 251 takes a marker byte 251
        // then a u16), a byte vector as varint length then the bytes.
        let c = sample();
        let bytes = encode_file(&c).expect("encode");
        let graph = GraphEncoding::Cbor
            .encode(&c.graph, "g")
            .expect("encode graph");
        let mut want = vec![251, 0x58, 0x1B, 251, 0xE8, 0x03, 3, graph.len() as u8];
        want.extend_from_slice(&graph);
        assert_eq!(&bytes[HDR..HDR + want.len()], want.as_slice());
    }

    #[test]
    fn header_checks_in_order() {
        let bytes = encode_file(&sample()).expect("encode");
        assert_eq!(
            CheckpointHeader::decode(&bytes[..63]),
            Err(CorruptionKind::Truncated)
        );
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert_eq!(CheckpointHeader::decode(&b), Err(CorruptionKind::BadMagic));
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            CheckpointHeader::decode(&b),
            Err(CorruptionKind::UnsupportedVersion {
                found: 3,
                supported: 2
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
                offset: 64,
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
