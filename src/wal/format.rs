//! The pure codec for segment headers and record frames. No I/O.
//!
//! Every offset below is the one `docs/FORMAT.md` names. All integers are
//! little-endian.
//!
//! Segment header (64 bytes, at offset 0 of every segment file):
//!
//! ```text
//!  0  magic                  8  b"STRMWAL\0"
//!  8  format_version         4  u32 = 1
//! 12  header_bytes           4  u32 = 64
//! 16  log_id                 8  u64, random, same in every segment of a log
//! 24  segment_seq            8  u64, matches the file name
//! 32  first_lsn              8  u64, LSN of the segment's first record
//! 40  unsynced_window_bytes  8  u64, writer's bound on unsynced bytes
//! 48  max_record_bytes       4  u32, writer's payload bound
//! 52  reserved               8  zero
//! 60  header_crc             4  u32, CRC32 of bytes 0..60
//! ```
//!
//! Record frame (40-byte header, then the payload):
//!
//! ```text
//!  0  crc          4  u32, CRC32 of identity ++ frame[4..40] ++ payload
//!  4  kind         1  u8 = 1 (a full record); 0 never valid
//!  5  reserved     3  zero
//!  8  payload_len  4  u32
//! 12  header_crc   4  u32, CRC32 of identity ++ frame[4..12] ++ frame[16..40]
//! 16  lsn          8  u64, >= 1
//! 24  time         8  u64, caller-supplied time (e.g. ms since the epoch)
//! 32  durable_lsn  8  u64, every LSN <= this was durable before this frame was written
//! 40  payload      payload_len bytes
//! ```
//!
//! `identity` is the 16 bytes `log_id (u64 LE) ++ segment_seq (u64 LE)` of the
//! segment holding the frame, so a stale frame left in a recycled file, or a
//! frame copied from another segment or log, fails its checksums.

use crate::error::CorruptionKind;
use crate::limits::{FRAME_HEADER_BYTES, LSN_MAX, SEGMENT_HEADER_BYTES};

/// The eight bytes every segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRMWAL\0";

/// The segment format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The only record kind in format version 1: a whole record.
pub const KIND_FULL: u8 = 1;

const SEG_HDR: usize = SEGMENT_HEADER_BYTES as usize;
const FRAME_HDR: usize = FRAME_HEADER_BYTES as usize;

/// The decoded fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Identity of the log; equal in all its segments.
    pub log_id: u64,
    /// The segment's sequence number; equals the number in its file name.
    pub segment_seq: u64,
    /// LSN of the first record the segment holds (or will hold).
    pub first_lsn: u64,
    /// The most bytes the writer ever had written but not yet synced in this
    /// segment; [`crate::limits::UNSYNCED_WINDOW_UNBOUNDED`] if it kept no bound.
    pub unsynced_window_bytes: u64,
    /// The largest payload the writer accepted.
    pub max_record_bytes: u32,
}

impl SegmentHeader {
    /// The 16 identity bytes mixed into every frame checksum of this segment.
    pub fn identity(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[0..8].copy_from_slice(&self.log_id.to_le_bytes());
        id[8..16].copy_from_slice(&self.segment_seq.to_le_bytes());
        id
    }

    /// Encode into the 64 on-disk bytes.
    pub fn encode(&self) -> [u8; SEG_HDR] {
        let mut b = [0u8; SEG_HDR];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.log_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[40..48].copy_from_slice(&self.unsynced_window_bytes.to_le_bytes());
        b[48..52].copy_from_slice(&self.max_record_bytes.to_le_bytes());
        // 52..60 reserved, zero.
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(SegmentHeader::decode(&b), Ok(*self));
        b
    }

