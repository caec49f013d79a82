//! Streaming-context helpers.

use streamwal::recovery::StreamingContext;
use streamwal::tracker::BlockInfo;

/// Store `bytes` as a block of `stream` in the receiver log and track it,
/// as a receiver does before it acknowledges its source.
pub fn add<G>(ctx: &StreamingContext<G>, stream: u32, bytes: &[u8], t: u64) -> BlockInfo {
    ctx.store_block(stream, bytes, 1, t).unwrap()
}
