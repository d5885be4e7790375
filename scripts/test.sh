#!/usr/bin/env bash
# The project's test command (README "Run the tests"). Installs what the tests need, then runs them all:
# unit tests, property tests, the integration binary (fixtures through HTTP, bad input, smoke test of the
# real binary), and the shipped policy's fixtures through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

# With every tool installed, a test whose tool is missing fails; off Debian (exit 3: some could not be
# installed here) those tests are skipped and say so.
tools=0
scripts/ensure-tools.sh || tools=$?
case $tools in
  0) export DPS_ALLOCATOR_REQUIRE_TOOLS=1 ;;
  3) echo "some tools are missing: the tests that need them are skipped" >&2 ;;
  *) exit "$tools" ;;
esac
cargo build --locked --quiet
cargo test --locked --all-targets
./target/debug/dps-allocator check policies
./target/debug/dps-allocator test policies
