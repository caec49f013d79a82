//! Arbitrary bytes as a checkpoint file and as a journal event.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::checkpoint(data));
