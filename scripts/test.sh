#!/usr/bin/env bash
# The project's test command (README "Run the tests"). Installs what the tests need, then runs them all:
# unit tests, property tests, the integration binary (fixtures through HTTP, bad input, smoke test of the
# real binary), and the shipped policy's fixtures through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-tools.sh
export DPS_ALLOCATOR_REQUIRE_TOOLS=1
cargo build --locked --quiet
cargo test --locked --all-targets
./target/debug/dps-allocator check policies
./target/debug/dps-allocator test policies
