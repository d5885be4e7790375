#!/usr/bin/env bash
# The benchmark suite: installs what it needs (wrk and valgrind from Debian, oha from crates.io), then
# runs scripts/bench.py, which measures dps-allocator side by side with a minimal actix-web floor and
# writes docs/benchmarks.md. About 6 minutes on 2 cores after the release build (BENCH_QUICK=1: shorter
# runs to try it out; BENCH_DOC_ONLY=1: rewrite the page from the last run's target/bench/results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v oha >/dev/null 2>&1 || cargo install oha --locked --version 1.16.0
[ "$(nproc)" -ge 2 ] || echo "warning: one CPU: server and load generator will share it" >&2
exec python3 scripts/bench.py
