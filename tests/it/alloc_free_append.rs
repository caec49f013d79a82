//! The append path allocates nothing per record beyond what the caller
//! passes in: a counting global allocator counts this thread's allocations
//! while it appends (it is the group-commit leader of every batch, since it
//! appends alone), after a warm-up that grows the reusable batch buffers.
// A global allocator is an `unsafe impl`; it only counts and forwards to
// the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use streamwal::{SyncPolicy, Wal, WalOptions};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only a thread-local `Cell` (const-initialized,
// no destructor, so it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: usize = 200;
const MEASURED: usize = 3_000;

/// Allocations this thread made while appending `MEASURED` records of
/// `len` bytes, after `WARM_UP` records.
fn allocations_per_run(policy: SyncPolicy, len: usize) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        tmp.path().join("wal"),
        WalOptions {
            sync_policy: policy,
            ..WalOptions::default()
        },
    )
    .unwrap();
    let payload = vec![0x5au8; len];
    for _ in 0..WARM_UP {
        wal.append(&payload).unwrap();
    }
    let before = allocations();
    for _ in 0..MEASURED {
        std::hint::black_box(wal.append(&payload).unwrap());
    }
    let made = allocations() - before;
    // The run stayed in one segment: rollover (which names and opens a new
    // file) is not part of the per-record path.
    assert_eq!(wal.stats().segments_created, 1);
    made
}

#[test]
fn durable_appends_allocate_nothing_per_record() {
    for len in [0, 100, 4096] {
        assert_eq!(allocations_per_run(SyncPolicy::Always, len), 0, "{len} B");
    }
}

#[test]
fn unsynced_appends_allocate_nothing_per_record() {
    assert_eq!(allocations_per_run(SyncPolicy::Never, 4096), 0);
}

#[test]
fn a_batch_allocates_only_its_handle_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path().join("wal"), WalOptions::default()).unwrap();
    let payloads = vec![vec![1u8; 512]; 32];
    for _ in 0..20 {
        wal.append_batch(&payloads).unwrap();
    }
    let before = allocations();
    let calls = 200;
    for _ in 0..calls {
        std::hint::black_box(wal.append_batch(&payloads).unwrap());
    }
    assert_eq!(allocations() - before, calls);
}
