//! Arbitrary bytes through the pure segment-header and frame codec.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::decode(data));
