//! Arbitrary bytes as a state delta, a state snapshot file, and a state log.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::state(data));
