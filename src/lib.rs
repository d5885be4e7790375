//! dps-allocator: a custom allocation webhook for the Azure IoT Hub Device Provisioning Service.
//!
//! The modules are layers, listed here bottom to top; each imports only from the layers below it
//! (`tests/layers.rs` keeps it so, and `docs/architecture.md` says what lives where):
//!
//! - [`dps`]: the wire types (AllocationRequest, AllocationResponse);
//! - [`hashing`]: the pinned hash behind rendezvous, rebalance waves and revision ids;
//! - [`geo`]: Azure regions, GeoIP databases, points and distances;
//! - [`policy`]: the policy model, loader and compiler (a directory into an immutable revision);
//! - [`engine`]: one decision, a pure function of a request and a revision, step by step;
//! - [`answer`]: request bytes to response bytes, error codes and the decision summary, without HTTP;
//! - [`fixtures`]: policy test cases (`dps-allocator test`);
//! - [`simulate`]: a fleet through a policy change;
//! - [`plan`]: a move list into waves under DPS and IoT Hub limits;
//! - [`rollout`]: the rules of triggering the planned moves and verifying them (the transport is the caller's);
//! - [`telemetry`]: log set-up, metrics and typed events;
//! - [`server`]: the running service without HTTP (state, decision cache, hot reload, keys);
//! - [`http`]: actix-web routes, handlers, the Functions envelope, status and metrics endpoints;
//! - [`cli`]: the command line; `main` only parses and dispatches.

pub mod answer;
pub mod cli;
pub mod dps;
pub mod engine;
pub mod fixtures;
pub mod geo;
pub mod hashing;
pub mod http;
pub mod plan;
pub mod policy;
pub mod rollout;
pub mod server;
pub mod simulate;
pub mod telemetry;
