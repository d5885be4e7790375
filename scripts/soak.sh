#!/usr/bin/env bash
# Soak under policy churn: load on loopback while the policy directory is rewritten every second,
# alternating valid and invalid revisions (see scripts/soak.py for every check).
#   scripts/soak.sh [SECONDS] [BINARY] [--doc docs/reliability.md]
# Default: 600 seconds against a release build (built here when missing). .ci/run runs 30 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
bin=${2:-target/release/dps-allocator}
shift $(( $# > 2 ? 2 : $# ))
if [ "$bin" = target/release/dps-allocator ]; then
  cargo build --locked --release --quiet
fi
exec python3 scripts/soak.py --seconds "$seconds" --bin "$bin" "$@"
