//! dps-allocator: a custom allocation webhook for the Azure IoT Hub Device Provisioning Service.
//!
//! The crate is laid out by concern: [`dps`] holds the wire types, [`policy`] loads and compiles a policy
//! directory into an immutable revision, [`engine`] decides one request against a revision (a pure
//! function), [`http`] serves it with actix-web, [`fixtures`] runs policy test cases, and [`cli`] is the
//! command line. [`hashing`] and [`regions`] are the pinned hash and the built-in Azure region table.

pub mod cache;
pub mod cli;
pub mod dps;
pub mod engine;
pub mod fixtures;
pub mod geo;
pub mod hashing;
pub mod http;
pub mod policy;
pub mod regions;
pub mod reload;
pub mod service;
pub mod simulate;
pub mod telemetry;
