//! Arbitrary operations on the WAL over the crash simulator, crashed and recovered, against a model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::sim::differential::wal_differential_target(data));
