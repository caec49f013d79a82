//! Arbitrary bytes as a tracker journal directory, replayed.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::journal(data));
