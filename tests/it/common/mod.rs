//! Helpers shared by the integration tests (and, through `#[path]`, by the
//! command-line tool's tests).
#![allow(dead_code)]

#[cfg(feature = "object-store")]
pub mod objects;

pub mod context;
pub mod forwarding;
pub mod log_model;
pub mod rng;

/// The name libtest knows a test by in this binary (`module::test`), from
/// the caller's `module_path!()`: for re-running the binary with `--exact`
/// as a child process.
pub fn test_name(module_path: &str, test: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{test}"),
        None => test.to_string(),
    }
}
