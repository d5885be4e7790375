//! The integration test binary: the HTTP layer in-process (fixtures, bad input, determinism) and one
//! smoke test of the real binary.

mod bad_input;
mod fixtures;
mod helpers;
mod smoke;
mod tutorial;
