#!/usr/bin/env bash
# Fuzzes the request parser + decision engine (target `allocate`), the policy compiler (target `policy`)
# and extreme glob/regex conditions (target `patterns`) with cargo-fuzz (libFuzzer), each for a bounded time:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 seconds, all three targets)
# Seeds come from the fixtures (every request in policies/tests and tests/fixtures, the bad-input corpus,
# the shipped and fixture policies) and are written into fuzz/corpus/ (not committed; libFuzzer adds what
# it finds there). Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz, which it
# installs from crates.io when missing. A crash stops the run and leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(allocate policy patterns)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
python3 scripts/fuzz_seeds.py fuzz/corpus
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  log=target/fuzz-$t.log
  mkdir -p target
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || { tail -40 "$log"; echo "fuzz target $t failed: see $log and fuzz/artifacts/$t/"; exit 1; }
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)|^#[0-9]+ +DONE" "$log" || true
  echo "corpus: $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
done
