//! The integration test binary: the HTTP layer in-process (fixtures, bad input, determinism) and one
//! smoke test of the real binary.

// This whole binary is test code: failing loudly is its job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod bad_input;
mod corpus;
mod deploy;
mod determinism;
mod fixtures;
mod functions;
mod hardening;
mod helpers;
mod hostile;
mod live;
mod operations;
mod operator;
mod plan;
mod properties;
mod readme;
mod reload;
mod residency;
mod rollout;
mod shutdown;
mod simulate;
mod smoke;
mod standin;
mod tutorial;
