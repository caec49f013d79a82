//! Arbitrary bytes as a log directory: open strict and salvage, read everything.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::open_log(data));
