//! What recovery does with the batch intervals that fell while the driver
//! was down: [`DowntimePolicy`].

use crate::error::{Error, Result};
use crate::limits::DOWNTIME_BATCHES_MAX;

/// What recovery does with the batch intervals that fell while the driver
/// was down (from the newest batch time it knew up to the clock): set with
/// [`crate::ContextBuilder::downtime_policy`]. Missed intervals received no
/// batch of their own; blocks acknowledged meanwhile are never lost either
/// way (the first batch allocated after the newest allocated one takes
/// every unallocated block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DowntimePolicy {
    /// One batch, at the last missed interval, stands for all of them
    /// ([`crate::recovery::RunReason::Downtime`]): a driver down for a day
    /// at 500 ms batches runs one batch, not 172,795, and one down for a
    /// week does not fail. The default.
    #[default]
    Coalesce,
    /// One batch per missed interval, as Spark's `JobGenerator.restart`
    /// does, for an engine whose output is per interval. At most
    /// [`DOWNTIME_BATCHES_MAX`]; a longer downtime is
    /// [`Error::DowntimeTooLong`].
    RunEach,
}

/// The times of the batches that stand for the intervals after `last` up
/// to `now_ms`, in time order, under `policy`.
///
/// # Errors
/// [`Error::DowntimeTooLong`] under [`DowntimePolicy::RunEach`] past
/// [`DOWNTIME_BATCHES_MAX`] intervals.
pub(crate) fn missed_batches(
    policy: DowntimePolicy,
    last: u64,
    interval: u64,
    now_ms: u64,
) -> Result<Vec<u64>> {
    if interval == 0 || now_ms <= last {
        return Ok(Vec::new());
    }
    let count = (now_ms - last) / interval;
    if count == 0 {
        return Ok(Vec::new());
    }
    match policy {
        // No overflow: last + count * interval <= now_ms.
        DowntimePolicy::Coalesce => Ok(vec![last + count * interval]),
        DowntimePolicy::RunEach if count > DOWNTIME_BATCHES_MAX => Err(Error::DowntimeTooLong {
            intervals: count,
            max: DOWNTIME_BATCHES_MAX,
        }),
        DowntimePolicy::RunEach => Ok((1..=count).map(|k| last + k * interval).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_is_one_batch_at_the_last_missed_interval() {
        let day_ms = 86_400_000;
        let got = missed_batches(DowntimePolicy::Coalesce, 5_000, 500, 5_000 + day_ms + 499);
        assert_eq!(got.unwrap(), vec![5_000 + day_ms]);
        assert!(
            missed_batches(DowntimePolicy::Coalesce, 5_000, 500, 5_499)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn run_each_is_bounded() {
        let got = missed_batches(DowntimePolicy::RunEach, 1_000, 1_000, 4_500).unwrap();
        assert_eq!(got, vec![2_000, 3_000, 4_000]);
        let max = DOWNTIME_BATCHES_MAX;
        assert_eq!(
            missed_batches(DowntimePolicy::RunEach, 0, 1, max)
                .unwrap()
                .len() as u64,
            max
        );
        match missed_batches(DowntimePolicy::RunEach, 0, 1, max + 1) {
            Err(Error::DowntimeTooLong { intervals, max: m }) => {
                assert_eq!((intervals, m), (max + 1, max));
            }
            other => panic!("expected DowntimeTooLong, got {other:?}"),
        }
    }
}
