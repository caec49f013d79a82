//! Arbitrary bytes as the objects of a log on object storage: open read-only
//! and as a writer, read everything, append, reopen.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| streamwal::fuzzing::open_object_log(data));
