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
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Decode a `T` that must fill `bytes` exactly. `what` names it in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    if bytes.len() > DECODE_BYTES_MAX {
        return Err(Error::TooLarge {
            size: bytes.len() as u64,
            max: DECODE_BYTES_MAX as u64,
        });
    }
    // bincode's limit is a type parameter: pick the smallest tier that is at
    // least 64 times the input, so a lying length in a few bytes cannot claim
    // a gigabyte.
    macro_rules! decode_limited {
        ($limit:expr) => {
            bincode::serde::decode_from_slice(
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
}
