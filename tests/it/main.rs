//! The integration tests, linked as one binary (one link instead of one
//! per file). Each module is one former test file; `common` holds what they
//! share. Run one module with `cargo test --all-features --test it -- NAME::`.

mod common;

mod alloc_free_append;
mod bitflip;
mod checkpoint;
mod concurrency;
mod dir_sync;
mod downtime;
mod durable_stamp;
mod examples;
mod failed_fsync;
mod fuzz_seeds;
mod golden;
mod hostile;
mod kill;
mod lifecycle;
mod model;
mod object_checkpoint;
mod object_faults;
mod object_log;
mod object_recovery;
mod outside_testing;
/// The PostgreSQL server and sink of the `pg_` tests.
mod pg;
mod pg_sink;
mod prepare_ahead;
mod recovery;
mod recovery_crash;
mod retention;
mod sim_checkpoint;
mod sim_sink;
mod sim_state;
mod sim_tracker;
mod sim_wal;
mod sink;
mod smoke;
mod sources;
mod state;
mod state_crash;
mod torn_tail;
mod tracker;
mod tracker_model;
mod upgrade;