    /// Decode and check the 64 on-disk bytes. Checks, in order: magic,
    /// version, header size, checksum, reserved bytes, first LSN >= 1.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, CorruptionKind> {
        if b.len() < SEG_HDR {
            return Err(CorruptionKind::Truncated);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(CorruptionKind::BadMagic);
        }
        let version = le_u32(&b[8..12]);
        if version != FORMAT_VERSION {
            return Err(CorruptionKind::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let stored = le_u32(&b[60..64]);
        let actual = crc32fast::hash(&b[0..60]);
        if stored != actual {
            return Err(CorruptionKind::ChecksumMismatch {
                expected: stored,
                actual,
            });
        }
        if u64::from(le_u32(&b[12..16])) != SEGMENT_HEADER_BYTES {
            return Err(CorruptionKind::BadHeader("header size is not 64"));
        }
        if b[52..60].iter().any(|&x| x != 0) {
            return Err(CorruptionKind::BadHeader("reserved bytes are not zero"));
        }
        let header = SegmentHeader {
            log_id: le_u64(&b[16..24]),
            segment_seq: le_u64(&b[24..32]),
            first_lsn: le_u64(&b[32..40]),
            unsynced_window_bytes: le_u64(&b[40..48]),
            max_record_bytes: le_u32(&b[48..52]),
        };
        if header.first_lsn == 0 {
            return Err(CorruptionKind::BadHeader("first LSN is zero"));
        }
        if header.first_lsn > LSN_MAX || header.segment_seq > LSN_MAX {
            return Err(CorruptionKind::BadHeader(
                "first LSN or sequence number out of range",
            ));
        }
        Ok(header)
    }
}

/// The decoded fields of a record frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub payload_len: u32,
    /// The record's log sequence number (>= 1).
    pub lsn: u64,
    /// The caller-supplied time stored with the record.
    pub time: u64,
    /// Every LSN up to and including this one was durable before this frame
    /// was written (0: none known).
    pub durable_lsn: u64,
    /// The whole-frame checksum stored at offset 0.
    pub crc: u32,
}

impl FrameHeader {
    /// Total bytes of the frame on disk: header plus payload.
    pub fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES + u64::from(self.payload_len)
    }
}

/// Why a frame header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeaderError {
    /// All 40 bytes are zero: the preallocated (never written) tail.
    Zero,
    /// Anything else; the header is not a valid frame.
    Invalid(CorruptionKindLite),
}

/// A copyable subset of [`CorruptionKind`] for the hot decoding path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptionKindLite {
    /// Kind byte is not [`KIND_FULL`].
    BadKind,
    /// Reserved bytes are not zero.
    Reserved,
    /// Header checksum mismatch.
    HeaderChecksum {
        /// Stored value.
        expected: u32,
        /// Computed value.
        actual: u32,
    },
    /// LSN is zero or above [`LSN_MAX`].
    ZeroLsn,
    /// `durable_lsn` is not below `lsn`.
    DurableNotBelow,
    /// Payload length over the bound.
    TooLong {
        /// The length read.
        len: u32,
        /// The bound.
        max: u32,
    },
}

impl From<CorruptionKindLite> for CorruptionKind {
    fn from(k: CorruptionKindLite) -> Self {
        match k {
            CorruptionKindLite::BadKind => CorruptionKind::BadFrame("unknown record kind"),
            CorruptionKindLite::Reserved => CorruptionKind::BadFrame("reserved bytes are not zero"),
            CorruptionKindLite::HeaderChecksum { expected, actual } => {
                CorruptionKind::ChecksumMismatch { expected, actual }
            }
            CorruptionKindLite::ZeroLsn => CorruptionKind::BadFrame("LSN is zero or out of range"),
            CorruptionKindLite::DurableNotBelow => {
                CorruptionKind::BadFrame("durable LSN is not below the record's LSN")
            }
            CorruptionKindLite::TooLong { len, max } => CorruptionKind::LengthOutOfBounds {
                len: u64::from(len),
                max: u64::from(max),
            },
        }
    }
}

