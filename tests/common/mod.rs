//! Helpers shared by integration tests (each test crate uses a part).
#![allow(dead_code)]

#[cfg(feature = "object-store")]
pub mod objects;

pub mod context;
