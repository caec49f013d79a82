//! The seam between the public [`super::Wal`] and where its records live:
//! a directory of segment files (`writer`'s `FileWal`) or, with the
//! `object-store` feature, a chain of objects (implemented with the other
//! object-storage code). The log owns this trait; a backend implements it.

use super::iter::WalIter;
use super::options::{RecordHandle, RecoveryReport, SyncPolicy, WalStats};
use crate::error::Result;
use std::fmt;

/// The payloads of one `append_batch`, passed without copying them or
/// allocating (the append path allocates nothing per record).
#[derive(Clone, Copy)]
pub(crate) struct Payloads<'a> {
    len: usize,
    at: &'a (dyn Fn(usize) -> &'a [u8] + 'a),
}

impl<'a> Payloads<'a> {
    /// `len` payloads, the `i`th one `at(i)`.
    pub(crate) fn new(len: usize, at: &'a (dyn Fn(usize) -> &'a [u8] + 'a)) -> Self {
        Payloads { len, at }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> IntoIterator for Payloads<'a> {
    type Item = &'a [u8];
    type IntoIter = PayloadIter<'a>;

    fn into_iter(self) -> PayloadIter<'a> {
        PayloadIter { p: self, i: 0 }
    }
}

/// The payloads in order.
pub(crate) struct PayloadIter<'a> {
    p: Payloads<'a>,
    i: usize,
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        (self.i < self.p.len).then(|| {
            self.i += 1;
            (self.p.at)(self.i - 1)
        })
    }
}

/// What a log backend does; [`super::Wal`] forwards each public call here
/// and documents it.
pub(crate) trait LogBackend: Send + Sync + fmt::Debug {
    fn append_at(&self, payload: &[u8], time: u64) -> Result<RecordHandle>;
    fn append_batch_at(&self, payloads: Payloads<'_>, time: u64) -> Result<Vec<RecordHandle>>;
    fn sync(&self) -> Result<()>;
    fn close(self: Box<Self>) -> Result<()>;
    fn read(&self, handle: &RecordHandle) -> Result<Vec<u8>>;
    fn iter(&self) -> WalIter;
    fn iter_from(&self, lsn: u64) -> WalIter;
    fn purge_before_lsn(&self, lsn: u64) -> Result<usize>;
    fn purge_before_time(&self, time: u64) -> Result<usize>;
    fn first_lsn(&self) -> Option<u64>;
    fn last_lsn(&self) -> Option<u64>;
    fn next_lsn(&self) -> u64;
    fn recovery_report(&self) -> &RecoveryReport;
    fn stats(&self) -> WalStats;
    fn sync_policy(&self) -> SyncPolicy;
    fn is_poisoned(&self) -> bool;
}

/// Implement [`LogBackend`] for a type with inherent methods of the same
/// names (both backends have them): the trait only forwards.
macro_rules! forward_log_backend {
    ($t:ty) => {
        impl $crate::wal::backend::LogBackend for $t {
            fn append_at(&self, payload: &[u8], time: u64) -> $crate::Result<$crate::RecordHandle> {
                <$t>::append_at(self, payload, time)
            }
            fn append_batch_at(
                &self,
                payloads: $crate::wal::backend::Payloads<'_>,
                time: u64,
            ) -> $crate::Result<Vec<$crate::RecordHandle>> {
                <$t>::append_batch_at(self, payloads, time)
            }
            fn sync(&self) -> $crate::Result<()> {
                <$t>::sync(self)
            }
            fn close(self: Box<Self>) -> $crate::Result<()> {
                <$t>::close(*self)
            }
            fn read(&self, handle: &$crate::RecordHandle) -> $crate::Result<Vec<u8>> {
                <$t>::read(self, handle)
            }
            fn iter(&self) -> $crate::WalIter {
                <$t>::iter(self)
            }
            fn iter_from(&self, lsn: u64) -> $crate::WalIter {
                <$t>::iter_from(self, lsn)
            }
            fn purge_before_lsn(&self, lsn: u64) -> $crate::Result<usize> {
                <$t>::purge_before_lsn(self, lsn)
            }
            fn purge_before_time(&self, time: u64) -> $crate::Result<usize> {
                <$t>::purge_before_time(self, time)
            }
            fn first_lsn(&self) -> Option<u64> {
                <$t>::first_lsn(self)
            }
            fn last_lsn(&self) -> Option<u64> {
                <$t>::last_lsn(self)
            }
            fn next_lsn(&self) -> u64 {
                <$t>::next_lsn(self)
            }
            fn recovery_report(&self) -> &$crate::RecoveryReport {
                <$t>::recovery_report(self)
            }
            fn stats(&self) -> $crate::WalStats {
                <$t>::stats(self)
            }
            fn sync_policy(&self) -> $crate::SyncPolicy {
                <$t>::sync_policy(self)
            }
            fn is_poisoned(&self) -> bool {
                <$t>::is_poisoned(self)
            }
        }
    };
}
pub(crate) use forward_log_backend;
