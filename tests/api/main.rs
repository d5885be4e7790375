//! The integration test binary: the HTTP layer in-process (fixtures, bad input, determinism) and one

// This whole binary is test code: failing loudly is its job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! smoke test of the real binary.

mod bad_input;
mod fixtures;
mod helpers;
mod smoke;
mod tutorial;
