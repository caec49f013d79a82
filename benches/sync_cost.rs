//! What one `pwrite` + `fdatasync` per record costs, by how the record's
//! blocks are laid out: already written (a zero-filled file), allocated but
//! never written (`fallocate`), or past the end of the file. The evidence
//! behind how streamwal preallocates segments (docs/PERFORMANCE.md).
//!
//! ```text
//! cargo bench --bench sync_cost
//! ```
//!
//! Each point runs 2 s (`STREAMWAL_COMPARE_SECS` overrides) on a fresh
//! 1 GiB file under `STREAMWAL_BENCH_DIR` (default: Cargo's target tmp
//! directory). Linux only (`fallocate`).

mod common;
use common::{bench_dir, payload, test_mode, zero_fill};

#[cfg(target_os = "linux")]
fn main() {
    use std::os::unix::fs::FileExt;
    use std::time::{Duration, Instant};

    let secs = std::env::var("STREAMWAL_COMPARE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(if test_mode() { 0.02 } else { 2.0 });
    let file_bytes: u64 = if test_mode() { 8 << 20 } else { 1 << 30 };
    let dir = bench_dir();
    println!("| record | blocks | records/s | MB/s |");
    println!("|---|---|---:|---:|");
    for record in [4usize << 10, 1 << 20] {
        for layout in [
            "written (zero-filled)",
            "allocated (fallocate)",
            "past the end",
        ] {
            let path = dir.path().join("sync_cost.dat");
            let _ = std::fs::remove_file(&path);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .expect("create");
            match layout {
                "written (zero-filled)" => zero_fill(&file, file_bytes),
                "allocated (fallocate)" => {
                    rustix::fs::fallocate(
                        &file,
                        rustix::fs::FallocateFlags::empty(),
                        0,
                        file_bytes,
                    )
                    .expect("fallocate");
                    file.sync_all().expect("sync");
                }
                _ => {}
            }
            let data = payload(record);
            let deadline = Duration::from_secs_f64(secs);
            let start = Instant::now();
            let mut off = 0u64;
            while off + record as u64 <= file_bytes && start.elapsed() < deadline {
                file.write_all_at(&data, off).expect("write");
                file.sync_data().expect("fdatasync");
                off += record as u64;
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "| {} KiB | {layout} | {:.0} | {:.0} |",
                record >> 10,
                (off / record as u64) as f64 / elapsed,
                off as f64 / elapsed / 1e6
            );
            drop(file);
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("sync_cost: Linux only (fallocate)");
}
