//! Helpers shared by the benches (each bench uses some of them).
#![allow(dead_code)]

use tempfile::TempDir;

/// Where benches put their logs: `$STREAMWAL_BENCH_DIR` if set, else
/// Cargo's temporary directory under `target/` (on the project's disk;
/// the system temporary directory is tmpfs on many machines). Durable
/// figures mean something only on a real disk: on tmpfs `fdatasync` is free.
pub fn bench_root() -> std::path::PathBuf {
    let dir = std::env::var_os("STREAMWAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    dir
}

/// A fresh temporary directory under [`bench_root`].
pub fn bench_dir() -> TempDir {
    tempfile::tempdir_in(bench_root()).expect("tempdir")
}

/// True when criterion runs in test mode (`cargo test --benches`): benches
/// then shrink their setup so the test suite stays fast.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// xorshift64: a cheap, deterministic stream of pseudo-random numbers.
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the stream.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A payload of `len` bytes that does not compress to nothing.
pub fn payload(len: usize) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Write zeros over the first `bytes` of `file` and `fsync` it: every block
/// allocated and written, the cheapest case for later `fdatasync`s.
pub fn zero_fill(file: &std::fs::File, bytes: u64) {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < bytes {
        file.write_all_at(&zeros, off).expect("zero-fill");
        off += zeros.len() as u64;
    }
    file.sync_all().expect("sync");
}
