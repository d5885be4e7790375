#!/usr/bin/env bash
# Cross-checks the GeoIP code against MaxMind's own test databases, when they are available:
#   scripts/crosscheck-geoip.sh ../shared/testdata/geoip
# The known IPs must reach the expected regions, and broken, wrong-type and missing databases must stop
# `serve` at start-up with exactly one line on standard error and exit code 2. The project's own tests
# never need these files (they build their own database from testdata/geoip/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: crosscheck-geoip.sh DIR_WITH_MAXMIND_TEST_DBS}
bin=target/debug/dps-allocator
[ -x "$bin" ] || cargo build --locked --quiet

for db in GeoIP2-City-Test.mmdb GeoLite2-City-Test.mmdb; do
  echo "-- known IPs with $db"
  "$bin" test tests/crosscheck/maxmind --geoip "$dir/$db"
done

refuse() { # name, path: serve must exit 2 with one line
  local err rc lines
  err=$(mktemp)
  set +e
  timeout 20 "$bin" serve --listen 127.0.0.1:0 --policies policies --geoip "$2" >/dev/null 2>"$err"
  rc=$?
  set -e
  lines=$(wc -l <"$err")
  if [ "$rc" != 2 ] || [ "$lines" != 1 ]; then
    echo "FAIL $1: exit $rc, $lines line(s) on stderr:"; cat "$err"; rm -f "$err"; return 1
  fi
  echo "ok   $1 refused: $(cat "$err")"
  rm -f "$err"
}
echo "-- databases that must be refused at start-up"
refuse "broken double format" "$dir/GeoIP2-City-Test-Broken-Double-Format.mmdb"
refuse "invalid node count" "$dir/GeoIP2-City-Test-Invalid-Node-Count.mmdb"
refuse "country database (wrong type)" "$dir/GeoIP2-Country-Test.mmdb"
refuse "missing file" "$dir/does-not-exist.mmdb"
echo "GeoIP cross-check passed"