/// Append the frame for `payload` to `out`. `header.crc` is ignored and
/// computed here. The caller guarantees `payload.len() == header.payload_len`.
pub fn encode_frame(identity: &[u8; 16], header: &FrameHeader, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(payload.len() as u64, u64::from(header.payload_len));
    debug_assert!(header.lsn >= 1 && header.durable_lsn < header.lsn);
    let mut h = [0u8; FRAME_HDR];
    h[4] = KIND_FULL;
    h[8..12].copy_from_slice(&header.payload_len.to_le_bytes());
    h[16..24].copy_from_slice(&header.lsn.to_le_bytes());
    h[24..32].copy_from_slice(&header.time.to_le_bytes());
    h[32..40].copy_from_slice(&header.durable_lsn.to_le_bytes());
    let hcrc = header_crc(identity, &h);
    h[12..16].copy_from_slice(&hcrc.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(identity);
    hasher.update(&h[4..FRAME_HDR]);
    hasher.update(payload);
    let crc = hasher.finalize();
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

fn header_crc(identity: &[u8; 16], h: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(identity);
    hasher.update(&h[4..12]);
    hasher.update(&h[16..FRAME_HDR]);
    hasher.finalize()
}

/// Decode and check a frame header (the 40 bytes at a frame's offset):
/// kind, reserved bytes, header checksum, LSN, length bound. Once this
/// returns `Ok`, `payload_len` can be trusted to be the length the writer
/// wrote (up to a 2^-32 chance) and is at most `max_payload`.
pub fn decode_frame_header(
    identity: &[u8; 16],
    h: &[u8; FRAME_HDR],
    max_payload: u32,
) -> Result<FrameHeader, FrameHeaderError> {
    use CorruptionKindLite as K;
    if h.iter().all(|&b| b == 0) {
        return Err(FrameHeaderError::Zero);
    }
    let bad = FrameHeaderError::Invalid;
    if h[4] != KIND_FULL {
        return Err(bad(K::BadKind));
    }
    if h[5..8] != [0, 0, 0] {
        return Err(bad(K::Reserved));
    }
    let stored = le_u32(&h[12..16]);
    let actual = header_crc(identity, h);
    if stored != actual {
        return Err(bad(K::HeaderChecksum {
            expected: stored,
            actual,
        }));
    }
    let header = FrameHeader {
        crc: le_u32(&h[0..4]),
        payload_len: le_u32(&h[8..12]),
        lsn: le_u64(&h[16..24]),
        time: le_u64(&h[24..32]),
        durable_lsn: le_u64(&h[32..40]),
    };
    if header.lsn == 0 || header.lsn > LSN_MAX {
        return Err(bad(K::ZeroLsn));
    }
    if header.durable_lsn >= header.lsn {
        return Err(bad(K::DurableNotBelow));
    }
    if header.payload_len > max_payload {
        return Err(bad(K::TooLong {
            len: header.payload_len,
            max: max_payload,
        }));
    }
    Ok(header)
}

/// Check a payload against its decoded frame header. `h` is the raw 40-byte
/// header the [`FrameHeader`] was decoded from.
pub fn check_payload(
    identity: &[u8; 16],
    h: &[u8; FRAME_HDR],
    header: &FrameHeader,
    payload: &[u8],
) -> Result<(), CorruptionKind> {
    if payload.len() as u64 != u64::from(header.payload_len) {
        return Err(CorruptionKind::Truncated);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(identity);
    hasher.update(&h[4..FRAME_HDR]);
    hasher.update(payload);
    let actual = hasher.finalize();
    if actual != header.crc {
        return Err(CorruptionKind::ChecksumMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Decode and check the whole frame at the start of `bytes` (header, then
/// payload): what [`decode_frame_header`] and [`check_payload`] check, plus
/// that `bytes` holds all of it. An all-zero header is a bad frame here.
pub fn check_frame(
    identity: &[u8; 16],
    bytes: &[u8],
    max_payload: u32,
) -> Result<FrameHeader, CorruptionKind> {
    let h: &[u8; FRAME_HDR] = bytes
        .get(..FRAME_HDR)
        .and_then(|b| b.try_into().ok())
        .ok_or(CorruptionKind::Truncated)?;
    let header = match decode_frame_header(identity, h, max_payload) {
        Ok(header) => header,
        Err(FrameHeaderError::Zero) => return Err(CorruptionKind::BadFrame("zero frame")),
        Err(FrameHeaderError::Invalid(k)) => return Err(k.into()),
    };
    let end = FRAME_HDR + header.payload_len as usize;
    let payload = bytes.get(FRAME_HDR..end).ok_or(CorruptionKind::Truncated)?;
    check_payload(identity, h, &header, payload)?;
    Ok(header)
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
