#!/usr/bin/env bash
# Property-based API testing against the service's own OpenAPI document (schemathesis, from PyPI):
# every check (server errors, status codes, content types, response schemas, schema-valid requests
# accepted, schema-violating requests refused, undeclared methods answered 405), three seeds.
#   scripts/schemathesis.sh [BINARY] [--doc docs/security.md]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/dps-allocator}
version=4.32.5
source scripts/pytools.sh
pytools_install "schemathesis==$version"
[ -x "$bin" ] || cargo build --locked --quiet
log=$(mktemp)
out=$(mktemp)
"$bin" serve --listen 127.0.0.1:0 --policies policies >"$out" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log" "$out"' EXIT
for _ in $(seq 100); do grep -q '"message":"listening"' "$out" && break; sleep 0.1; done
url="http://$(grep '"message":"listening"' "$out" | sed -E 's/.*"addr":"([^"]+)".*/\1/')"
total=0
for seed in 1 2 3; do
  report=$(NO_COLOR=1 schemathesis run "$url/openapi.json" --checks all --max-examples 200 --seed "$seed" 2>&1) || {
    echo "$report" | tail -60; echo "schemathesis found failures (seed $seed)"; exit 1; }
  line=$(echo "$report" | grep -E "^\s+[0-9]+ generated" | tr -s ' ')
  echo "seed $seed:$line"
  total=$((total + $(echo "$line" | grep -oE "[0-9]+ generated" | grep -oE "[0-9]+")))
done
version_line=$(schemathesis --version)
echo "schemathesis: $total test cases, no failures"
if [ "${2:-}" = "--doc" ] && [ -n "${3:-}" ]; then
  python3 - "$3" "$total" "$version_line" <<'PY'
import re, sys, time
path, total, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
block = (f"<!-- schemathesis:begin -->\n{version}, `scripts/schemathesis.sh` on {time.strftime('%Y-%m-%d')}: "
         f"every check (`--checks all`: no server errors, documented status codes, content types and response "
         f"schemas, schema-valid requests accepted, schema-violating requests refused, undeclared methods "
         f"answered 405), 200 examples per operation and phase, seeds 1 to 3: **{total:,} test cases, no "
         f"failures**, against the shipped policy.\n<!-- schemathesis:end -->")
text = open(path).read()
text = re.sub(r"<!-- schemathesis:begin -->.*?<!-- schemathesis:end -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
fi
