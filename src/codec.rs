//! The one place values become bytes: bincode 2 (standard configuration:
//! little-endian, variable-length integers) through serde, with a decode
//! limit so a length inside the bytes can never make the decoder allocate
//! more than 64 times the input's size (at least 1 MiB, at most
//! [`crate::limits::DECODE_BYTES_MAX`]).
//!
//! Checkpoints and journal events are checksummed before they are decoded, so
//! these functions only ever see bytes that a writer produced, or that an
//! adversary crafted; the limit covers the second case.

use crate::error::{Error, Result};
use crate::limits::DECODE_BYTES_MAX;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ DECODE_BYTES_MAX }>()
}

/// Encode `value`. `what` names it in errors.
pub fn encode<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| Error::Encode {
        what,
        source: Box::new(e),
    })
}

/// Encode `value` at the end of `out` (which keeps its allocation between
/// calls). `what` names it in errors.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    what: &'static str,
) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| Error::Encode {
            what,
            source: Box::new(e),
        })
}

/// Decode a `T` that must fill `bytes` exactly. `what` names it in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    decode_with!(bytes, what, decode_from_slice)
}

/// [`decode`] for a `T` that borrows from `bytes` (byte strings as
/// `&[u8]`: no copy, no allocation per field).
pub(crate) fn decode_borrowed<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T> {
    decode_with!(bytes, what, borrow_decode_from_slice)
}

/// The body of [`decode`] and [`decode_borrowed`], which differ only in
/// bincode's function.
macro_rules! decode_with {
    ($bytes:expr, $what:expr, $decode:ident) => {{
        let (bytes, what): (&[u8], &'static str) = ($bytes, $what);
        if bytes.len() > DECODE_BYTES_MAX {
            return Err(Error::TooLarge {
                size: bytes.len() as u64,
                max: DECODE_BYTES_MAX as u64,
            });
        }
        // bincode's limit is a type parameter: pick the smallest tier that
        // is at least 64 times the input, so a lying length in a few bytes
        // cannot claim a gigabyte.
        macro_rules! decode_limited {
            ($limit:expr) => {
                bincode::serde::$decode(
                    bytes,
                    bincode::config::standard().with_limit::<{ $limit }>(),
                )
            };
        }
        let result = match bytes.len() {
            n if n <= 16 << 10 => decode_limited!(1 << 20),
            n if n <= 256 << 10 => decode_limited!(16 << 20),
            n if n <= 4 << 20 => decode_limited!(256 << 20),
            _ => decode_limited!(DECODE_BYTES_MAX),
        };
        let (value, used) = result.map_err(|e| Error::Decode {
            what,
            source: Box::new(e),
        })?;
        if used != bytes.len() {
            return Err(Error::Decode {
                what,
                source: "trailing bytes after the encoded value".into(),
            });
        }
        Ok(value)
    }};
}
use decode_with;

/// A borrowed byte string that serializes as one (`serialize_bytes`): the
/// same bytes bincode writes for a `Vec<u8>` (a length, then the bytes), but
/// copied in one piece instead of one `u8` at a time.
pub(crate) struct BytesRef<'a>(pub(crate) &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An owned byte string that deserializes from the encoding of
/// [`BytesRef`] (or of a `Vec<u8>`, which is the same) in one piece.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ByteBuf, A::Error> {
                // Never trust a size hint from the input.
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_encode_exactly_as_byte_vectors() {
        // Lengths around bincode's variable-length integer steps.
        for len in [0usize, 1, 250, 251, 252, 65535, 65536, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let as_vec = encode(&v, "vec").unwrap();
            let as_bytes = encode(&BytesRef(&v), "bytes").unwrap();
            assert_eq!(as_vec, as_bytes, "len {len}");
            let back: ByteBuf = decode(&as_vec, "bytes").unwrap();
            assert_eq!(back.0, v, "len {len}");
        }
    }

    #[test]
    fn a_byte_string_longer_than_its_input_is_refused() {
        // A length of 2^40 in a few bytes must not allocate.
        let mut lying = encode(&BytesRef(&[1, 2, 3]), "bytes").unwrap();
        lying[0] = 253; // u64 length follows
        lying.truncate(1);
        lying.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<ByteBuf>(&lying, "bytes").is_err());
    }
}
